"""Errors raised by the edge runtime: one shallow tree under :class:`EdgeRuntimeError`.

::

    EdgeRuntimeError
    ├── BundleError                  the bundle on disk cannot be used
    │   ├── BundleNotFoundError      no directory or no manifest.json
    │   ├── ManifestError            manifest.json is not valid JSON or misses / mistypes a field
    │   ├── UnsupportedFormatError   format or format_version this runtime does not know
    │   ├── MissingFileError         a file the manifest lists is absent
    │   ├── IntegrityError           a file's sha256 differs from the manifest
    │   └── SignatureError           the manifest's Ed25519 signature is missing or wrong (a key is configured)
    ├── BackendError                 a backend cannot load or run the model
    │   └── BackendUnavailableError  the backend's library or artifact is not present here
    ├── InputError                   a request the classifier cannot take (wrong type, too many texts)
    └── SpoolError                   the telemetry spool cannot store (disk full, read-only, I/O error)
"""

from __future__ import annotations

__all__ = [
    "EdgeRuntimeError",
    "BundleError",
    "BundleNotFoundError",
    "ManifestError",
    "UnsupportedFormatError",
    "MissingFileError",
    "IntegrityError",
    "SignatureError",
    "BackendError",
    "BackendUnavailableError",
    "InputError",
    "SpoolError",
]


class EdgeRuntimeError(Exception):
    """Base class of every error the edge runtime raises on purpose."""


class BundleError(EdgeRuntimeError):
    """The edge bundle cannot be used."""


class BundleNotFoundError(BundleError):
    """The bundle directory or its manifest.json does not exist."""


class ManifestError(BundleError):
    """manifest.json is malformed: not JSON, or a field is missing or has the wrong type."""


class UnsupportedFormatError(BundleError):
    """The bundle's format or format_version is not one this runtime can read."""


class MissingFileError(BundleError):
    """A file listed in the manifest is not in the bundle."""


class IntegrityError(BundleError):
    """A file's sha256 does not match the manifest (corrupt, truncated or tampered)."""


class SignatureError(BundleError):
    """A public key is configured and the bundle's manifest is unsigned, or its signature does not verify."""


class BackendError(EdgeRuntimeError):
    """A backend failed to load or run the model."""


class BackendUnavailableError(BackendError):
    """The backend cannot be used on this machine (library missing, no artifact in the bundle)."""


class InputError(EdgeRuntimeError, ValueError):
    """The input cannot be classified (not a string, too many texts)."""


class SpoolError(EdgeRuntimeError):
    """The on-disk telemetry spool cannot store or read; ``condition`` is ``disk_full``, ``read_only`` or ``io_error``."""

    def __init__(self, message: str, condition: str = "io_error") -> None:
        super().__init__(message)
        self.condition = condition
