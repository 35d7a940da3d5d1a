"""Errors of the AWS side, one shallow tree under :class:`cloud.errors.CloudError`.

::

    CloudError
    └── AwsError                 anything the AWS side raises on purpose
        ├── DependencyMissing    boto3 / sagemaker not installed (the message names the extra)
        ├── AwsCallFailed        an AWS API call failed (no credentials, access denied, throttled ...)
        ├── NeoCompileFailed     a SageMaker Neo compilation job failed or timed out (callers fall back)
        └── DeploymentBlocked    a Greengrass deployment was refused before it started (e.g. canary not healthy)

The registry backend raises :class:`cloud.errors.RegistryError`, like the local one.
"""

from __future__ import annotations

from ..errors import CloudError

__all__ = ["AwsError", "DependencyMissing", "AwsCallFailed", "NeoCompileFailed", "DeploymentBlocked"]


class AwsError(CloudError):
    """Base class of the errors the AWS code raises on purpose."""


class DependencyMissing(AwsError):
    """An optional AWS dependency is not installed; the message says which extra installs it."""


class AwsCallFailed(AwsError):
    """An AWS API call failed. ``operation`` and ``code`` (the AWS error code, if any) say which and why."""

    def __init__(self, message: str, *, operation: str = "", code: str = "") -> None:
        super().__init__(message)
        self.operation = operation
        self.code = code


class NeoCompileFailed(AwsError):
    """A SageMaker Neo compilation job did not produce an artifact (failed, stopped or timed out)."""


class DeploymentBlocked(AwsError):
    """A Greengrass deployment was not created because a precondition does not hold."""
