"""Telemetry reaches the cloud: the IoT rule's S3 layout, read back (moto S3), decides the canary.

The messages are the device's own: a real IntentService with its TelemetryPublisher answers requests on a fake
transport, and its payloads are stored the way infra/telemetry.yaml's rule stores them. moto does not run IoT
rules: that the rules engine fills ``${topic(3)}`` and ``${parse_time(...)}`` as documented
(docs.aws.amazon.com/iot/latest/developerguide/iot-substitution-templates.html) is what a real account proves.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

import pytest

from tests.cloud.aws.conftest import BUCKET, REGION
from tests.conftest import REPO

URI = f"s3://{BUCKET}/slm-intents/telemetry/"


def rule_key(thing: str, received_s: float) -> str:
    """The key the rule writes for a message of ``thing`` received at ``received_s`` (cloud.aws.telemetry.KEY_TEMPLATE)."""
    day = datetime.fromtimestamp(received_s, timezone.utc).strftime("%Y/%m/%d")
    return f"slm-intents/telemetry/{thing}/{day}/{int(received_s * 1000)}-{uuid.uuid4()}.json"


def device_messages(tmp_path, thing: str, n_requests: int = 80) -> list[bytes]:
    """What a device publishes on dt/intents/<thing>/telemetry after answering ``n_requests`` requests."""
    from edge_runtime import IntentClassifier
    from edge_runtime.service.protocol import Topics
    from edge_runtime.service.service import IntentService
    from edge_runtime.service.telemetry import TelemetryOptions, TelemetryPublisher
    from edge_runtime.service.transports.fake import FakeTransport
    from tests.edge_runtime.service.conftest import make_config
    from tests.fleet.bundles import reference_bundle, snips_texts

    root = reference_bundle(tmp_path / "bundle", version="2")
    with IntentClassifier.from_bundle(root, backend="onnxruntime", threads=1) as clf:
        cfg = make_config(root, thing=thing, status_interval_s=3600.0)
        transport = FakeTransport(request_topic=Topics.for_thing(thing).request)
        publisher = TelemetryPublisher(TelemetryOptions(thing=thing, interval_s=3600.0, seed=1,
                                                        spool_path=str(tmp_path / "spool.sqlite")), clf, transport)
        service = IntentService(cfg, clf, transport, observer=publisher).start()
        texts = snips_texts("test", n_requests)
        for i, text in enumerate(texts):
            transport.deliver({"id": f"r{i}", "text": text})
        transport.wait_for(len(texts), topic=service.topics.response)
        deadline = time.monotonic() + 10
        while publisher.observed < len(texts) and time.monotonic() < deadline:
            time.sleep(0.005)
        publisher.publish_window()
        publisher.close()
        service.drain(2)
    return [p.payload for p in transport.on(Topics.for_thing(thing).telemetry)]


@pytest.fixture(scope="module")
def canary_payloads(tmp_path_factory):
    return device_messages(tmp_path_factory.mktemp("device"), "c1")


def test_the_rule_stores_the_telemetry_topic_under_the_key_the_reader_lists():
    from cfnlint.decode import decode

    from cloud.aws.telemetry import KEY_TEMPLATE
    from edge_runtime.service.protocol import TELEMETRY_TOPIC

    template, matches = decode(str(REPO / "infra" / "telemetry.yaml"))
    assert not matches
    payload = template["Resources"]["TelemetryRule"]["Properties"]["TopicRulePayload"]
    # the device's topic with + for the thing (drift alerts, samples and shadow messages share it)
    assert payload["Sql"] == f"SELECT * FROM '{TELEMETRY_TOPIC.format(thing='+')}'"
    (action,) = payload["Actions"]
    key, _ = action["S3"]["Key"]["Fn::Sub"]
    assert key.replace("${!", "${") == "${Prefix}slm-intents/" + KEY_TEMPLATE
    role = template["Resources"]["TelemetryRuleRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "iot.amazonaws.com"}
    (statement,) = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "s3:PutObject"
    assert all("slm-intents/telemetry" in json.dumps(r) for r in statement["Resource"])
    assert payload["ErrorAction"]["S3"]["RoleArn"] == {"Fn::GetAtt": ["TelemetryRuleRole", "Arn"]}


def test_the_reader_returns_the_canarys_messages_since_the_canary_started(s3_bucket, canary_payloads):
    from cloud.aws.telemetry import load_s3_telemetry

    # Given the canary device's messages stored by the rule, another device's, and one received before the canary
    now = time.time()
    started = now - 600
    for i, payload in enumerate(canary_payloads):
        s3_bucket.put_object(Bucket=BUCKET, Key=rule_key("c1", now - 60 + i), Body=payload)
    other = json.loads(canary_payloads[0]) | {"thing": "f1"}
    s3_bucket.put_object(Bucket=BUCKET, Key=rule_key("f1", now - 30), Body=json.dumps(other).encode())
    old = json.loads(canary_payloads[0]) | {"ts": started - 3600}
    s3_bucket.put_object(Bucket=BUCKET, Key=rule_key("c1", started - 3600), Body=json.dumps(old).encode())
    # When the reader loads the canary's things since the start
    got = load_s3_telemetry(URI, things=["c1"], since=started, client=s3_bucket)
    # Then it has exactly the device's messages, as published
    assert got == [json.loads(p) for p in canary_payloads]
    assert {m["type"] for m in got} >= {"telemetry"} and all(m["thing"] == "c1" for m in got)
    # every thing when none is named; a window in time
    assert len(load_s3_telemetry(URI, since=started, client=s3_bucket)) == len(canary_payloads) + 1
    assert load_s3_telemetry(URI, things=["c1"], since=started, until=started + 1, client=s3_bucket) == []


@pytest.mark.parametrize(("gates", "status", "rc"), [
    ({"min_requests": 50, "max_latency_p95_ms": 10_000.0}, "promoted", 0),
    ({"min_requests": 50, "max_latency_p95_ms": 0.000_1}, "rolled_back", 1),
])
def test_promote_judges_the_canary_from_telemetry_in_s3(s3_bucket, tmp_path, capsys, gates, status, rc):
    from cloud.rollout import Gates, Rollout, RolloutPlan, main
    from tests.cloud.test_rollout import MODEL, FakeBackend

    # Given a canary rollout of version 2 to thing c1, and c1's telemetry of version 2 stored by the rule
    backend = FakeBackend()
    Rollout.create(RolloutPlan("2", {MODEL: "2"}, "canary", ("fleet-a",), Gates(**gates)), tmp_path / "rollout.json")
    Rollout(tmp_path / "rollout.json", backend).start()
    for payload in device_messages(tmp_path, "c1"):  # after the canary started: the gates judge what came since
        msg = json.loads(payload)
        assert msg["model"]["version"] == "2" and msg["thing"] == "c1"
        s3_bucket.put_object(Bucket=BUCKET, Key=rule_key("c1", time.time()), Body=payload)
    # When promote reads it from S3
    code = main(["promote", "--state", str(tmp_path / "rollout.json"), "--telemetry-s3", URI, "--region", REGION],
                backend=backend)
    result = json.loads(capsys.readouterr().out)
    # Then the gates decide: a fast enough canary goes to the fleet, a too slow one is rolled back
    assert (code, result["status"]) == (rc, status)
    assert result["gates"]["requests"] == 80 and result["gates"]["things"] == ["c1"]
    fleet_deployed = ("deploy", "fleet-a", {MODEL: "2"}, "fleet") in backend.calls
    assert fleet_deployed is (status == "promoted")


def test_a_bad_uri_is_a_clear_error(tmp_path, capsys):
    from cloud.aws.telemetry import main

    assert main(["fetch", "bucket/slm-intents/telemetry/"]) == 1
    assert "not an s3:// URI" in capsys.readouterr().err


def test_fetch_writes_json_lines_that_cloud_rollout_and_cloud_shadow_read(s3_bucket, canary_payloads, tmp_path):
    from cloud.aws.telemetry import main
    from cloud.rollout import load_telemetry

    for payload in canary_payloads:
        s3_bucket.put_object(Bucket=BUCKET, Key=rule_key("c1", time.time()), Body=payload)
    out = tmp_path / "telemetry.jsonl"
    assert main(["fetch", URI, "--thing", "c1", "--since", "2000-01-01T00:00", "--out", str(out),
                 "--region", REGION]) == 0
    assert load_telemetry([out]) == [json.loads(p) for p in canary_payloads]
