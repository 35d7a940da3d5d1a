"""edge_runtime: the on-device intent classifier (tokenizers + ONNX Runtime INT8, DLR when present).

Imports nothing heavy: no torch, transformers, boto3 or sagemaker, ever; onnxruntime and tokenizers
only when a classifier is loaded.
"""

from __future__ import annotations

from .backends import Backend, BackendName, load_backend
from .bundle import BUNDLE_FORMAT, FORMAT_VERSION, Bundle, Manifest, write_bundle, zip_bundle
from .classifier import IntentClassifier, Prediction
from .errors import (
    BackendError,
    BackendUnavailableError,
    BundleError,
    BundleNotFoundError,
    EdgeRuntimeError,
    InputError,
    IntegrityError,
    ManifestError,
    MissingFileError,
    SignatureError,
    SpoolError,
    UnsupportedFormatError,
)

__version__ = "0.1.0"

__all__ = [
    "BUNDLE_FORMAT",
    "FORMAT_VERSION",
    "Backend",
    "BackendError",
    "BackendName",
    "BackendUnavailableError",
    "Bundle",
    "BundleError",
    "BundleNotFoundError",
    "EdgeRuntimeError",
    "InputError",
    "IntegrityError",
    "IntentClassifier",
    "Manifest",
    "ManifestError",
    "MissingFileError",
    "Prediction",
    "SignatureError",
    "SpoolError",
    "UnsupportedFormatError",
    "load_backend",
    "write_bundle",
    "zip_bundle",
]
