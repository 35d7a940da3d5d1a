"""No request and no model output can wedge the service: every message it takes is answered (an error reply with a
code) and acknowledged, whatever is raised; duplicates are keyed on what identifies a request; retained and
expired requests are acknowledged, counted and not answered."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import BackendError, IntentClassifier
from edge_runtime.bundle import write_bundle
from edge_runtime.service import FakeTransport, IntentService
from edge_runtime.service.protocol import Topics
from edge_runtime.service.reload import BundleReloader, SwappableClassifier
from tests.conftest import LABELS, tiny_weights, write_tiny_onnx, write_tiny_tokenizer
from tests.edge_runtime.service.conftest import make_config

HUGE_INT = b"9" * 4301  # json.loads raises ValueError (more than sys.get_int_max_str_digits() digits)


@pytest.fixture()
def running(config, clf, transport):  # type: ignore[no-untyped-def]
    service = IntentService(config, clf, transport).start()
    yield service, transport, Topics.for_thing(config.thing)
    service.drain(5)


def _codes(transport: FakeTransport, topic: str) -> list[str | None]:
    return [p.json().get("error", {}).get("code") for p in transport.on(topic)]


def test_integers_json_cannot_give_python_are_answered_and_acknowledged(running):
    service, transport, topics = running
    # Given 25 requests with an integer of 4301 digits (more than a broker's 20-message in-flight window)
    poison = [b'{"id": "p%d", "text": "play", "n": %s}' % (i, HUGE_INT) for i in range(25)]
    messages = [transport.deliver(p) for p in poison]
    # When a valid request follows
    transport.deliver({"id": "after", "text": "play jazz"})
    replies = transport.wait_for(26, topic=topics.response)
    # Then each poison message got a bad_json error reply and was acknowledged, and the valid one an answer
    assert [r.json()["error"]["code"] for r in replies[:25]] == ["bad_json"] * 25
    assert replies[25].json()["id"] == "after" and "intent" in replies[25].json()
    assert all(m in transport.acked for m in messages) and len(transport.acked) == 26


def _nan_bundle(root: Path, *, poisoned_word: str | None) -> Path:
    """A real ONNX bundle whose embedding of ``poisoned_word`` is +inf (every score NaN/Inf for a text with it), or
    whose bias is NaN (``poisoned_word=None``: every output NaN)."""
    work = root.parent / (root.name + "-src")
    work.mkdir(parents=True)
    tok = write_tiny_tokenizer(work / "tokenizer.json")
    vocab = json.loads(tok.read_text())["model"]["vocab"]
    weights = tiny_weights(len(vocab), len(LABELS))
    if poisoned_word is None:
        weights["b"][:] = np.nan
    else:
        weights["emb"][vocab[poisoned_word]] = np.inf
    model = write_tiny_onnx(work / "model.onnx", weights)
    write_bundle(root, files={"model.onnx": model, "tokenizer.json": tok}, name="nan", version="9", labels=LABELS,
                 max_length=16, tokenizer="tokenizer.json", backends={"onnxruntime": {"file": "model.onnx"}})
    return root


def test_a_model_that_outputs_nan_is_refused_at_load(tmp_path):
    with pytest.raises(BackendError, match="non-finite scores"):
        IntentClassifier.from_bundle(_nan_bundle(tmp_path / "b", poisoned_word=None), backend="onnxruntime",
                                     threads=1)


def test_a_model_that_outputs_inf_for_one_text_answers_the_others_and_errors_that_one(tmp_path, config):
    # Given a model that passes the load check but scores Inf for any text with "jazz"
    clf = IntentClassifier.from_bundle(_nan_bundle(tmp_path / "b", poisoned_word="jazz"), backend="onnxruntime",
                                       threads=1)
    transport = FakeTransport(request_topic=Topics.for_thing(config.thing).request)
    service = IntentService(config, clf, transport).start()
    topics = Topics.for_thing(config.thing)
    try:
        # When requests with and without the word arrive together
        msgs = [transport.deliver({"id": rid, "text": text})
                for rid, text in (("a", "book a table"), ("b", "play jazz"), ("c", "rate this novel"))]
        replies = {r.json()["id"]: r.json() for r in transport.wait_for(3, topic=topics.response)}
        # Then the poisoned one gets an internal error reply, the others their answers, and all are acknowledged
        assert replies["b"]["error"]["code"] == "internal"
        assert "intent" in replies["a"] and "intent" in replies["c"]
        assert sorted(m.payload for m in transport.acked) == sorted(m.payload for m in msgs)
    finally:
        service.drain(5)
        clf.close()


def test_an_update_whose_model_fails_the_warm_up_is_refused(tmp_path, tiny_bundle):
    model = SwappableClassifier(IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1))
    reloader = BundleReloader(model, backend="onnxruntime", threads=1, staging_dir=str(tmp_path),
                              warmup_text="play jazz")
    try:
        with pytest.raises(BackendError, match="non-finite"):
            reloader.load(_nan_bundle(tmp_path / "b", poisoned_word="jazz"))
        assert model.version == "1" and reloader.refused == 1
    finally:
        model.close()


class _Answers:
    """A classifier stand-in whose predictions carry a score JSON cannot hold (a NaN confidence)."""

    name, version = "stand-in", "1"

    def predict_batch(self, texts):  # type: ignore[no-untyped-def]
        from edge_runtime.classifier import Prediction

        return [Prediction("PlayMusic", math.nan, (("PlayMusic", math.nan),)) for _ in texts]


def test_a_reply_that_cannot_be_encoded_becomes_an_internal_error_reply(config):
    transport = FakeTransport(request_topic=Topics.for_thing(config.thing).request)
    service = IntentService(config, _Answers(), transport).start()
    try:
        msg = transport.deliver({"id": "n1", "text": "play jazz"})
        reply = transport.wait_for(1, topic=Topics.for_thing(config.thing).response)[0].json()
        assert reply == {"id": "n1", "error": {"code": "internal", "message": reply["error"]["message"]}}
        assert transport.acked == [msg]
    finally:
        service.drain(5)


def test_an_unexpected_exception_while_taking_a_request_still_answers_and_acknowledges(running, monkeypatch):
    service, transport, topics = running

    def broken(texts, done):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    monkeypatch.setattr(service._batcher, "submit", broken)
    msg = transport.deliver({"id": "x", "text": "play jazz"})
    assert _codes(transport, topics.response) == ["internal"] and transport.acked == [msg]
    assert service.status()["counters"]["errors_by_code"] == {"internal": 1}


def test_a_redelivery_is_skipped_only_for_the_same_client_request(running):
    service, transport, topics = running
    # Given request "1" of client A answered on A's reply topic
    a, b = topics.response + "/a", topics.response + "/b"
    transport.deliver({"id": "1", "text": "play jazz"}, response_topic=a, correlation_data=b"A")
    transport.wait_for(1, topic=a)
    # When client B's request with the same id arrives as a redelivery (DUP), Then B is answered too
    transport.deliver({"id": "1", "text": "book a table"}, response_topic=b, correlation_data=b"B", duplicate=True)
    assert len(transport.wait_for(1, topic=b)) == 1
    # and a redelivery with A's own correlation data but another reply topic is another request: answered
    transport.deliver({"id": "1", "text": "play jazz"}, response_topic=b, correlation_data=b"A", duplicate=True)
    assert len(transport.wait_for(2, topic=b)) == 2
    # When A's own request is redelivered, Then it is acknowledged and not answered again
    dup = transport.deliver({"id": "1", "text": "play jazz"}, response_topic=a, correlation_data=b"A", duplicate=True)
    time.sleep(0.2)
    assert len(transport.on(a)) == 1 and dup in transport.acked
    assert service.status()["counters"]["duplicates_skipped"] == 1


def test_a_retained_request_is_acknowledged_counted_and_not_answered(running):
    service, transport, topics = running
    msg = transport.deliver({"id": "old", "text": "turn the oven on"}, retain=True)
    transport.deliver({"id": "new", "text": "play jazz"})
    assert [r.json()["id"] for r in transport.wait_for(1, topic=topics.response)] == ["new"]
    time.sleep(0.1)
    assert len(transport.on(topics.response)) == 1 and msg in transport.acked
    assert service.status()["counters"]["retained_ignored"] == 1


def test_requests_older_than_the_configured_age_are_not_answered(clf, tiny_bundle):
    cfg = make_config(tiny_bundle[0].root, max_request_age_s=60.0, status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    transport = FakeTransport(request_topic=topics.request)
    service = IntentService(cfg, clf, transport).start()
    try:
        stale = transport.deliver({"id": "stale", "text": "play jazz", "ts": time.time() - 3600})
        transport.deliver({"id": "fresh", "text": "play jazz", "ts": time.time()})
        transport.deliver({"id": "untimed", "text": "play jazz"})
        transport.deliver({"id": "bad-ts", "text": "play jazz", "ts": "yesterday"})
        replies = {r.json()["id"]: r.json() for r in transport.wait_for(3, topic=topics.response)}
        assert set(replies) == {"fresh", "untimed", "bad-ts"} and replies["bad-ts"]["error"]["code"] == "bad_request"
        assert stale in transport.acked and service.status()["counters"]["expired"] == 1
    finally:
        service.drain(5)
