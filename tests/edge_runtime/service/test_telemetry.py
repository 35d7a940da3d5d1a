"""Telemetry from the running service: windows, drift alerts, privacy by default, store and forward."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_runtime import IntentClassifier
from edge_runtime.service.config import from_sources
from edge_runtime.service.protocol import Topics
from edge_runtime.service.service import IntentService
from edge_runtime.service.telemetry import TelemetryOptions, TelemetryPublisher
from edge_runtime.service.transports.fake import FakeTransport
from tests.edge_runtime.service.conftest import make_config
from tests.fleet.bundles import other_domain_texts, reference_bundle, snips_texts


@pytest.fixture(scope="module")
def ref_clf(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = reference_bundle(tmp_path_factory.mktemp("ref") / "bundle")
    with IntentClassifier.from_bundle(root, backend="onnxruntime", threads=1) as c:
        yield c


class OfflineFake(FakeTransport):
    """A fake transport whose connection can be cut (``connected`` False) like the MQTT one."""

    def __init__(self, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kw)
        self.connected = True


def _run(clf, tmp_path: Path, texts: list[str], *, transport=None, batch: int = 16, **options):  # type: ignore[no-untyped-def]
    """Serve ``texts`` through a service with a telemetry publisher; return (transport, publisher) (publisher open)."""
    cfg = make_config(clf.bundle.root, status_interval_s=3600.0)
    transport = transport or FakeTransport(request_topic=Topics.for_thing(cfg.thing).request)
    opts = TelemetryOptions(thing=cfg.thing, interval_s=3600.0, spool_path=str(tmp_path / "spool.sqlite"), seed=1,
                            **options)
    publisher = TelemetryPublisher(opts, clf, transport)
    service = IntentService(cfg, clf, transport, observer=publisher).start()
    for i in range(0, len(texts), batch):
        transport.deliver({"id": f"r{i}", "texts": texts[i:i + batch]})
    transport.wait_for((len(texts) + batch - 1) // batch, topic=service.topics.response)
    deadline = time.monotonic() + 5
    while publisher.observed < len(texts) and time.monotonic() < deadline:
        time.sleep(0.005)
    publisher.service = service  # closed by _close
    return transport, publisher


def _close(publisher) -> None:  # type: ignore[no-untyped-def]
    """Last window into the spool and out, then drain the service (which closes the transport)."""
    publisher.close()
    publisher.service.drain(2)


def _telemetry(transport: FakeTransport, topic: str, kind: str | None = None) -> list[dict]:
    bodies = [p.json() for p in transport.on(topic)]
    return [b for b in bodies if kind is None or b["type"] == kind]


def test_a_window_reports_counts_histograms_latency_rss_and_model(ref_clf, tmp_path):
    # Given a service with a telemetry publisher, When 40 requests are answered and the window closes
    texts = snips_texts("test", 40)
    transport, publisher = _run(ref_clf, tmp_path, texts, batch=1)
    body = publisher.publish_window()
    _close(publisher)
    # Then the window went out on dt/intents/<thing>/telemetry with what the issue asks for
    sent = _telemetry(transport, publisher.topic, "telemetry")
    assert sent and sent[0] == json.loads(json.dumps(body))
    assert body["window"]["requests"] == 40 and sum(body["intents"].values()) == 40
    assert sum(body["confidence_histogram"]["counts"]) == 40 and sum(body["length_histogram"]["counts"]) == 40
    assert 0.0 <= body["low_confidence_rate"] <= 1.0 and 0.0 <= body["unknown_token_rate"] <= 1.0
    assert body["latency_ms"]["p95"] >= body["latency_ms"]["p50"] > 0
    assert body["rss_mb"] > 0 and body["model"] == {"name": "tiny", "version": "1"}
    assert body["spool"]["dropped"] == 0 and body["sampling"] is False
    assert publisher.topic == f"dt/intents/{publisher.options.thing}/telemetry"


def test_raw_texts_never_leave_the_device_unless_sampling_is_enabled(ref_clf, tmp_path):
    secret = "book a table at the secret place for two"
    # Given the default configuration (sampling off), When a text is served and telemetry published
    transport, publisher = _run(ref_clf, tmp_path / "a", [secret] * 3)
    _close(publisher)
    # Then no published byte carries it
    assert transport.on(publisher.topic) and all(b"secret" not in p.payload for p in transport.published
                                                 if p.topic == publisher.topic)
    # Given sampling at 100 %, Then the texts go out with the device's outputs in a "samples" message
    transport, publisher = _run(ref_clf, tmp_path / "b", [secret] * 3, sample_rate=1.0)
    _close(publisher)
    samples = _telemetry(transport, publisher.topic, "samples")[0]["samples"]
    assert [s["text"] for s in samples] == [secret] * 3 and {"intent", "confidence", "top"} <= set(samples[0])


def test_snips_test_texts_raise_no_drift_alert_and_another_domain_does(ref_clf, tmp_path):
    # Given a bundle whose reference statistics were measured on SNIPS validation texts
    assert ref_clf.bundle.manifest.reference["n"] == 700
    # When the SNIPS test texts are served, Then the window is judged and no alert is published
    transport, publisher = _run(ref_clf, tmp_path / "snips", snips_texts("test", 300))
    calm = publisher.publish_window()
    _close(publisher)
    assert calm["drift"]["judged"] and calm["drift"]["alerts"] == []
    assert _telemetry(transport, publisher.topic, "drift_alert") == []
    # When texts from another domain are served, Then a drift alert is published beside the window
    transport, publisher = _run(ref_clf, tmp_path / "shift", other_domain_texts(120))
    publisher.publish_window()
    _close(publisher)
    alerts = _telemetry(transport, publisher.topic, "drift_alert")
    assert len(alerts) == 1
    assert {"length_histogram", "unknown_token_rate"} <= {a["signal"] for a in alerts[0]["alerts"]}


def test_while_offline_telemetry_is_spooled_bounded_and_delivered_in_order_on_reconnect(ref_clf, tmp_path):
    # Given a transport that lost its connection and a spool bounded at 3 messages
    cfg = make_config(ref_clf.bundle.root)
    transport = OfflineFake(request_topic=Topics.for_thing(cfg.thing).request)
    transport.connected = False
    opts = TelemetryOptions(thing=cfg.thing, interval_s=3600.0, spool_path=str(tmp_path / "s.sqlite"),
                            spool_max_messages=3)
    publisher = TelemetryPublisher(opts, ref_clf, transport)
    # When 5 windows close while offline, Then nothing is sent and the oldest 2 are dropped (and counted)
    for _ in range(5):
        publisher.publish_window()
        assert publisher.flush() == 0
    assert transport.published == [] and publisher.spool.pending == 3 and publisher.spool.dropped == 2
    # When the connection is back, Then the 3 kept windows go out in order, and the next one reports the drop
    transport.connected = True
    assert publisher.flush() == 3
    publisher.publish_window()
    publisher.flush()
    bodies = _telemetry(transport, publisher.topic, "telemetry")
    assert [b["seq"] for b in bodies] == [3, 4, 5, 6]
    assert bodies[-1]["spool"]["dropped"] == 2 and publisher.spool.pending == 0
    publisher.close()


def test_a_failed_publish_keeps_the_message_for_the_next_flush_and_a_restart_delivers_it(ref_clf, tmp_path):
    # Given a publish that fails (broker gone mid-flight)
    cfg = make_config(ref_clf.bundle.root)
    transport = FakeTransport()
    opts = TelemetryOptions(thing=cfg.thing, interval_s=3600.0, spool_path=str(tmp_path / "s.sqlite"))
    publisher = TelemetryPublisher(opts, ref_clf, transport)
    transport.fail_publish = 1
    publisher.publish_window()
    assert publisher.flush() == 0 and publisher.spool.pending == 1
    publisher.spool.close()
    # When the service restarts on the same spool, Then the message is delivered first
    publisher = TelemetryPublisher(opts, ref_clf, transport)
    publisher.publish_window()
    assert publisher.flush() == 2
    assert [b["seq"] for b in _telemetry(transport, publisher.topic)] == [1, 1]
    publisher.close()


def test_the_background_thread_publishes_every_interval(ref_clf, tmp_path):
    cfg = make_config(ref_clf.bundle.root)
    transport = FakeTransport()
    opts = TelemetryOptions(thing=cfg.thing, interval_s=0.1, spool_path=str(tmp_path / "s.sqlite"))
    with TelemetryPublisher(opts, ref_clf, transport) as publisher:
        transport.wait_for(3, topic=publisher.topic, timeout=5)
    seqs = [b["seq"] for b in _telemetry(transport, publisher.topic)]
    assert seqs == sorted(seqs) and len(seqs) >= 3


def test_serve_takes_telemetry_settings_from_flags_env_and_file(tmp_path):
    from edge_runtime.cli import build_parser
    from edge_runtime.service.config import flags_from_namespace

    ns = build_parser().parse_args(["serve", "--bundle", "b", "--thing", "t", "--telemetry-interval", "5",
                                    "--sample-rate", "0.1", "--spool-path", str(tmp_path / "q.sqlite")])
    cfg = from_sources(flags_from_namespace(ns), env={"EDGE_INTENTS_DRIFT_PSI": "0.4"})
    assert (cfg.telemetry_interval, cfg.sample_rate, cfg.drift_psi) == (5.0, 0.1, 0.4)
    opts = TelemetryOptions.from_config(cfg)
    assert opts.spool_path == str(tmp_path / "q.sqlite") and opts.thresholds.psi == 0.4
    # privacy by default
    assert from_sources({"bundle": "b", "thing": "t"}, env={}).sample_rate == 0.0
    with pytest.raises(ValueError, match="sample_rate"):
        from_sources({"bundle": "b", "thing": "t", "sample_rate": "2"}, env={})


def test_greengrass_component_configuration_sets_telemetry_and_shadow():
    cfg = from_sources({"bundle": "b", "thing": "t", "transport": "ipc"}, env={},
                       component={"TelemetryInterval": 30, "SpoolPath": "/greengrass/v2/work/app/spool.sqlite",
                                  "SampleRate": 0.05, "DriftMinRequests": 100, "ShadowBundle": "/b2"})
    assert (cfg.telemetry_interval, cfg.spool_path, cfg.sample_rate, cfg.drift_min_requests, cfg.shadow_bundle) == \
        (30.0, "/greengrass/v2/work/app/spool.sqlite", 0.05, 100, "/b2")


def test_after_a_model_swap_windows_report_the_new_version(ref_clf, tiny_bundle, tmp_path):
    transport = FakeTransport()
    opts = TelemetryOptions(thing="swap-pi", interval_s=3600.0, spool_path=str(tmp_path / "s.sqlite"))
    publisher = TelemetryPublisher(opts, ref_clf, transport)
    with IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1) as other:
        publisher.set_model(other)
    publisher.publish_window()
    publisher.flush()
    publisher.close()
    bodies = _telemetry(transport, publisher.topic, "telemetry")
    assert [b["model"]["version"] for b in bodies][:2] == ["1", "1"] and bodies[1]["drift"]["judged"] is False
