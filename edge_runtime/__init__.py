"""edge_runtime: the on-device intent classifier (tokenizers + ONNX Runtime INT8, DLR when present).

Imports nothing heavy: no torch, transformers, boto3 or sagemaker, ever; onnxruntime and tokenizers
only when a classifier is loaded.
"""

from __future__ import annotations

import os as _os
import sys as _sys

# numpy's OpenBLAS starts a thread per core when numpy is imported, and that thread spins beside ONNX Runtime's pool
# on a small device. edge_runtime calls no BLAS routine on its path (the out-of-scope score is einsum or in-graph), so
# unless the process chose its BLAS threads, or imported numpy already, OpenBLAS gets one. A fresh process reached
# its first answer 5-12% sooner on two quiet cores and a third sooner beside a training job (docs/results.md,
# "Cold start and memory").
if "numpy" not in _sys.modules and not any(
        v in _os.environ for v in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")):
    _os.environ["OPENBLAS_NUM_THREADS"] = "1"

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
