"""A candidate bundle in shadow on the device: same requests, off the reply path, disagreements published."""

from __future__ import annotations

import time

import pytest

from edge_runtime import IntentClassifier
from edge_runtime.service.protocol import Topics
from edge_runtime.service.runner import fleet_observers
from edge_runtime.service.service import IntentService
from edge_runtime.service.shadow import ShadowRunner
from edge_runtime.service.telemetry import ObserverChain, TelemetryOptions, TelemetryPublisher
from edge_runtime.service.transports.fake import FakeTransport
from tests.conftest import build_tiny_bundle
from tests.edge_runtime.service.conftest import make_config
from tests.fleet.bundles import snips_texts


@pytest.fixture(scope="module")
def candidate_root(tmp_path_factory):  # type: ignore[no-untyped-def]
    bundle, _ = build_tiny_bundle(tmp_path_factory.mktemp("cand") / "bundle", seed=7, version="2")
    return bundle.root


class SlowCandidate:
    """A candidate that takes ``delay`` seconds per call (a heavy model) and counts its calls."""

    def __init__(self, inner, delay: float) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.delay, self.name, self.version = inner, delay, inner.name, "slow"
        self.calls = 0

    def predict_batch(self, texts):  # type: ignore[no-untyped-def]
        self.calls += 1
        time.sleep(self.delay)
        return self.inner.predict_batch(texts)


def test_a_different_candidate_disagreements_are_published_without_texts(clf, candidate_root, tmp_path):
    # Given the serving tiny model and a candidate with other weights in shadow, and telemetry
    cfg = make_config(clf.bundle.root, status_interval_s=3600.0)
    transport = FakeTransport(request_topic=Topics.for_thing(cfg.thing).request)
    with IntentClassifier.from_bundle(candidate_root, backend="onnxruntime", threads=1) as cand:
        shadow = ShadowRunner(cand, serving_model={"name": clf.name, "version": clf.version}).start()
        telemetry = TelemetryPublisher(TelemetryOptions(thing=cfg.thing, interval_s=3600.0,
                                                        spool_path=str(tmp_path / "s.sqlite")),
                                       clf, transport, sources=[shadow])
        service = IntentService(cfg, clf, transport, observer=ObserverChain(telemetry, shadow)).start()
        # When 30 requests are answered
        texts = snips_texts("test", 30)
        for i, text in enumerate(texts):
            transport.deliver({"id": f"r{i}", "text": text})
        transport.wait_for(30, topic=service.topics.response)
        assert shadow.wait_idle(5)
        telemetry.publish_window()
        telemetry.close()
        shadow.close()
        service.drain(2)
    # Then one "shadow" message reports the comparison of every request, its disagreements and no text
    msgs = [p.json() for p in transport.on(telemetry.topic) if p.json()["type"] == "shadow"]
    assert len(msgs) == 1
    m = msgs[0]
    assert m["compared"] == 30 and m["candidate"]["version"] == "2" and m["serving"]["version"] == "1"
    assert m["agreed"] < 30 and sum(m["pairs"].values()) == 30 - m["agreed"]
    assert m["disagreements"] and all("text" not in d for d in m["disagreements"])
    assert m["disagreements"][0]["serving"]["intent"] != m["disagreements"][0]["candidate"]["intent"]
    assert not any(t.encode() in p.payload for p in transport.on(telemetry.topic) for t in texts)


def test_a_slow_candidate_adds_nothing_to_reply_latency_and_overflow_is_counted(clf, tmp_path):
    # Given a candidate that takes 100 ms per request, with room for 2 waiting requests
    cfg = make_config(clf.bundle.root, status_interval_s=3600.0)
    transport = FakeTransport(request_topic=Topics.for_thing(cfg.thing).request)
    slow = SlowCandidate(clf, 0.1)
    shadow = ShadowRunner(slow, serving_model={"name": clf.name, "version": clf.version}, queue_size=2).start()
    service = IntentService(cfg, clf, transport, observer=shadow).start()
    # When 10 requests arrive back to back
    t0 = time.perf_counter()
    for i in range(10):
        transport.deliver({"id": f"r{i}", "text": "play some jazz"})
    replies = transport.wait_for(10, topic=service.topics.response)
    elapsed = time.perf_counter() - t0
    service.drain(2)
    shadow.close()
    # Then all 10 replies came well before the candidate could have answered even 3 of them
    assert elapsed < 0.25, elapsed
    assert max(r.json()["latency_ms"] for r in replies) < 100
    body = shadow.snapshot()
    assert body["compared"] + body["skipped"] == 10 and body["skipped"] >= 5 and body["agreement"] == 1.0


def test_a_failing_candidate_is_counted_and_serving_goes_on(clf):
    class Broken:
        name, version = "broken", "9"

        def predict_batch(self, texts):  # type: ignore[no-untyped-def]
            raise RuntimeError("candidate crashed")

    shadow = ShadowRunner(Broken(), serving_model={"name": "tiny", "version": "1"}).start()
    from edge_runtime.service.protocol import Request

    pred = clf.predict("play jazz")
    for i in range(3):
        shadow.on_reply(Request(f"r{i}", ("play jazz",)), [pred], 1.0)
    assert shadow.wait_idle(5)
    shadow.close()
    assert shadow.snapshot()["failures"] == 3


def test_serve_config_builds_telemetry_and_shadow_and_sampling_puts_texts_in_disagreements(clf, candidate_root, tmp_path):
    # Given a configuration naming a shadow bundle with sampling on
    cfg = make_config(clf.bundle.root, shadow_bundle=str(candidate_root), telemetry_interval=3600.0,
                      spool_path=str(tmp_path / "s.sqlite"), sample_rate=1.0)
    transport = FakeTransport(request_topic=Topics.for_thing(cfg.thing).request)
    observer, parts = fleet_observers(cfg, clf, transport)
    shadow, telemetry = parts
    try:
        assert isinstance(observer, ObserverChain) and isinstance(shadow, ShadowRunner)
        service = IntentService(cfg, clf, transport, observer=observer).start()
        for i, text in enumerate(snips_texts("test", 20)):
            transport.deliver({"id": f"r{i}", "text": text})
        transport.wait_for(20, topic=service.topics.response)
        assert shadow.wait_idle(5)
    finally:
        for part in parts:
            part.close()
        service.drain(2)
    m = [p.json() for p in transport.on(telemetry.topic) if p.json()["type"] == "shadow"][0]
    assert m["texts_included"] and all("text" in d for d in m["disagreements"])


def test_reply_path_unaffected_when_no_shadow_or_telemetry_configured(clf):
    cfg = make_config(clf.bundle.root, telemetry_interval=0)
    observer, parts = fleet_observers(cfg, clf, FakeTransport())
    assert observer is None and parts == []
