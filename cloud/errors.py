"""Errors of the cloud side, one shallow tree under :class:`CloudError`.

::

    CloudError
    ├── ParamsError        the params file is unreadable, or a key, type or value in it is not accepted
    ├── DataError          input data unreadable or malformed (encoding, missing column, missing split)
    ├── ValidationFailed   the Great Expectations suite failed; carries the report
    ├── GateFailed         the model did not pass the F1 / INT8-drop gate
    ├── RegistryError      unknown model package, illegal approval transition
    ├── CompileError       export, quantization or the INT8/FP32 agreement check failed
    └── AwsError           (cloud.aws.errors) missing SDK, a failed AWS call, Neo failure, a blocked deployment
"""

from __future__ import annotations

__all__ = ["CloudError", "ParamsError", "DataError", "ValidationFailed", "GateFailed", "RegistryError", "CompileError"]


class CloudError(Exception):
    """Base class of the errors the pipeline raises on purpose (each becomes a clear message, exit 1)."""


class ParamsError(CloudError):
    """The params file cannot be read, or a key, type or value in it is not accepted (named in the message)."""


class DataError(CloudError):
    """Input data cannot be read: wrong encoding, missing column or split, empty file."""


class ValidationFailed(CloudError):
    """Data validation failed. ``report`` is the short human-readable summary."""

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report


class GateFailed(CloudError):
    """The evaluated model does not meet the quality gate; nothing is registered."""


class RegistryError(CloudError):
    """A registry operation is not possible (unknown group/version, illegal transition)."""


class CompileError(CloudError):
    """ONNX export, INT8 quantization or the INT8-vs-FP32 agreement check failed."""
