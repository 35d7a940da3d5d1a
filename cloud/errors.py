"""Errors of the cloud side, one shallow tree under :class:`CloudError`.

::

    CloudError
    ├── ParamsError        the params file is unreadable, or a key, type or value in it is not accepted
    ├── DataError          input data unreadable or malformed (encoding, missing column, missing split)
    ├── ValidationFailed   the Great Expectations suite failed; carries the report
    ├── GateFailed         the model did not pass the F1 / INT8-drop gate
    ├── RegistryError      unknown model package, illegal approval transition
    │   └── RegistryCallFailed   a SageMaker Model Registry call failed (``code``: the AWS error code)
    ├── CompileError       export, quantization or the INT8/FP32 agreement check failed
    ├── GreengrassError    anything cloud.greengrass refuses
    │   ├── RecipeError          a recipe or component version Greengrass would refuse (cloud.greengrass.recipe)
    │   └── ComponentBuildError  a component cannot be built: registry version, bundle, templates, wheel, key
    ├── RolloutError       a rollout command cannot proceed (cloud.rollout: wrong state, missing data)
    └── AwsError           (cloud.aws.errors) missing SDK, a failed AWS call, Neo failure, a blocked deployment
        ├── DependencyMissing
        ├── AwsCallFailed
        ├── NeoCompileFailed
        └── DeploymentBlocked
"""

from __future__ import annotations

__all__ = ["CloudError", "ParamsError", "DataError", "ValidationFailed", "GateFailed", "RegistryError",
           "RegistryCallFailed", "CompileError", "GreengrassError", "RecipeError", "ComponentBuildError", "RolloutError"]


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


class RegistryCallFailed(RegistryError):
    """A call to a remote registry (SageMaker Model Registry) failed; ``operation`` and ``code`` say which and why."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"SageMaker {operation} failed: {code}: {message}")
        self.operation = operation
        self.code = code


class GreengrassError(CloudError):
    """Base class of what :mod:`cloud.greengrass` refuses."""


class RecipeError(GreengrassError):
    """A recipe or component version that Greengrass (or Nucleus Lite) would refuse; the message lists why."""


class ComponentBuildError(GreengrassError):
    """A component cannot be built: the registry version, its bundle, the templates, the wheel or the key is unusable."""


class RolloutError(CloudError):
    """A rollout command cannot proceed (wrong state, missing data, a deployment call failed)."""
