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
import threading
import types
from typing import Mapping, Sequence

import numpy as np

from ..errors import BackendError, BackendUnavailableError

__all__ = ["DlrBackend", "import_dlr_offline"]

_PHONE_HOME = "dlr.counter.phone_home"


def _fit(row: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad (or cut) a ``[1, n]`` input to ``[1, length]``; zeros are [PAD] ids and masked positions."""
    out = np.zeros((1, length), dtype=row.dtype)
    n = min(row.shape[1], length)
    out[0, :n] = row[0, :n]
    return out


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
    """A Neo artifact. Neo compiles for fixed input shapes (``input_shapes`` in the bundle, e.g. ``[1, 40]``),
    so each text is padded to that length and run alone; padding is masked, so answers do not change.
    A DLR model holds its inputs and outputs between calls, so concurrent callers take turns."""

    name = "dlr"

    def __init__(self, model_dir: str | os.PathLike[str], *, threads: int | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        if not os.path.isdir(model_dir):
            raise BackendUnavailableError(f"no DLR artifact directory at {model_dir}")
        dlr = import_dlr_offline()
        if threads:
            os.environ.setdefault("TVM_NUM_THREADS", str(threads))
        try:
            # use_default_dlr: without it DLR loads a ``libdlr.so`` found in the model folder before its own, which
            # would let a file beside the artifact run native code (dlr/libpath.py: find_lib_path).
            self._model = dlr.DLRModel(os.fspath(model_dir), dev_type="cpu", use_default_dlr=True)
        except Exception as exc:  # DLRLibraryNotFound and friends share no public base class
            raise BackendUnavailableError(f"DLR cannot load {model_dir}: {type(exc).__name__}: {exc}") from None
        self.input_names = tuple(self._model.get_input_names())
        shapes = {tuple(v) for v in (input_shapes or {}).values()}
        self.fixed_length = int(next(iter(shapes))[1]) if len(shapes) == 1 else None
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        if self._model is None:
            raise BackendError("backend is closed")
        if self.fixed_length is not None:
            return np.concatenate([self._run_one({k: _fit(v[i:i + 1], self.fixed_length) for k, v in feeds.items()})
                                   for i in range(len(next(iter(feeds.values()))))])
        return self._run_one(feeds)

    def _run_one(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        try:
            with self._lock:
                return np.asarray(self._model.run(dict(feeds))[0], dtype=np.float32)
        except Exception as exc:
            raise BackendError(f"DLR inference failed: {exc}") from None

    def close(self) -> None:
        self._model = None
