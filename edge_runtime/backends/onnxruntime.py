"""ONNX Runtime backend: the default, runs the INT8 model on CPU (or CUDA / TensorRT where built in)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from ..errors import BackendError, BackendUnavailableError

__all__ = ["OnnxRuntimeBackend", "physical_cores", "SPIN_US", "SHARED_SPIN_US"]

#: How long an intra-op worker spins for the next operator before it sleeps, in microseconds, when one thread
#: calls the model. Measured on the 2-core CI machine, batch 1, interleaved in one process
#: (``python bench/spin_compare.py``): p50 1.22 ms with 50 us, the same as ONNX Runtime's default spin and
#: 20-1000 us, against 1.42 ms with 5 us and 1.7 ms without spinning. Workers stop spinning when a run ends
#: (``force_spinning_stop``), so an idle device burns nothing.
SPIN_US = 50
#: The spin when several threads call the model at once (the service's ``--workers`` > 1): a spinning pool thread
#: then takes a core from the other caller. Two callers on one 2-thread session, batch 6 (``bench/spin_compare.py``):
#: 942 texts/s with 5 us against 813 with 50 us, and 778 against 669 beside a process using 75% of a core.
SHARED_SPIN_US = 5


def physical_cores() -> int:
    """Physical cores (hyper-threads share one core's INT8 units, so they rarely help)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class OnnxRuntimeBackend:
    """An ``onnxruntime.InferenceSession`` tuned for a small device.

    - ``threads`` intra-op threads (default: physical cores), one inter-op thread;
    - all graph optimizations, no memory patterns (shapes vary per batch);
    - worker threads spin only while a run is in progress (``force_spinning_stop``), and only briefly
      (``spin_us``; by default :data:`SPIN_US`, or :data:`SHARED_SPIN_US` when ``callers`` > 1 threads run the
      session at once): fast op dispatch, no CPU burnt while the device is idle.

    ``run`` returns the model's first output, or the output named ``output`` (``output_name`` says which).
    """

    name = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike[str], *, threads: int | None = None,
                 providers: Sequence[str] | None = None, callers: int = 1, spin_us: int | None = None,
                 output: str | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = list(providers) if providers else ["CPUExecutionProvider"]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendUnavailableError(f"execution providers {missing} are not in this onnxruntime build ({available})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or physical_cores()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Shapes change with every batch (dynamic padding), so memory patterns are never reused: they only
        # add peak RSS.
        opts.enable_mem_pattern = False
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        if spin_us is None:
            spin_us = SPIN_US if callers <= 1 else SHARED_SPIN_US
        opts.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
        try:
            self._session = ort.InferenceSession(os.fspath(model_path), opts, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own pybind types; surface one of ours
            raise BackendError(f"onnxruntime cannot load {model_path}: {str(exc).strip()[:300]}") from None
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        outputs = [o.name for o in self._session.get_outputs()]
        if output is not None and output not in outputs:
            raise BackendError(f"the model {model_path} has no output {output!r} (it has {outputs})")
        self.output_name: str = output or outputs[0]
        self._fetch = [self.output_name]
        self.threads = opts.intra_op_num_threads
        self.providers = tuple(self._session.get_providers())

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        if self._session is None:
            raise BackendError("backend is closed")
        try:
            return self._session.run(self._fetch, feeds if type(feeds) is dict else dict(feeds))[0]
        except Exception as exc:
            raise BackendError(f"onnxruntime inference failed: {str(exc).strip()[:300]}") from None

    def close(self) -> None:
        self._session = None
