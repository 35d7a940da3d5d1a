"""IntentService over the in-memory transport and the tiny real model: replies, errors, status, drain."""

from __future__ import annotations

import json
import threading
import time

import pytest

import edge_runtime.service as service_pkg
from edge_runtime.service import FakeTransport, IntentService
from edge_runtime.service.protocol import Topics
from edge_runtime.service.service import offline_will
from tests.conftest import LABELS
from tests.edge_runtime.service.conftest import make_config


def test_public_api_is_pinned():
    assert sorted(service_pkg.__all__) == sorted([
        "ConfigError", "ErrorCode", "FakeTransport", "IntentService", "IpcTarget", "Message", "MicroBatcher",
        "OverloadedError", "Published", "Request", "RequestError", "ServiceConfig", "ServiceError",
        "ShuttingDownError", "Topics", "Transport", "TransportClosedError", "TransportError", "TransportKind",
        "TransportUnavailableError", "decode_request", "encode_error", "encode_reply", "from_sources", "serve"])
    for name in service_pkg.__all__:
        assert hasattr(service_pkg, name)


@pytest.fixture()
def running(config, clf, transport):  # type: ignore[no-untyped-def]
    service = IntentService(config, clf, transport).start()
    yield service, transport, Topics.for_thing(config.thing)
    service.drain(5)


def test_a_text_gets_the_classifiers_answer_on_the_response_topic(running, clf):
    service, transport, topics = running
    msg = transport.deliver({"id": "r1", "text": "play some jazz"})
    reply = transport.wait_for(1, topic=topics.response)[0]
    body = reply.json()
    expected = clf.predict("play some jazz")
    assert body["id"] == "r1" and body["intent"] == expected.intent in LABELS
    assert body["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    assert body["model"] == {"name": "tiny", "version": "1"} and body["latency_ms"] >= 0
    assert [t["intent"] for t in body["top"]] == [label for label, _ in expected.top]
    assert transport.acked == [msg]


def test_texts_get_results_in_order(running, clf):
    service, transport, topics = running
    texts = ["play jazz", "book a table for two", "will it rain tomorrow"]
    transport.deliver({"id": "r2", "texts": texts})
    body = transport.wait_for(1, topic=topics.response)[0].json()
    assert [r["intent"] for r in body["results"]] == [clf.predict(t).intent for t in texts]
    assert "intent" not in body


@pytest.mark.parametrize("payload, code", [
    (b"\xc3\x28", "bad_encoding"), (b"{", "bad_json"), (b'{"text": "x"}', "bad_request"),
    (b'{"id": "e", "text": "   "}', "empty_text"), (json.dumps({"id": "e", "text": "x" * 513}).encode(), "text_too_long"),
    (json.dumps({"id": "e", "texts": ["x"] * 33}).encode(), "too_many_texts"), (b" " * 70000, "payload_too_large"),
])
def test_every_bad_input_gets_an_error_reply_and_the_service_stays_up(running, payload, code):
    service, transport, topics = running
    msg = transport.deliver(payload)
    error = transport.wait_for(1, topic=topics.response)[0].json()
    assert error["error"]["code"] == code and error["id"] in (None, "e")
    assert transport.acked == [msg]
    transport.deliver({"id": "after", "text": "play jazz"})
    assert transport.wait_for(2, topic=topics.response)[1].json()["id"] == "after"
    assert service.status()["counters"]["errors_by_code"] == {code: 1}


def test_an_mqtt5_response_topic_under_the_prefix_is_honoured_with_its_correlation_data(running):
    service, transport, topics = running
    own = topics.response + "/client-42"
    transport.deliver({"id": "r", "text": "play jazz"}, response_topic=own, correlation_data=b"\x00corr")
    reply = transport.wait_for(1, topic=own)[0]
    assert reply.correlation_data == b"\x00corr" and reply.json()["id"] == "r"


@pytest.mark.parametrize("elsewhere", ["dt/intents/other/status", "cmd/intents/x/request", "$aws/things/x/shadow/update",
                                       "cmd/intents/+/response"])
def test_a_response_topic_outside_the_prefix_gets_forbidden_topic_on_the_default_topic(running, elsewhere):
    service, transport, topics = running
    transport.deliver({"id": "r", "text": "play jazz"}, response_topic=elsewhere, correlation_data=b"c")
    time.sleep(0.05)
    assert transport.on(elsewhere) == []
    error = transport.wait_for(1, topic=topics.response)[0]
    assert error.json()["error"]["code"] == "forbidden_topic" and error.json()["id"] == "r"
    assert error.correlation_data == b"c"


class BlockingClassifier:
    """A classifier whose predict_batch waits for ``gate``; name/version/backend like the real one."""

    name, version = "blocking", "9"

    class backend:  # noqa: N801 - mimics clf.backend.name
        name = "fake"

    def __init__(self, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail = fail

    def predict_batch(self, texts):  # type: ignore[no-untyped-def]
        self.entered.set()
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("backend crashed")
        from edge_runtime.classifier import Prediction
        return [Prediction("PlayMusic", 0.5, (("PlayMusic", 0.5),)) for _ in texts]


def test_overload_gets_an_overloaded_error_and_every_request_one_reply(tiny_bundle):
    # Given a busy model and a queue of two
    cfg = make_config(tiny_bundle[0].root, queue_size=2, max_batch=1, status_interval_s=3600.0)
    transport = FakeTransport(request_topic=Topics.for_thing(cfg.thing).request)
    model = BlockingClassifier()
    service = IntentService(cfg, model, transport).start()
    topics = Topics.for_thing(cfg.thing)
    try:
        # When five requests arrive while it is busy with the first
        for i in range(5):
            transport.deliver({"id": f"r{i}", "text": "play"})
            if i == 0:
                assert model.entered.wait(5)
        overloaded = transport.wait_for(2, topic=topics.response)
        # Then the two that do not fit are refused at once
        assert {p.json()["id"] for p in overloaded} == {"r3", "r4"}
        assert all(p.json()["error"]["code"] == "overloaded" for p in overloaded)
        model.gate.set()
        # and the rest are answered, so each request got exactly one reply
        replies = transport.wait_for(5, topic=topics.response)
        assert sorted(p.json()["id"] for p in replies) == [f"r{i}" for i in range(5)]
        assert len(transport.acked) == 5
    finally:
        model.gate.set()
        service.drain(5)


def test_a_model_failure_is_an_internal_error_reply(tiny_bundle):
    cfg = make_config(tiny_bundle[0].root, status_interval_s=3600.0)
    transport = FakeTransport()
    model = BlockingClassifier(fail=True)
    model.gate.set()
    service = IntentService(cfg, model, transport).start()
    try:
        transport.deliver({"id": "boom", "text": "play"})
        body = transport.wait_for(1, topic=Topics.for_thing(cfg.thing).response)[0].json()
        assert body == {"id": "boom", "error": {"code": "internal",
                                                "message": "the model failed on this request (RuntimeError)"}}
    finally:
        service.drain(5)


def test_a_reply_that_cannot_be_published_is_not_acknowledged(running):
    service, transport, topics = running
    transport.fail_publish = 1
    msg = transport.deliver({"id": "r", "text": "play jazz"})
    deadline = time.monotonic() + 5
    while service.status()["counters"]["publish_failures"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert msg not in transport.acked and service.status()["counters"]["publish_failures"] == 1


def test_status_on_start_on_reconnect_and_on_a_period(tiny_bundle, clf):
    cfg = make_config(tiny_bundle[0].root, status_interval_s=0.05)
    topics = Topics.for_thing(cfg.thing)
    transport = FakeTransport(request_topic=topics.request, will=(topics.status, offline_will(cfg.thing)))
    service = IntentService(cfg, clf, transport).start()
    try:
        first = transport.wait_for(1, topic=topics.status)[0]
        assert first.retain and first.json()["state"] == "online"
        assert first.json()["model"] == {"name": "tiny", "version": "1"} and first.json()["backend"] == "onnxruntime"
        transport.deliver({"id": "r", "text": "play"})
        transport.wait_for(1, topic=topics.response)
        statuses = transport.wait_for(4, topic=topics.status, timeout=5)
        latest = statuses[-1].json()
        assert latest["counters"]["received"] == 1 and latest["counters"]["replied"] == 1
        assert latest["uptime_s"] > 0 and latest["rss_mb"] > 0 and "p50" in latest["latency_ms"]
        n = len(transport.on(topics.status))
        transport.reconnect()
        assert len(transport.on(topics.status)) > n
        # a lost connection leaves the broker's last will: offline
        transport.drop()
        will = transport.on(topics.status)[-1]
        assert will.retain and will.json()["state"] == "offline" and will.json()["reason"] == "connection lost"
    finally:
        service.drain(5)


def test_drain_answers_held_requests_then_says_offline_and_closes(tiny_bundle):
    # Given requests held behind a busy model
    cfg = make_config(tiny_bundle[0].root, status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    transport = FakeTransport(request_topic=topics.request)
    model = BlockingClassifier()
    service = IntentService(cfg, model, transport).start()
    for i in range(4):
        transport.deliver({"id": f"r{i}", "text": "play"})
    # When the service drains (the model finishing meanwhile)
    threading.Timer(0.1, model.gate.set).start()
    assert service.drain(5) is True
    # Then every held request was answered, the last status says offline, and the transport is closed
    assert sorted(p.json()["id"] for p in transport.on(topics.response)) == ["r0", "r1", "r2", "r3"]
    assert transport.on(topics.status)[-1].json()["state"] == "offline"
    assert transport.closed and service.state == "offline"
    assert service.drain() is True  # idempotent


def test_a_request_arriving_during_the_drain_is_refused_or_left_for_the_next_session(tiny_bundle, clf):
    cfg = make_config(tiny_bundle[0].root, status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    for redeliverable in (False, True):
        transport = FakeTransport(request_topic=topics.request, redeliverable=redeliverable)
        service = IntentService(cfg, clf, transport).start()
        service._accepting = False  # the first step of drain(): what arrives now is not taken
        msg = transport.deliver({"id": "late", "text": "play"})
        if redeliverable:   # MQTT: unacknowledged, so the broker hands it to the next session
            assert transport.on(topics.response) == [] and msg not in transport.acked
            assert service.status()["counters"]["deferred"] == 1
        else:               # IPC: no redelivery, so the client is told to retry
            assert transport.on(topics.response)[0].json()["error"]["code"] == "shutting_down"
        service.drain(5)


def test_start_runs_once_and_a_closed_transport_refuses_use(config, clf, transport):
    service = IntentService(config, clf, transport).start()
    with pytest.raises(RuntimeError):
        service.start()
    service.drain(5)
    from edge_runtime.service.errors import TransportClosedError
    with pytest.raises(TransportClosedError):
        transport.publish("x", b"y")


def test_an_observer_sees_replies_and_errors_and_cannot_break_the_service(tiny_bundle, clf):
    class Recorder:
        def __init__(self) -> None:
            self.replies: list[tuple[str, int, float]] = []
            self.errors: list[str] = []

        def on_reply(self, request, predictions, latency_ms):  # type: ignore[no-untyped-def]
            self.replies.append((request.id, len(predictions), latency_ms))
            if request.id == "boom":
                raise RuntimeError("observer bug")

        def on_error(self, code):  # type: ignore[no-untyped-def]
            self.errors.append(code)

    cfg = make_config(tiny_bundle[0].root, status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    transport, recorder = FakeTransport(request_topic=topics.request), Recorder()
    service = IntentService(cfg, clf, transport, observer=recorder).start()
    try:
        transport.deliver({"id": "a", "texts": ["play jazz", "book a table"]})
        transport.deliver(b"{")
        transport.deliver({"id": "boom", "text": "play"})
        transport.deliver({"id": "b", "text": "play"})
        transport.wait_for(4, topic=topics.response)
        deadline = time.monotonic() + 5
        while len(recorder.replies) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(r[0], r[1]) for r in recorder.replies] == [("a", 2), ("boom", 1), ("b", 1)]
        assert recorder.errors == ["bad_json"]
        assert service.status()["counters"]["replied"] == 3
    finally:
        service.drain(5)


def test_a_redelivered_request_already_answered_is_acknowledged_not_answered_again(running):
    # Given a request that was answered
    import dataclasses

    service, transport, topics = running
    first = transport.deliver({"id": "r9", "text": "play some jazz"})
    transport.wait_for(1, topic=topics.response)
    # When the broker redelivers it (DUP flag), e.g. after losing the service's PUBACK in a restart
    again = dataclasses.replace(first, duplicate=True, _ack=lambda: transport.acked.append(again))
    service.handle(again)
    # Then it is acknowledged and not answered twice; a new request reusing the id without DUP is answered
    assert transport.acked[-1] is again
    transport.deliver({"id": "r9", "text": "play some jazz"})
    replies = transport.wait_for(2, topic=topics.response)
    assert [r.json()["id"] for r in replies] == ["r9", "r9"]
    assert service.status()["counters"]["duplicates_skipped"] == 1
