"""Micro-batching: a bounded FIFO queue and model worker threads that run queued requests through the model
together.

The rule, one place:

- A batch closes when it holds ``max_batch`` texts, or when its oldest request has waited ``window_s``,
  whichever comes first.
- A request that finds a worker idle and the queue empty starts a batch at once: at low load nothing waits
  for a window, so batching costs no latency there. Under load requests queue up while the model runs, and
  the next batch takes them together (and waits out the rest of the window for more).
- Batches are taken from a FIFO queue in order of arrival, and answered in that order: with several workers
  a batch that finishes early waits for the replies of the batches taken before it. A request whose texts
  do not fit in the open batch starts the next one; a request with more than ``max_batch`` texts runs alone.
- Several workers (``workers``) can run batches at the same time. Two callers get more texts/s out of a
  2-thread session than one (``bench/spin_compare.py``), but on the 2-core CI machine, with the broker and the
  load generator on the same cores, one worker still gave the lower latency at 500 requests/s
  (``bench/service_load.py load --workers 1|2``): one is the default, more are for devices with cores to spare.
  One worker at a time forms a batch; the other idle ones sleep until a request is left for them, so a second
  worker adds ~0.02 ms to a lone request (``bench/batcher_overhead.py``), not a wake-up during every model run.
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
    """Runs ``predict(texts) -> list`` over micro-batches of submitted requests on ``workers`` threads.

    ``predict`` must be safe to call from several threads at once when ``workers`` > 1; ``done`` callbacks are
    called one at a time, in order of arrival.

    Example::

        batcher = MicroBatcher(clf.predict_batch, queue_size=256, max_batch=32, window_s=0.005, workers=2)
        batcher.start()
        batcher.submit(["play jazz"], lambda preds, err: print(preds or err))
        batcher.close(timeout=5)
    """

    def __init__(self, predict: Callable[[list[str]], Sequence[Any]], *, queue_size: int, max_batch: int,
                 window_s: float, workers: int = 1, clock: Callable[[], float] = time.perf_counter,
                 name: str = "intent-batcher") -> None:
        if queue_size < 1 or max_batch < 1 or workers < 1 or window_s < 0:
            raise ValueError("queue_size, max_batch and workers must be >= 1 and window_s >= 0")
        self._predict = predict
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.window_s = window_s
        self._clock = clock
        self._items: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._busy = 0  # workers running a batch
        self._closing = False
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        self._stats = BatchStats()
        # In-order replies: batches are numbered as they are taken; batch n replies once batch n-1 has.
        self._taken = 0
        self._replied = 0
        self._turn = threading.Condition()
        # One worker at a time forms a batch (``_former``; it waits out a window on ``_window``), so batches hold
        # consecutive requests. The other idle workers sleep on ``_cond`` and are woken only when a request is left
        # for them, not at every batch: a wake-up during a model run costs that run a core on a small device.
        self._window = threading.Condition(self._cond)
        self._former = False

    # -- producer side ----------------------------------------------------------------------------------------
    def start(self) -> "MicroBatcher":
        for thread in self._threads:
            thread.start()
        return self

    @property
    def workers(self) -> int:
        return len(self._threads)

    def submit(self, texts: Sequence[str], done: Done) -> None:
        """Queue one request; ``done`` is called with its predictions (in ``texts`` order) or an error."""
        with self._cond:
            if self._closing:
                raise ShuttingDownError()
            if len(self._items) >= self.queue_size:
                raise OverloadedError(f"the request queue is full ({self.queue_size} waiting); retry later")
            found_busy = self._busy >= len(self._threads) or bool(self._items)
            self._items.append(_Job(texts, done, self._clock(), found_busy))
            (self._window if self._former else self._cond).notify()

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch being run)."""
        with self._cond:
            return len(self._items)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {**self._stats.to_dict(), "queue_depth": len(self._items)}

    def close(self, timeout: float | None = None) -> bool:
        """Take no more requests, finish the queued ones, stop the workers. True if all were answered in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._window.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    @property
    def closed(self) -> bool:
        return self._closing

    # -- worker side ------------------------------------------------------------------------------------------
    def _next_batch(self) -> tuple[int, list[_Job]] | None:
        with self._cond:
            while self._former or not self._items:
                if self._closing and not self._items:
                    return None
                self._cond.wait()
            self._former = True
            try:
                batch = self._form()
            finally:
                self._former = False
                if self._closing:  # every idle worker looks again, and the ones with nothing left stop
                    self._cond.notify_all()
                elif self._items:  # more than one batch's worth: an idle worker can take the next one
                    self._cond.notify()
            self._busy += 1
            self._taken += 1
            return self._taken, batch

    def _form(self) -> list[_Job]:
        """Take one batch of consecutive requests (under the lock, as the only worker forming one)."""
        first = self._items.popleft()
        batch, size = [first], len(first.texts)
        # A request that found a worker idle runs now; one that queued behind others may wait out the window.
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
            self._window.wait(remaining)
        return batch

    def _run(self) -> None:
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            number, batch = taken
            try:
                self._run_batch(number, batch)
            finally:
                with self._cond:
                    self._busy -= 1

    def _run_batch(self, number: int, batch: list[_Job]) -> None:
        replies: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            self._predict_jobs(batch, replies)
        finally:
            with self._turn:  # batches reply in the order they were taken
                while self._replied != number - 1:
                    self._turn.wait()
            try:
                for job, predictions, error in replies:
                    self._finish(job, predictions, error)
            finally:
                with self._turn:
                    self._replied = number
                    self._turn.notify_all()

    def _predict_jobs(self, batch: list[_Job], replies: list[tuple[_Job, Any, BaseException | None]]) -> None:
        """Run ``batch`` through the model; append each job's ``(job, predictions, error)`` to ``replies``."""
        texts = [t for job in batch for t in job.texts]
        try:
            predictions = list(self._predict(texts))
            if len(predictions) != len(texts):
                raise RuntimeError(f"model returned {len(predictions)} answers for {len(texts)} texts")
        except Exception as exc:  # the model failed: isolate the request that caused it, answer the others
            if len(batch) > 1:
                for job in batch:
                    self._predict_jobs([job], replies)
                return
            log.error("inference failed for a request of %d text(s): %s", len(texts), exc, exc_info=True)
            with self._cond:
                self._stats.failed_jobs += 1
            replies.append((batch[0], None, exc))
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
            replies.append((job, predictions[start:start + len(job.texts)], None))
            start += len(job.texts)

    def _finish(self, job: _Job, predictions: Any, error: BaseException | None) -> None:
        try:
            job.done(predictions, error)
        except Exception:  # a failing callback must not stop the worker that serves everyone else
            log.error("reply callback failed", exc_info=True)
            with self._cond:
                self._stats.callback_failures += 1
