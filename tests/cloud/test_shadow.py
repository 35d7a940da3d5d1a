"""``python -m cloud.shadow``: device samples scored against a cloud reference, as JSON, a report and a plot."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from cloud import shadow
from cloud.errors import CloudError
from edge_runtime import IntentClassifier
from edge_runtime.service.protocol import Topics
from edge_runtime.service.service import IntentService
from edge_runtime.service.telemetry import TelemetryOptions, TelemetryPublisher
from edge_runtime.service.transports.fake import FakeTransport
from tests.conftest import build_tiny_bundle
from tests.fleet.bundles import snips_texts


@pytest.fixture(scope="module")
def samples_file(tiny_bundle, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """What a device with sampling at 100 % published for 40 SNIPS test texts, one message per line."""
    tmp = tmp_path_factory.mktemp("samples")
    transport = FakeTransport(request_topic=Topics.for_thing("pi-7").request)
    with IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1) as clf:
        from tests.edge_runtime.service.conftest import make_config

        cfg = make_config(clf.bundle.root, thing="pi-7", status_interval_s=3600.0)
        pub = TelemetryPublisher(TelemetryOptions(thing="pi-7", interval_s=3600.0, spool_path=str(tmp / "s.sqlite"),
                                                  sample_rate=1.0, max_samples=100), clf, transport)
        service = IntentService(cfg, clf, transport, observer=pub).start()
        texts = snips_texts("test", 40)
        for i in range(0, 40, 8):
            transport.deliver({"id": f"r{i}", "texts": texts[i:i + 8]})
        transport.wait_for(5, topic=service.topics.response)
        deadline = time.monotonic() + 5
        while pub.observed < 40 and time.monotonic() < deadline:
            time.sleep(0.005)
        pub.close()
        service.drain(2)
    out = tmp / "samples.jsonl"
    out.write_text("".join(p.payload.decode() + "\n" for p in transport.on(pub.topic)))
    return out


def test_samples_load_from_telemetry_lines_and_other_message_types_are_skipped(samples_file):
    samples = shadow.load_samples([samples_file])
    assert len(samples) == 40 and samples[0]["thing"] == "pi-7" and samples[0]["model"]["version"] == "1"
    with pytest.raises(CloudError, match="no samples"):
        shadow.load_samples([samples_file.parent / "missing.jsonl"])


def test_the_same_model_as_reference_agrees_fully(samples_file, tiny_bundle):
    result = shadow.compare(shadow.load_samples([samples_file]), shadow.bundle_scorer(tiny_bundle[0].root))
    assert result["agreement"] == 1.0 and result["pairs"] == {}
    assert abs(result["confidence_delta"]["mean"]) < 1e-4 and result["by_thing"]["pi-7"]["n"] == 40


def test_cli_compare_reports_disagreement_per_class_with_json_report_and_plot(samples_file, tmp_path, capsys):
    # Given a reference model that differs from the device's
    other, _ = build_tiny_bundle(tmp_path / "ref", seed=5)
    out = tmp_path / "shadow"
    # When compare runs with an agreement gate of 100 %
    code = shadow.main(["compare", "--samples", str(samples_file), "--bundle", str(other.root), "--out", str(out),
                        "--min-agreement", "1.0"])
    # Then it fails the gate and writes JSON, report and plot
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and summary["n"] == 40 and summary["agreement"] < 1.0
    full = json.loads((out / "shadow.json").read_text())
    assert sum(v["disagree"] for v in full["per_class"].values()) == sum(full["pairs"].values())
    assert full["examples"] and "| reference label |" in (out / "report.md").read_text()
    assert (out / "shadow.png").read_bytes()[:4] == b"\x89PNG"


def test_the_endpoint_reference_uses_sagemaker_runtime(samples_file):
    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    samples = shadow.load_samples([samples_file])[:3]
    client = boto3.client("sagemaker-runtime", region_name="eu-west-1", aws_access_key_id="x",
                          aws_secret_access_key="y")
    body = json.dumps([{"label": s["intent"], "score": 0.9} for s in samples]).encode()
    with Stubber(client) as stub:
        stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(body), len(body)),
                                              "ContentType": "application/json"},
                          {"EndpointName": "intents-fp32", "ContentType": "application/json",
                           "Accept": "application/json",
                           "Body": json.dumps({"inputs": [s["text"] for s in samples]}).encode()})
        result = shadow.compare(samples, shadow.endpoint_scorer("intents-fp32", client=client))
        stub.assert_no_pending_responses()
    assert result["agreement"] == 1.0 and result["n"] == 3


def test_compare_without_samples_says_sampling_is_off(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"type": "telemetry", "seq": 1}) + "\n")
    assert shadow.main(["compare", "--samples", str(tmp_path / "t.jsonl"), "--bundle", "x", "--out",
                        str(tmp_path / "o")]) == 2


def test_collect_gathers_samples_messages_from_a_local_broker(tmp_path):
    import threading

    from tests.edge_runtime.service.broker import MOSQUITTO, Client, Mosquitto

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    out = tmp_path / "samples.jsonl"
    with Mosquitto(tmp_path / "mq") as mq:
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(shadow.collect(mq.url, out, seconds=10, max_messages=1)))
        t.start()
        with Client(mq.url, "device", []) as device:
            deadline = time.monotonic() + 10
            while t.is_alive() and time.monotonic() < deadline:
                # a telemetry window (skipped) and a samples message (kept), until the collector has one
                device.publish("dt/intents/pi-1/telemetry", {"type": "telemetry", "seq": 1})
                device.publish("dt/intents/pi-1/telemetry", {"type": "samples", "thing": "pi-1", "model": {},
                                                             "samples": [{"text": "play jazz", "intent": "PlayMusic",
                                                                          "confidence": 0.9}]})
                t.join(0.2)
    assert result == [1]
    assert shadow.load_samples([out])[0]["text"] == "play jazz"


def test_cli_defaults_live_in_the_store_not_the_working_directory(samples_file, tiny_bundle, tmp_path, monkeypatch,
                                                                  capsys):
    # Given an empty working directory whose store's shadow/ holds the collected samples (collect's default)
    monkeypatch.chdir(tmp_path)
    default = tmp_path / ".store" / "slm-intents" / "shadow"
    default.mkdir(parents=True)
    (default / "samples.jsonl").write_bytes(samples_file.read_bytes())
    # When compare runs with neither --samples nor --out
    assert shadow.main(["compare", "--bundle", str(tiny_bundle[0].root)]) == 0
    # Then it read the store's samples and wrote its report next to them, and nothing else appeared here
    assert json.loads(capsys.readouterr().out)["n"] == 40
    assert (default / "report" / "shadow.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store"]


def _checkpoint(folder: Path) -> Path:
    """A folder that reads as a checkpoint (what ``--model`` resolution looks for: its ``config.json``)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_model_reference_is_the_teacher_of_a_run_folder(tmp_path):
    # Given a store run folder with the teacher (checkpoint/) and the distilled student (student/)
    run = tmp_path / "models" / "20260101T000000Z-abc123"
    teacher, student = _checkpoint(run / "checkpoint"), _checkpoint(run / "student")
    # Then the run folder reads as its teacher, and a checkpoint folder as itself
    assert shadow.reference_checkpoint(run) == teacher
    assert shadow.reference_checkpoint(student) == student
    with pytest.raises(CloudError, match="neither a checkpoint folder"):
        shadow.reference_checkpoint(tmp_path / "models")


def test_cli_compare_with_a_run_folder_scores_with_its_teacher(samples_file, tmp_path, monkeypatch, capsys):
    # Given a run folder of the store, When compare runs with --model at it
    run = tmp_path / "models" / "run-1"
    _checkpoint(run / "checkpoint")
    _checkpoint(run / "student")
    loaded: list[Path] = []

    def scorer_of(model_dir, **_):  # the device's own answers: stands in for the FP32 checkpoint's
        loaded.append(Path(model_dir))
        by_text = {s["text"]: (s["intent"], float(s["confidence"])) for s in shadow.load_samples([samples_file])}
        return lambda texts: [by_text[t] for t in texts]

    monkeypatch.setattr(shadow, "model_scorer", scorer_of)
    out = tmp_path / "shadow"
    assert shadow.main(["compare", "--samples", str(samples_file), "--model", str(run), "--out", str(out)]) == 0
    # Then the teacher's checkpoint is the reference, and the report says so
    assert loaded == [run / "checkpoint"]
    assert json.loads(capsys.readouterr().out)["agreement"] == 1.0
    assert json.loads((out / "shadow.json").read_text())["reference"] == f"FP32 model {run / 'checkpoint'}"
    # and a folder that is neither is a usage error, before anything is loaded
    assert shadow.main(["compare", "--samples", str(samples_file), "--model", str(tmp_path), "--out",
                        str(out)]) == 2
    assert loaded == [run / "checkpoint"] and "neither a checkpoint folder" in capsys.readouterr().err
