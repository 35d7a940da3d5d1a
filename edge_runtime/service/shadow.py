"""Shadow deployment on the device: a candidate bundle answers the same requests, off the reply path.

:class:`ShadowRunner` is a :class:`~edge_runtime.service.service.ServiceObserver`. The service hands it each
answered request after the reply went out; ``on_reply`` only appends to a bounded queue (a full queue skips the
request and counts it), and the candidate runs on its own thread, so it never adds to reply latency. Each telemetry
window it contributes one ``shadow`` message (see :meth:`ShadowRunner.window_messages`):

``{"type": "shadow", "candidate": {name, version}, "serving": {name, version}, "compared", "agreed", "agreement",
"skipped", "failures", "pairs": {"<serving>-><candidate>": n}, "disagreements": [{"id", "serving", "candidate"}],
"candidate_latency_ms": {p50, p95}, "confidence_delta_mean"}``

Disagreements carry the texts only when sampling is enabled (privacy by default).

Example::

    shadow = ShadowRunner(IntentClassifier.from_bundle("edge/4"), serving_model={"name": "intents", "version": "3"})
    service = IntentService(config, clf, transport, observer=ObserverChain(telemetry, shadow.start()))
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .protocol import Request

__all__ = ["ShadowRunner"]

log = logging.getLogger(__name__)


class ShadowRunner:
    """Runs ``candidate`` (anything with ``predict_batch``, ``name``, ``version``) beside the serving model."""

    def __init__(self, candidate: Any, *, serving_model: Mapping[str, str], queue_size: int = 256,
                 include_texts: bool = False, max_disagreements: int = 50, own_candidate: bool = False,
                 cleanup: Callable[[], None] | None = None) -> None:
        self.candidate = candidate
        self._cleanup = cleanup
        self.candidate_model = {"name": str(candidate.name), "version": str(candidate.version)}
        self.serving_model = dict(serving_model)
        self.queue_size = queue_size
        self.include_texts = include_texts
        self.max_disagreements = max_disagreements
        self._own = own_candidate
        self._queue: deque[tuple[Request, tuple[Any, ...]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._reset()
        self.totals: Counter[str] = Counter()

    def _reset(self) -> None:
        self._compared = 0
        self._agreed = 0
        self._skipped = 0
        self._failures = 0
        self._pairs: Counter[str] = Counter()
        self._disagreements: list[dict[str, Any]] = []
        self._latencies: list[float] = []
        self._deltas: list[float] = []

    # -- observer hooks (service threads) -------------------------------------------------------------------------
    def on_reply(self, request: Request, predictions: Sequence[Any], latency_ms: float) -> None:
        with self._cond:
            if self._closed or len(self._queue) >= self.queue_size:
                self._skipped += len(request.texts)
                return
            self._queue.append((request, tuple(predictions)))
            self._cond.notify()

    def on_error(self, code: str) -> None:
        return None

    # -- life cycle -------------------------------------------------------------------------------------------------
    def start(self) -> "ShadowRunner":
        if self._closed:
            raise RuntimeError("the shadow runner is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="intent-shadow", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the queued requests (up to ``timeout``); closes the candidate when it was handed over, then
        calls ``cleanup`` (which removes the candidate's staging copy)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            if self._own:
                self.candidate.close()
        finally:
            if self._cleanup is not None:
                self._cleanup()

    def __enter__(self) -> "ShadowRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until the queue is empty and the last item compared (tests, demos)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    _busy = False

    def _loop(self) -> None:
        _lower_priority()
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                request, served = self._queue.popleft()
                self._busy = True
            try:
                self._compare(request, served)
            except Exception:  # a failing candidate is a finding to report, not a reason to stop serving
                with self._cond:
                    self._failures += 1
                log.warning("shadow candidate failed on request %s", request.id, exc_info=True)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _compare(self, request: Request, served: Sequence[Any]) -> None:
        t0 = time.perf_counter()
        shadow = self.candidate.predict_batch(list(request.texts))
        elapsed = (time.perf_counter() - t0) * 1000.0
        with self._cond:
            self._latencies.append(elapsed / max(len(request.texts), 1))
            for i, (text, a, b) in enumerate(zip(request.texts, served, shadow)):
                self._compared += 1
                self.totals["compared"] += 1
                self._deltas.append(float(b.confidence) - float(a.confidence))
                if a.intent == b.intent:
                    self._agreed += 1
                    self.totals["agreed"] += 1
                    continue
                self._pairs[f"{a.intent}->{b.intent}"] += 1
                if len(self._disagreements) < self.max_disagreements:
                    item: dict[str, Any] = {"id": request.id if not request.batch else f"{request.id}[{i}]",
                                            "serving": {"intent": a.intent, "confidence": round(a.confidence, 4)},
                                            "candidate": {"intent": b.intent, "confidence": round(b.confidence, 4)}}
                    if self.include_texts:
                        item["text"] = text
                    self._disagreements.append(item)

    # -- reporting ------------------------------------------------------------------------------------------------
    def snapshot(self, reset: bool = True) -> dict[str, Any]:
        """The ``shadow`` message body for the requests compared since the last snapshot."""
        with self._cond:
            lat = np.asarray(self._latencies) if self._latencies else None
            body = {
                "type": "shadow", "serving": dict(self.serving_model), "candidate": dict(self.candidate_model),
                "compared": self._compared, "agreed": self._agreed,
                "agreement": round(self._agreed / self._compared, 4) if self._compared else None,
                "skipped": self._skipped, "failures": self._failures, "pairs": dict(self._pairs),
                "disagreements": list(self._disagreements),
                "candidate_latency_ms": ({"p50": round(float(np.percentile(lat, 50)), 3),
                                          "p95": round(float(np.percentile(lat, 95)), 3)} if lat is not None else {}),
                "confidence_delta_mean": round(float(np.mean(self._deltas)), 4) if self._deltas else None,
                "texts_included": self.include_texts,
            }
            if reset:
                self._reset()
        return body

    def window_messages(self) -> list[dict[str, Any]]:
        """What the telemetry publisher spools at each window: one ``shadow`` message when anything happened."""
        body = self.snapshot()
        return [body] if body["compared"] or body["skipped"] or body["failures"] else []


def _lower_priority(niceness: int = 10) -> None:
    """Make the calling thread yield the CPU to the serving thread (Linux: a thread's own nice value)."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not permitted: the candidate just competes as usual
        pass
