"""Micro-batching: a bounded FIFO queue and one worker thread that runs queued requests through the model together.

The rule, one place:

- A batch closes when it holds ``max_batch`` texts, or when its oldest request has waited ``window_s``,
  whichever comes first.
- A request that finds the worker idle and the queue empty starts a batch at once: at low load nothing waits
  for a window, so batching costs no latency there. Under load requests queue up while the model runs, and
  the next batch takes them together (and waits out the rest of the window for more).
- One worker and a FIFO queue: requests are answered in order of arrival. A request whose texts do not fit
  in the open batch starts the next one; a request with more than ``max_batch`` texts runs alone.
- The queue is bounded: :meth:`MicroBatcher.submit` raises :class:`~edge_runtime.service.errors.OverloadedError`
  when it is full, so a request is refused (and told so) rather than dropped.

Sharing a batch never changes an answer: the bundles use static INT8 quantization and each row is masked to
its own tokens, so ``predict(texts)[i]`` is what ``predict([texts[i]])`` gives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .errors import OverloadedError, ShuttingDownError

__all__ = ["MicroBatcher", "BatchStats", "Done"]

log = logging.getLogger(__name__)

#: ``done(predictions, error)``: exactly one of the two is None; called on the worker thread.
Done = Callable[[Any, "BaseException | None"], None]


@dataclass
class _Job:
    texts: Sequence[str]
    done: Done
    enqueued_at: float
    found_busy: bool


@dataclass
class BatchStats:
    """Counters of the worker (read under the batcher's lock by :meth:`MicroBatcher.stats`)."""

    batches: int = 0
    texts: int = 0
    jobs: int = 0
    failed_jobs: int = 0
    largest_batch: int = 0
    callback_failures: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "texts": self.texts, "jobs": self.jobs, "failed_jobs": self.failed_jobs,
                "largest_batch": self.largest_batch, "mean_batch": round(self.texts / self.batches, 3) if self.batches else 0.0,
                "callback_failures": self.callback_failures}


class MicroBatcher:
    """Runs ``predict(texts) -> list`` over micro-batches of submitted requests on one worker thread.

    Example::

        batcher = MicroBatcher(clf.predict_batch, queue_size=256, max_batch=32, window_s=0.005)
        batcher.start()
        batcher.submit(["play jazz"], lambda preds, err: print(preds or err))
        batcher.close(timeout=5)
    """

    def __init__(self, predict: Callable[[list[str]], Sequence[Any]], *, queue_size: int, max_batch: int,
                 window_s: float, clock: Callable[[], float] = time.perf_counter, name: str = "intent-batcher") -> None:
        if queue_size < 1 or max_batch < 1 or window_s < 0:
            raise ValueError("queue_size and max_batch must be >= 1 and window_s >= 0")
        self._predict = predict
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.window_s = window_s
        self._clock = clock
        self._items: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stats = BatchStats()

    # -- producer side ----------------------------------------------------------------------------------------
    def start(self) -> "MicroBatcher":
        self._thread.start()
        return self

    def submit(self, texts: Sequence[str], done: Done) -> None:
        """Queue one request; ``done`` is called with its predictions (in ``texts`` order) or an error."""
        with self._cond:
            if self._closing:
                raise ShuttingDownError()
            if len(self._items) >= self.queue_size:
                raise OverloadedError(f"the request queue is full ({self.queue_size} waiting); retry later")
            found_busy = self._busy or bool(self._items)
            self._items.append(_Job(texts, done, self._clock(), found_busy))
            self._cond.notify()

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch being run)."""
        with self._cond:
            return len(self._items)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {**self._stats.to_dict(), "queue_depth": len(self._items)}

    def close(self, timeout: float | None = None) -> bool:
        """Take no more requests, finish the queued ones, stop the worker. True if all were answered in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def closed(self) -> bool:
        return self._closing

    # -- worker side ------------------------------------------------------------------------------------------
    def _next_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._items:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._items.popleft()
            batch, size = [first], len(first.texts)
            # A request that found the worker idle runs now; one that queued behind others may wait out the window.
            deadline = first.enqueued_at + self.window_s if first.found_busy else 0.0
            while size < self.max_batch:
                if self._items:
                    nxt = self._items[0]
                    if size + len(nxt.texts) > self.max_batch:
                        break
                    batch.append(self._items.popleft())
                    size += len(nxt.texts)
                    continue
                remaining = deadline - self._clock()
                if remaining <= 0 or self._closing:
                    break
                self._cond.wait(remaining)
            self._busy = True
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            finally:
                with self._cond:
                    self._busy = False

    def _run_batch(self, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        try:
            predictions = list(self._predict(texts))
            if len(predictions) != len(texts):
                raise RuntimeError(f"model returned {len(predictions)} answers for {len(texts)} texts")
        except Exception as exc:  # the model failed: isolate the request that caused it, answer the others
            if len(batch) > 1:
                for job in batch:
                    self._run_batch([job])
                return
            log.error("inference failed for a request of %d text(s): %s", len(texts), exc, exc_info=True)
            with self._cond:
                self._stats.failed_jobs += 1
            self._finish(batch[0], None, exc)
            return
        with self._cond:
            s = self._stats
            s.batches += 1
            s.texts += len(texts)
            s.jobs += len(batch)
            s.largest_batch = max(s.largest_batch, len(texts))
            s.sizes[len(texts)] = s.sizes.get(len(texts), 0) + 1
        start = 0
        for job in batch:
            self._finish(job, predictions[start:start + len(job.texts)], None)
            start += len(job.texts)

    def _finish(self, job: _Job, predictions: Any, error: BaseException | None) -> None:
        try:
            job.done(predictions, error)
        except Exception:  # a failing callback must not stop the worker that serves everyone else
            log.error("reply callback failed", exc_info=True)
            with self._cond:
                self._stats.callback_failures += 1
