"""MicroBatcher: batches under load, no wait at low load, FIFO, bounded, drains, isolates failures."""

from __future__ import annotations

import threading
import time

import pytest

from edge_runtime.service.batcher import MicroBatcher
from edge_runtime.service.errors import OverloadedError, ShuttingDownError


class SlowModel:
    """predict(texts) -> [text.upper()], taking ``delay`` seconds per call; records each call's texts."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, texts: list[str]) -> list[str]:
        self.entered.set()
        self.gate.wait(10)
        self.calls.append(list(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("model exploded")
        time.sleep(self.delay)
        return [t.upper() for t in texts]


class Results:
    def __init__(self) -> None:
        self.items: list[tuple[str, object, object, float]] = []
        self.cond = threading.Condition()

    def done_for(self, key: str):  # type: ignore[no-untyped-def]
        def done(preds, error):  # type: ignore[no-untyped-def]
            with self.cond:
                self.items.append((key, preds, error, time.perf_counter()))
                self.cond.notify_all()
        return done

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[str, object, object, float]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, timeout), f"{len(self.items)} of {n} answered"
            return list(self.items)


def test_a_request_that_finds_the_worker_idle_does_not_wait_for_the_window():
    # Given a batcher with a long window and an idle worker
    model, results = SlowModel(), Results()
    batcher = MicroBatcher(model, queue_size=8, max_batch=16, window_s=0.5).start()
    try:
        # When one request arrives
        t0 = time.perf_counter()
        batcher.submit(["play jazz"], results.done_for("a"))
        (_, preds, err, at), = results.wait(1)
        # Then it is answered at once, not after the window
        assert preds == ["PLAY JAZZ"] and err is None
        assert at - t0 < 0.25
    finally:
        batcher.close(5)


def test_requests_that_queue_while_the_model_runs_share_the_next_batch_in_arrival_order():
    # Given a model that is busy with a first request
    model, results = SlowModel(), Results()
    model.gate.clear()
    batcher = MicroBatcher(model, queue_size=64, max_batch=8, window_s=0.002).start()
    try:
        batcher.submit(["first"], results.done_for("first"))
        assert model.entered.wait(5)
        # When ten more arrive meanwhile (one of them with two texts)
        for i in range(9):
            batcher.submit([f"t{i}"], results.done_for(f"t{i}"))
        batcher.submit(["u1", "u2"], results.done_for("pair"))
        model.gate.set()
        items = results.wait(11)
        # Then they ran in batches of at most 8 texts, a request never split, answers in arrival order
        assert model.calls[0] == ["first"]
        assert [len(c) for c in model.calls[1:]] == [8, 3]
        assert [k for k, *_ in items] == ["first"] + [f"t{i}" for i in range(9)] + ["pair"]
        assert dict((k, p) for k, p, _, _ in items)["pair"] == ["U1", "U2"]
        assert batcher.stats()["largest_batch"] == 8
    finally:
        batcher.close(5)


def test_a_request_larger_than_max_batch_runs_alone():
    model, results = SlowModel(), Results()
    batcher = MicroBatcher(model, queue_size=8, max_batch=2, window_s=0.0).start()
    try:
        batcher.submit(["a", "b", "c"], results.done_for("big"))
        assert results.wait(1)[0][1] == ["A", "B", "C"]
    finally:
        batcher.close(5)


def test_a_full_queue_refuses_with_overloaded_and_nothing_is_dropped():
    # Given a model held busy and a queue of two
    model, results = SlowModel(), Results()
    model.gate.clear()
    batcher = MicroBatcher(model, queue_size=2, max_batch=1, window_s=0.0).start()
    try:
        batcher.submit(["running"], results.done_for("running"))
        assert model.entered.wait(5)
        batcher.submit(["q1"], results.done_for("q1"))
        batcher.submit(["q2"], results.done_for("q2"))
        # When one more arrives, Then it is refused, not queued
        with pytest.raises(OverloadedError) as info:
            batcher.submit(["q3"], results.done_for("q3"))
        assert info.value.code == "overloaded"
        model.gate.set()
        # and every accepted request is answered
        assert sorted(k for k, *_ in results.wait(3)) == ["q1", "q2", "running"]
    finally:
        batcher.close(5)


def test_close_answers_what_is_queued_then_refuses_new_requests():
    model, results = SlowModel(delay=0.01), Results()
    batcher = MicroBatcher(model, queue_size=50, max_batch=4, window_s=0.001).start()
    for i in range(20):
        batcher.submit([f"t{i}"], results.done_for(str(i)))
    assert batcher.close(5) is True
    assert len(results.wait(20)) == 20
    with pytest.raises(ShuttingDownError):
        batcher.submit(["late"], results.done_for("late"))


def test_a_failing_request_gets_its_error_and_its_batch_mates_their_answers():
    # Given a model that fails on one text
    model, results = SlowModel(fail_on="poison"), Results()
    model.gate.clear()
    batcher = MicroBatcher(model, queue_size=10, max_batch=8, window_s=0.0).start()
    try:
        batcher.submit(["first"], results.done_for("first"))
        time.sleep(0.05)
        for key, text in (("a", "fine"), ("p", "poison"), ("b", "also fine")):
            batcher.submit([text], results.done_for(key))
        model.gate.set()
        # When they share a batch, Then only the poisoned request fails
        got = {k: (p, e) for k, p, e, _ in results.wait(4)}
        assert got["a"] == (["FINE"], None) and got["b"] == (["ALSO FINE"], None)
        assert got["p"][0] is None and isinstance(got["p"][1], RuntimeError)
        assert batcher.stats()["failed_jobs"] == 1
    finally:
        batcher.close(5)


def test_a_failing_callback_does_not_stop_the_worker():
    model, results = SlowModel(), Results()
    batcher = MicroBatcher(model, queue_size=10, max_batch=4, window_s=0.0).start()
    try:
        def explode(preds, error):  # type: ignore[no-untyped-def]
            raise ValueError("reply encoding bug")
        batcher.submit(["x"], explode)
        batcher.submit(["y"], results.done_for("y"))
        assert results.wait(1)[0][1] == ["Y"]
        assert batcher.stats()["callback_failures"] == 1
    finally:
        batcher.close(5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(lambda t: t, queue_size=0, max_batch=1, window_s=0)
    with pytest.raises(ValueError):
        MicroBatcher(lambda t: t, queue_size=1, max_batch=1, window_s=0, workers=0)


class GatedModel:
    """predict(texts) -> [text.upper()]; a call whose texts include a key of ``gates`` waits for that event.
    Records how many calls ran at the same time."""

    def __init__(self, *gated: str) -> None:
        self.gates = {key: threading.Event() for key in gated}
        self.started: dict[str, threading.Event] = {key: threading.Event() for key in gated}
        self.lock = threading.Lock()
        self.running = self.most_running = 0

    def __call__(self, texts: list[str]) -> list[str]:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            for key in texts:
                if key in self.gates:
                    self.started[key].set()
                    assert self.gates[key].wait(10)
            return [t.upper() for t in texts]
        finally:
            with self.lock:
                self.running -= 1


def test_two_workers_run_batches_side_by_side_and_still_answer_in_arrival_order():
    # Given two workers and a model whose first call is held
    model, results = GatedModel("slow"), Results()
    batcher = MicroBatcher(model, queue_size=8, max_batch=8, window_s=0.0, workers=2).start()
    try:
        batcher.submit(["slow"], results.done_for("slow"))
        assert model.started["slow"].wait(5)
        # When a second request arrives while the first one's model call runs
        batcher.submit(["fast"], results.done_for("fast"))
        # Then it runs at once on the other worker, but its reply waits for the earlier request's
        deadline = time.monotonic() + 5
        while model.most_running < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert model.most_running == 2
        time.sleep(0.05)
        assert results.items == []
        model.gates["slow"].set()
        assert [(k, p) for k, p, *_ in results.wait(2)] == [("slow", ["SLOW"]), ("fast", ["FAST"])]
    finally:
        batcher.close(5)


def test_with_two_workers_many_requests_are_each_answered_once_in_arrival_order():
    model, results = SlowModel(delay=0.002), Results()
    batcher = MicroBatcher(model, queue_size=500, max_batch=4, window_s=0.005, workers=2).start()
    try:
        for i in range(200):
            batcher.submit([f"t{i}"], results.done_for(str(i)))
            if i % 7 == 0:
                time.sleep(0.001)
        items = results.wait(200)
        assert [k for k, *_ in items] == [str(i) for i in range(200)]
        assert all(p == [f"T{k}"] and e is None for k, p, e, _ in items)
        assert batcher.workers == 2
    finally:
        assert batcher.close(5) is True


def test_a_failing_batch_on_one_worker_keeps_the_order_and_the_other_worker_going():
    model, results = SlowModel(fail_on="poison"), Results()
    batcher = MicroBatcher(model, queue_size=50, max_batch=2, window_s=0.0, workers=2).start()
    try:
        keys = [f"ok{i}" if i != 5 else "poison" for i in range(12)]
        for key in keys:
            batcher.submit([key], results.done_for(key))
        items = results.wait(12)
        assert [k for k, *_ in items] == keys
        assert [k for k, p, e, _ in items if e is not None] == ["poison"]
    finally:
        batcher.close(5)



def test_with_two_workers_bursts_from_several_senders_are_answered_in_each_senders_order():
    # Given two workers whose batches wait out a short window, and four senders that submit at once
    # (without care, a worker waiting out its window loses later requests to the other, idle one)
    for _ in range(3):
        model, results = SlowModel(), Results()
        batcher = MicroBatcher(model, queue_size=1000, max_batch=4, window_s=0.001, workers=2).start()
        try:
            def send(sender: int) -> None:
                for j in range(100):
                    batcher.submit([f"{sender}-{j}"], results.done_for(f"{sender}-{j}"))
                    time.sleep(0.0003)

            senders = [threading.Thread(target=send, args=(i,)) for i in range(4)]
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            items = results.wait(400)
            # Then every sender's requests are answered in the order it sent them
            for sender in range(4):
                assert [k for k, *_ in items if k.startswith(f"{sender}-")] == [f"{sender}-{j}" for j in range(100)]
        finally:
            batcher.close(5)


def test_close_stops_every_worker_also_the_idle_ones_behind_a_busy_one():
    # Given four workers and a held model: requests pile up behind the first call, workers wait for work
    model, results = SlowModel(), Results()
    model.gate.clear()
    batcher = MicroBatcher(model, queue_size=8, max_batch=8, window_s=30.0, workers=4).start()
    batcher.submit(["first"], results.done_for("first"))
    assert model.entered.wait(5)
    for i in range(3):
        batcher.submit([f"queued{i}"], results.done_for(f"queued{i}"))
    # When the service drains while the held call is still running
    closer = threading.Thread(target=lambda: results.items.append(("closed", batcher.close(10), None, 0.0)))
    start = time.monotonic()
    closer.start()
    time.sleep(0.05)
    model.gate.set()
    closer.join(15)
    # Then everything queued is answered, at once rather than after the window, and every worker has stopped
    assert time.monotonic() - start < 5
    assert [k for k, *_ in results.items] == ["first", "queued0", "queued1", "queued2", "closed"]
    assert results.items[-1][1] is True
