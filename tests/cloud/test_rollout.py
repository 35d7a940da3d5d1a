"""``python -m cloud.rollout``: canary first, gates on its telemetry, fleet groups or rollback; Greengrass offline."""

from __future__ import annotations

import json
import time

import pytest

from cloud.aws.greengrass import GreengrassBackend
from cloud.rollout import GateResult, Gates, Rollout, RolloutError, RolloutPlan, judge, main

MODEL = "com.slmintents.IntentModel"


def _window(thing: str, version: str, *, requests: int = 60, p95: float = 20.0, errors: dict | None = None,
            ts: float | None = None) -> dict:
    return {"type": "telemetry", "thing": thing, "ts": ts or time.time() + 1, "model": {"name": "m", "version": version},
            "window": {"requests": requests, "errors": errors or {}}, "latency_ms": {"p50": p95 / 2, "p95": p95}}


def _alert(thing: str, version: str) -> dict:
    return {"type": "drift_alert", "thing": thing, "ts": time.time() + 1, "model": {"version": version},
            "alerts": [{"signal": "length_histogram", "metric": "psi", "value": 1.2, "threshold": 0.25}]}


def test_gates_pass_fail_and_wait_on_the_new_versions_canary_telemetry():
    gates = Gates(min_requests=100, max_error_rate=0.01, max_latency_p95_ms=50, max_drift_alerts=0)
    good = [_window("c1", "2"), _window("c2", "2"), _window("f1", "2", p95=900)]  # f1 is not in the canary
    assert judge(good, gates, version="2", things=["c1", "c2"]).verdict == "pass"
    assert judge(good[:1], gates, version="2", things=["c1", "c2"]).verdict == "wait"
    slow = good + [_window("c1", "2", p95=80)]
    failing = {c["gate"] for c in judge(slow, gates, version="2", things=["c1"]).checks if not c["passed"]}
    assert failing == {"max_latency_p95_ms"}
    drifting = judge(good + [_alert("c2", "2")], gates, version="2", things=["c1", "c2"])
    assert drifting.verdict == "fail"
    erroring = judge([_window("c1", "2", requests=100, errors={"internal": 5, "bad_request": 50})], gates, version="2")
    assert erroring.verdict == "fail" and erroring.checks[0]["value"] == round(5 / 105, 4)
    # the old version's windows do not count
    assert judge([_window("c1", "1", requests=500)], gates, version="2").verdict == "wait"


def test_the_shadow_agreement_gate_reads_the_candidates_shadow_messages():
    gates = Gates(min_requests=10, min_shadow_agreement=0.9)
    shadow = {"type": "shadow", "thing": "c1", "ts": time.time() + 1, "candidate": {"version": "2"},
              "compared": 100, "agreed": 80}
    result = judge([_window("c1", "2"), shadow], gates, version="2")
    assert result.verdict == "fail" and result.checks[-1]["value"] == 0.8
    assert judge([_window("c1", "2")], gates, version="2").verdict == "wait"  # no shadow data yet


class FakeBackend:
    def __init__(self) -> None:
        self.running = {"canary": {MODEL: "1"}, "fleet-a": {MODEL: "1"}, "fleet-b": {MODEL: "1"}}
        self.calls: list[tuple] = []

    def current(self, group):  # type: ignore[no-untyped-def]
        return dict(self.running[group])

    def deploy(self, group, components, *, stage):  # type: ignore[no-untyped-def]
        self.calls.append(("deploy", group, dict(components), stage))
        self.running[group] = dict(components)
        return {"deployment_id": f"d-{len(self.calls)}"}

    def status(self, deployment):  # type: ignore[no-untyped-def]
        return {"state": "COMPLETED"}

    def cancel(self, deployment):  # type: ignore[no-untyped-def]
        self.calls.append(("cancel", deployment["deployment_id"]))

    def things(self, group):  # type: ignore[no-untyped-def]
        return {"canary": ["c1"]}.get(group, [])


def _plan(tmp_path, **gates):  # type: ignore[no-untyped-def]
    plan = RolloutPlan("2", {MODEL: "2"}, "canary", ("fleet-a", "fleet-b"), Gates(min_requests=50, **gates))
    Rollout.create(plan, tmp_path / "rollout.json")
    return tmp_path / "rollout.json"


def test_a_passing_canary_is_promoted_to_each_fleet_group_in_order(tmp_path):
    backend = FakeBackend()
    rollout = Rollout(_plan(tmp_path), backend)
    rollout.start()
    assert rollout.promote([_window("c1", "2", requests=10)])["status"] == "canary"  # not enough data: wait
    assert rollout.promote([_window("c1", "2")])["status"] == "promoted"
    assert [c[1] for c in backend.calls] == ["canary", "fleet-a", "fleet-b"]
    assert all(v == {MODEL: "2"} for v in backend.running.values())
    with pytest.raises(RolloutError, match="promoted"):
        Rollout(tmp_path / "rollout.json", backend).abort()


def test_a_failing_canary_is_rolled_back_and_the_fleet_never_gets_it(tmp_path):
    backend = FakeBackend()
    rollout = Rollout(_plan(tmp_path), backend)
    rollout.start()
    result = rollout.promote([_window("c1", "2"), _alert("c1", "2")])
    assert result["status"] == "rolled_back" and result["gates"]["verdict"] == "fail"
    assert backend.running == {"canary": {MODEL: "1"}, "fleet-a": {MODEL: "1"}, "fleet-b": {MODEL: "1"}}
    state = json.loads((tmp_path / "rollout.json").read_text())
    assert [h["event"] for h in state["history"]] == ["canary_deployed", "gates_failed"]


def test_abort_cancels_and_restores_the_canary(tmp_path):
    backend = FakeBackend()
    rollout = Rollout(_plan(tmp_path), backend)
    rollout.start()
    assert rollout.abort()["status"] == "aborted"
    assert backend.calls[1] == ("cancel", "d-1") and backend.running["canary"] == {MODEL: "1"}


def test_cli_plan_start_status_promote(tmp_path, capsys):
    state = tmp_path / "r.json"
    gates = tmp_path / "gates.json"
    gates.write_text(json.dumps({"min_requests": 50, "max_latency_p95_ms": 30}))
    assert main(["plan", "--version", "2", "--component", f"{MODEL}=2", "--canary-group", "canary",
                 "--fleet-group", "fleet-a", "--gates", str(gates), "--out", str(state)]) == 0
    backend = FakeBackend()
    assert main(["start", "--state", str(state)], backend=backend) == 0
    tele = tmp_path / "t.jsonl"
    tele.write_text(json.dumps(_window("c1", "2", p95=45)) + "\n")
    capsys.readouterr()
    assert main(["status", "--state", str(state), "--telemetry", str(tele)], backend=backend) == 0
    assert json.loads(capsys.readouterr().out)["gates"]["verdict"] == "fail"
    assert main(["promote", "--state", str(state), "--telemetry", str(tele)], backend=backend) == 1
    assert main(["promote", "--state", str(state), "--telemetry", str(tele)], backend=backend) == 2  # not canary now


# -- Greengrass, offline: every greengrassv2 / iot call stubbed with its exact parameters -----------------------------
REGION = "eu-west-1"
ARN = {g: f"arn:aws:iot:{REGION}:123456789012:thinggroup/{g}" for g in ("slm-intents-canary", "slm-intents-fleet")}


@pytest.fixture()
def clients():  # type: ignore[no-untyped-def]
    import boto3
    from botocore.stub import Stubber

    kw = {"region_name": REGION, "aws_access_key_id": "x", "aws_secret_access_key": "y"}
    gg, iot = boto3.client("greengrassv2", **kw), boto3.client("iot", **kw)
    with Stubber(gg) as gg_stub, Stubber(iot) as iot_stub:
        yield gg, iot, gg_stub, iot_stub
        gg_stub.assert_no_pending_responses()
        iot_stub.assert_no_pending_responses()


def _group(iot_stub, group: str) -> None:  # type: ignore[no-untyped-def]
    iot_stub.add_response("describe_thing_group", {"thingGroupName": group, "thingGroupArn": ARN[group]},
                          {"thingGroupName": group})


def _deployment(gg_stub, group: str, versions: dict, dep_id: str, job: str, stage: str) -> None:  # type: ignore[no-untyped-def]
    from botocore.stub import ANY

    from cloud.aws.greengrass import RolloutConfig

    cfg = RolloutConfig.for_stage(stage)
    gg_stub.add_response("create_deployment", {"deploymentId": dep_id, "iotJobId": job}, {
        "targetArn": ARN[group], "deploymentName": f"slm-intents-{group}",
        "components": {k: {"componentVersion": v} for k, v in versions.items()},
        "deploymentPolicies": cfg.deployment_policies(), "iotJobConfiguration": cfg.iot_job_configuration(),
        "tags": ANY})


def _start(gg, iot, gg_stub, iot_stub, tmp_path):  # type: ignore[no-untyped-def]
    _group(iot_stub, "slm-intents-canary")
    gg_stub.add_response("list_deployments", {"deployments": [{"deploymentId": "old"}]},
                         {"targetArn": ARN["slm-intents-canary"], "historyFilter": "LATEST_ONLY"})
    gg_stub.add_response("get_deployment", {"deploymentId": "old", "components": {MODEL: {"componentVersion": "1.0.2"}}},
                         {"deploymentId": "old"})
    _group(iot_stub, "slm-intents-canary")
    _deployment(gg_stub, "slm-intents-canary", {MODEL: "1.0.3"}, "d-canary", "job-canary", "canary")
    plan = RolloutPlan("1.0.3", {MODEL: "1.0.3"}, gates=Gates(min_requests=50))
    Rollout.create(plan, tmp_path / "r.json")
    rollout = Rollout(tmp_path / "r.json", GreengrassBackend(gg, iot))
    rollout.start()
    iot_stub.add_response("list_things_in_thing_group", {"things": ["pi-canary-1"]},
                          {"thingGroupName": "slm-intents-canary"})
    return rollout


def test_greengrass_canary_then_fleet_with_rollback_policy_and_abort_criteria(clients, tmp_path):
    gg, iot, gg_stub, iot_stub = clients
    rollout = _start(gg, iot, gg_stub, iot_stub, tmp_path)
    # promote: Greengrass' own canary check (versions + job), then the fleet deployment
    _group(iot_stub, "slm-intents-canary")
    gg_stub.add_response("list_deployments", {"deployments": [{"deploymentId": "d-canary"}]},
                         {"targetArn": ARN["slm-intents-canary"], "historyFilter": "LATEST_ONLY"})
    gg_stub.add_response("get_deployment", {"deploymentId": "d-canary", "iotJobId": "job-canary",
                                            "deploymentStatus": "COMPLETED",
                                            "components": {MODEL: {"componentVersion": "1.0.3"}}},
                         {"deploymentId": "d-canary"})
    iot_stub.add_response("describe_job", {"job": {"jobId": "job-canary", "jobProcessDetails": {
        "numberOfSucceededThings": 1}}}, {"jobId": "job-canary"})
    _group(iot_stub, "slm-intents-fleet")
    _deployment(gg_stub, "slm-intents-fleet", {MODEL: "1.0.3"}, "d-fleet", "job-fleet", "fleet")
    result = rollout.promote([_window("pi-canary-1", "1.0.3"), _window("pi-fleet-9", "1.0.3", p95=999)])
    assert result["status"] == "promoted"
    assert rollout.state["deployments"]["slm-intents-fleet"]["deployment_id"] == "d-fleet"


def test_greengrass_failed_gate_redeploys_the_previous_versions_and_abort_cancels(clients, tmp_path):
    gg, iot, gg_stub, iot_stub = clients
    rollout = _start(gg, iot, gg_stub, iot_stub, tmp_path)
    _group(iot_stub, "slm-intents-canary")
    _deployment(gg_stub, "slm-intents-canary", {MODEL: "1.0.2"}, "d-back", "job-back", "canary")
    result = rollout.promote([_window("pi-canary-1", "1.0.3", p95=500)])
    assert result["status"] == "rolled_back" and rollout.state["rollback"]["components"] == {MODEL: "1.0.2"}
    # a second rollout aborted mid-canary: cancel_deployment, then the previous versions again
    (tmp_path / "b").mkdir()
    rollout = _start(gg, iot, gg_stub, iot_stub, tmp_path / "b")
    gg_stub.add_response("cancel_deployment", {"message": "canceled"}, {"deploymentId": "d-canary"})
    _group(iot_stub, "slm-intents-canary")
    _deployment(gg_stub, "slm-intents-canary", {MODEL: "1.0.2"}, "d-back2", "job-back2", "canary")
    # the stubbed list_things_in_thing_group of _start is for a verdict; abort does not judge, so use it up here
    assert rollout.verdict([]).verdict == "wait"
    assert rollout.abort()["status"] == "aborted"


def test_gate_result_is_json_ready():
    r = GateResult("pass", ({"gate": "g", "value": 1, "limit": 2, "passed": True},), 5, ("a",))
    assert json.loads(json.dumps(r.to_dict()))["verdict"] == "pass"


def test_windows_too_small_for_the_drift_monitor_make_the_verdict_wait():
    small = [{**_window("c1", "2", requests=15), "drift": {"judged": False}} for _ in range(5)]
    assert judge(small, Gates(min_requests=50), version="2").verdict == "wait"
    judged = small + [{**_window("c1", "2", requests=60), "drift": {"judged": True}}]
    assert judge(judged, Gates(min_requests=50), version="2").verdict == "pass"
