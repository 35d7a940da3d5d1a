"""DLR backend: runs a SageMaker Neo-compiled artifact with the ``dlr`` runtime.

Importing ``dlr`` 1.10 contacts a "phone home" endpoint (``dlr.counter.phone_home`` creates a client at
import time). The device must make no network call but to its broker, so a no-op stand-in for that
module is placed in ``sys.modules`` before ``dlr`` is imported; nothing is written to disk.
On the devices, Greengrass' ``variant.DLR`` installs the native library; the PyPI wheel has none, and
then :class:`~edge_runtime.errors.BackendUnavailableError` lets ``auto`` fall back to ONNX Runtime.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Mapping

import numpy as np

from ..errors import BackendError, BackendUnavailableError

__all__ = ["DlrBackend", "import_dlr_offline"]

_PHONE_HOME = "dlr.counter.phone_home"


def import_dlr_offline() -> types.ModuleType:
    """Import ``dlr`` with its phone-home client replaced by a no-op."""
    if _PHONE_HOME not in sys.modules:
        stub = types.ModuleType(_PHONE_HOME)
        stub.__doc__ = "edge_runtime: DLR phone-home disabled"

        class PhoneHome:  # the names dlr's own modules import from the real one
            @staticmethod
            def disable_feature() -> None: ...

            @staticmethod
            def is_enabled() -> bool:
                return False

        stub.PhoneHome = PhoneHome  # type: ignore[attr-defined]
        stub.MGR = None  # type: ignore[attr-defined]
        stub.call_phone_home = lambda func: func  # type: ignore[attr-defined]
        sys.modules[_PHONE_HOME] = stub
    try:
        import dlr
    except ImportError as exc:
        raise BackendUnavailableError(f"dlr is not installed (pip install 'slm-intents[dlr]'): {exc}") from None
    return dlr


class DlrBackend:
    name = "dlr"

    def __init__(self, model_dir: str | os.PathLike[str], *, threads: int | None = None) -> None:
        if not os.path.isdir(model_dir):
            raise BackendUnavailableError(f"no DLR artifact directory at {model_dir}")
        dlr = import_dlr_offline()
        if threads:
            os.environ.setdefault("TVM_NUM_THREADS", str(threads))
        try:
            self._model = dlr.DLRModel(os.fspath(model_dir), dev_type="cpu")
        except Exception as exc:  # DLRLibraryNotFound and friends share no public base class
            raise BackendUnavailableError(f"DLR cannot load {model_dir}: {type(exc).__name__}: {exc}") from None
        self.input_names = tuple(self._model.get_input_names())

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        if self._model is None:
            raise BackendError("backend is closed")
        try:
            return np.asarray(self._model.run(dict(feeds))[0], dtype=np.float32)
        except Exception as exc:
            raise BackendError(f"DLR inference failed: {exc}") from None

    def close(self) -> None:
        self._model = None
