"""Inference backends: one small protocol, one module per implementation, chosen by name.

``auto`` takes the Neo/DLR artifact when the bundle has one and the DLR library loads, otherwise
ONNX Runtime; the reason for a fallback is logged once.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import BackendUnavailableError, BundleError

if TYPE_CHECKING:
    from ..bundle import Bundle

__all__ = ["Backend", "BackendName", "load_backend"]

log = logging.getLogger(__name__)
_warned: set[str] = set()


class BackendName(str, enum.Enum):
    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    DLR = "dlr"
    FAKE = "fake"

    @classmethod
    def parse(cls, value: "str | BackendName") -> "BackendName":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown backend {value!r}; choose one of {[b.value for b in cls]}") from None


@runtime_checkable
class Backend(Protocol):
    """Runs the model: int64 feeds in, float logits ``[batch, num_labels]`` out; ``run`` may be called from several
    threads at once."""

    name: str
    input_names: tuple[str, ...]

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def close(self) -> None: ...


def load_backend(
    bundle: "Bundle",
    name: "str | BackendName" = BackendName.AUTO,
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    callers: int = 1,
) -> Backend:
    """Load the bundle's model with the named backend (``auto``, ``onnxruntime``, ``dlr``, ``fake``).

    ``callers``: how many threads will run the model at the same time (the service's workers); every backend is
    safe to call concurrently, and onnxruntime tunes its thread pool for it."""
    choice = BackendName.parse(name)
    if choice is BackendName.AUTO:
        if bundle.backend_entry("dlr") is not None:
            try:
                return _load(bundle, BackendName.DLR, threads, providers, callers)
            except BackendUnavailableError as exc:
                _warn_once(f"DLR artifact present but not usable here, using onnxruntime instead: {exc}")
        choice = BackendName.ONNXRUNTIME
    return _load(bundle, choice, threads, providers, callers)


def _load(bundle: "Bundle", choice: BackendName, threads: int | None, providers: Sequence[str] | None,
          callers: int) -> Backend:
    entry = bundle.backend_entry(choice.value)
    if entry is None:
        raise BackendUnavailableError(
            f"bundle {bundle.root} has no {choice.value!r} model (it has {sorted(bundle.manifest.backends)})"
        )
    if choice is BackendName.ONNXRUNTIME:
        from ..oos import graph_output
        from .onnxruntime import OnnxRuntimeBackend

        # the output with the out-of-scope score when the bundle's model computes it (else the first output)
        return OnnxRuntimeBackend(bundle.path_of(_require(entry, "file", bundle)), threads=threads, providers=providers,
                                  callers=callers, output=graph_output(bundle, choice.value))
    if choice is BackendName.DLR:
        from .dlr import DlrBackend

        return DlrBackend(bundle.path_of(_require(entry, "dir", bundle)), threads=threads,
                          input_shapes=entry.get("input_shapes") or None)
    from .fake import FakeBackend

    return FakeBackend(num_labels=len(bundle.manifest.labels), seed=int(entry.get("seed", 0)))


def _require(entry: Mapping[str, object], key: str, bundle: "Bundle") -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise BundleError(f"bundle {bundle.root}: backend entry {dict(entry)} needs a {key!r} string")
    return value


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
