"""The whole account path offline: S3 step outputs -> SageMaker registry -> approval -> Greengrass components ->
publish -> deployment request; the endpoint of the same version created and deleted; telemetry in S3 -> a rollout
gate decision.

moto stands in for S3, the SageMaker Model Registry, SageMaker endpoints and IoT thing groups. moto has no
Greengrass v2 (only v1's ``greengrass``), so its client is a botocore Stubber, which checks every request against
botocore's service model (parameter names, types, required members) and here also the exact values. What stays
unproven offline: that Greengrass accepts the recipe (``DEPLOYABLE``), that devices fetch the S3 artifacts with
the token exchange role and check their digests, and that the IoT job rolls out as configured.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest

from tests.cloud.aws.conftest import BUCKET, REGION, ROLE_ARN, stub
from tests.cloud.aws.test_endpoint import _environment
from tests.cloud.aws.test_telemetry import URI as TELEMETRY_URI, device_messages, rule_key
from tests.greengrass.conftest import wheel  # noqa: F401  (the session-built slm_intents wheel)

GROUP = "slm-intents-snips"
MODEL = "com.slmintents.IntentModel"
APP = "com.slmintents.IntentService"
COMPONENTS = f"arn:aws:greengrass:{REGION}:123456789012:components"


def _sha256(data: bytes) -> tuple[str, str]:
    digest = hashlib.sha256(data).digest()
    return base64.b64encode(digest).decode(), digest.hex()


def _register_like_the_pipeline(sm) -> int:
    """RegisterModel: PendingManualApproval in Staging, with the handler's environment and metrics metadata."""
    if not sm.list_model_package_groups()["ModelPackageGroupSummaryList"]:
        sm.create_model_package_group(ModelPackageGroupName=GROUP)
    arn = sm.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
        ModelLifeCycle={"Stage": "Staging", "StageStatus": "Registered"},
        CustomerMetadataProperties={"metrics.int8.macro_f1": "0.97", "lineage.run_id": "exec-1"},
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/slm-intents/models/j/model.tar.gz",
                            "Environment": _environment()}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    return int(arn.rsplit("/", 1)[-1])


def _compile_edge_to_s3(candidate, tmp_path, s3, version: int) -> None:
    """CompileEdge as the pipeline runs it (NeoCompile=false), then SageMaker's upload of its output folder."""
    from cloud.aws.s3store import S3Store
    from cloud.aws.steps import run_step

    out = tmp_path / "processing-output-edge"
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/{version}"
    assert run_step("compile-edge", ["--candidate", str(candidate), "--onnx", str(tmp_path / "no-onnx"),
                                     "--evaluation", str(tmp_path / "no-eval"), "--out", str(out),
                                     "--model-package-arn", arn, "--bucket", BUCKET, "--role-arn", ROLE_ARN,
                                     "--region", REGION, "--neo", "false", "--run-id", "exec-1"]) == 0
    # the ProcessingOutput s3://BUCKET/slm-intents/edge <- /opt/ml/processing/output/edge (upload at job end)
    S3Store(bucket=BUCKET, client=s3).upload_dir(out, f"s3://{BUCKET}/slm-intents/edge")


def test_a_sagemaker_registered_version_reaches_a_deployment_request(s3_bucket, candidate_bundle, wheel, tmp_path,
                                                                       monkeypatch):
    import boto3

    from cloud.aws.greengrass import deploy, find_components, publish
    from cloud.aws.s3store import S3Store
    from cloud.errors import ComponentBuildError
    from cloud.greengrass import build_components
    from cloud.registry import open_registry

    monkeypatch.chdir(tmp_path)  # the default output is the local mirror .store/s3/<bucket>/ of the cwd
    sm = boto3.client("sagemaker", region_name=REGION)
    store = S3Store(bucket=BUCKET, client=s3_bucket)
    # Given a version registered by the pipeline and its edge bundle written to S3 by CompileEdge
    version = _register_like_the_pipeline(sm)
    _compile_edge_to_s3(candidate_bundle, tmp_path, s3_bucket, version)
    s3_zip = s3_bucket.get_object(Bucket=BUCKET, Key=f"slm-intents/edge/{version}.zip")["Body"].read()
    with open_registry("sagemaker", client=sm) as reg:
        assert reg.get(GROUP, version).artifacts["bundle_zip"] == f"s3://{BUCKET}/slm-intents/edge/{version}.zip"

        # When it is built before approval with --require-approved, Then it is refused and nothing is written
        with pytest.raises(ComponentBuildError, match="PendingManualApproval, not Approved"):
            build_components(version, store=store, registry="sagemaker", sagemaker_client=sm, wheel=wheel,
                             require_approved=True, group=GROUP)
        assert not (tmp_path / ".store").exists()
        reg.approve(GROUP, version, "tests", "reviewed")

    # When the approved version is built from the SageMaker registry and S3
    built = build_components(version, store=store, registry="sagemaker", sagemaker_client=sm, wheel=wheel,
                             require_approved=True, group=GROUP)
    assert built.out.resolve() == tmp_path / ".store" / "s3" / BUCKET / "slm-intents" / "greengrass" / str(version)
    assert built.registry["approval_status"] == "Approved" and built.registry["stage"] == "Prod"
    model, app = built.component("model"), built.component("app")
    # Then model.zip is the bundle zip from S3 byte for byte, and the recipes point where publish uploads
    model_zip = (built.out / "artifacts" / MODEL / model["version"] / "model.zip").read_bytes()
    assert model_zip == s3_zip
    b64, hexdigest = _sha256(s3_zip)
    assert model["artifacts"][0]["sha256"] == hexdigest == built.registry["source"]["bundle_zip_sha256"]
    recipes = {c["name"]: json.loads((built.out / "recipes" / f"{c['name']}-{c['version']}.json").read_text())
               for c in (model, app)}
    (model_artifact,) = recipes[MODEL]["Manifests"][0]["Artifacts"]
    model_uri = f"s3://{BUCKET}/slm-intents/greengrass/{MODEL}/{model['version']}/model.zip"
    assert model_artifact["Uri"] == model_uri and model_artifact["Digest"] == b64
    assert model_artifact["Algorithm"] == "SHA-256"

    # When both are published (Greengrass v2 stubbed: the exact recipe bytes, and the service's answers)
    gg = boto3.client("greengrassv2", region_name=REGION)
    stubber = stub(gg)
    components = find_components(built.out)
    for comp in components:
        arn = f"{COMPONENTS}:{comp.name}:versions:{comp.version}"
        stubber.add_response("create_component_version", {
            "arn": arn, "componentName": comp.name, "componentVersion": comp.version,
            "creationTimestamp": "2026-12-01T00:00:00Z", "status": {"componentState": "REQUESTED"}},
            {"inlineRecipe": comp.source.read_bytes()})  # the URIs were already the S3 ones: sent unchanged
        stubber.add_response("describe_component", {"arn": arn, "status": {"componentState": "DEPLOYABLE"}},
                             {"arn": arn})
    lines: list[str] = []
    published = publish(components, store=store, greengrass=gg, poll_s=0, progress=lines.append)
    # Then the object at the recipe's URI is the same zip (its digest is the recipe's), and progress was said
    bucket, key = model_uri[len("s3://"):].split("/", 1)
    assert _sha256(s3_bucket.get_object(Bucket=bucket, Key=key)["Body"].read())[0] == model_artifact["Digest"]
    assert {p.name: p.state for p in published} == {MODEL: "DEPLOYABLE", APP: "DEPLOYABLE"}
    assert any("DEPLOYABLE" in line for line in lines) and any(model_uri in line for line in lines)

    # When the published versions are deployed to the canary thing group (moto IoT)
    iot = boto3.client("iot", region_name=REGION)
    target = iot.create_thing_group(thingGroupName="slm-intents-canary")["thingGroupArn"]
    stubber.add_response("list_deployments", {"deployments": []},
                         {"targetArn": target, "historyFilter": "LATEST_ONLY"})
    wanted = {MODEL: {"componentVersion": model["version"]}, APP: {"componentVersion": app["version"]}}
    from botocore.stub import ANY

    stubber.add_response("create_deployment", {"deploymentId": "d-1", "iotJobId": "j-1"},
                         {"targetArn": target, "deploymentName": "slm-intents-canary", "components": wanted,
                          "deploymentPolicies": ANY, "iotJobConfiguration": ANY, "tags": ANY})
    result = deploy({p.name: p.version for p in published}, stage="canary", greengrass=gg, iot=iot)
    stubber.assert_no_pending_responses()
    # Then the deployment names exactly the component versions whose recipes carry the S3 zip's digest
    assert result["deployment_id"] == "d-1" and result["components"] == {
        MODEL: model["version"], APP: app["version"]}
    assert recipes[MODEL]["ComponentVersion"] == result["components"][MODEL]


def test_the_build_refuses_artifacts_outside_the_store_it_was_given(s3_bucket, wheel, tmp_path, monkeypatch):
    import boto3

    from cloud.aws.s3store import S3Store
    from cloud.errors import ComponentBuildError
    from cloud.greengrass import build_components
    from cloud.registry import open_registry

    monkeypatch.chdir(tmp_path)
    sm = boto3.client("sagemaker", region_name=REGION)
    version = _register_like_the_pipeline(sm)
    with open_registry("sagemaker", client=sm) as reg:
        with pytest.raises(ComponentBuildError, match="no 'bundle_zip' artifact"):
            build_components(version, store=S3Store(bucket=BUCKET, client=s3_bucket), registry="sagemaker",
                             sagemaker_client=sm, wheel=wheel, group=GROUP)
        reg.add_artifacts(GROUP, version, {"bundle": "s3://other/slm-intents/edge/1",
                                           "bundle_zip": "s3://other/slm-intents/edge/1.zip"})
    with pytest.raises(ComponentBuildError, match="not s3://slm-test-bucket/slm-intents/edge/1.zip"):
        build_components(version, store=S3Store(bucket=BUCKET, client=s3_bucket), registry="sagemaker",
                         sagemaker_client=sm, wheel=wheel, group=GROUP)
    with pytest.raises(ComponentBuildError, match="needs the S3 store"):
        build_components(version, store=tmp_path / "local", registry="sagemaker", sagemaker_client=sm, wheel=wheel)
    assert not (tmp_path / ".store").exists()


def test_the_same_version_serves_and_its_telemetry_decides_the_canary(s3_bucket, tmp_path, capsys):
    import boto3

    from cloud.endpoint import main as endpoint_main
    from cloud.registry import open_registry
    from cloud.rollout import Gates, Rollout, RolloutPlan, main as rollout_main
    from tests.cloud.test_rollout import FakeBackend

    sm = boto3.client("sagemaker", region_name=REGION)
    _register_like_the_pipeline(sm)
    version = _register_like_the_pipeline(sm)  # version 2: the devices' telemetry below is of bundle version 2
    assert version == 2
    with open_registry("sagemaker", client=sm) as reg:
        reg.approve(GROUP, version, "tests", "reviewed")
    # endpoint create and delete (moto SageMaker)
    assert endpoint_main(["deploy", "--version", str(version), "--role-arn", ROLE_ARN, "--region", REGION]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "InService"
    assert endpoint_main(["delete", "--version", str(version), "--region", REGION]) == 0
    assert json.loads(capsys.readouterr().out)["endpoint"] == f"{GROUP}-{version}"
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    # telemetry the rule stored in S3 -> the canary's gate decision
    backend = FakeBackend()
    plan = RolloutPlan(str(version), {MODEL: str(version)}, "canary", ("fleet-a",),
                       Gates(min_requests=50, max_latency_p95_ms=10_000.0))
    Rollout.create(plan, tmp_path / "rollout.json")
    Rollout(tmp_path / "rollout.json", backend).start()
    for payload in device_messages(tmp_path, "c1"):
        s3_bucket.put_object(Bucket=BUCKET, Key=rule_key("c1", time.time()), Body=payload)
    code = rollout_main(["promote", "--state", str(tmp_path / "rollout.json"), "--telemetry-s3", TELEMETRY_URI,
                         "--region", REGION], backend=backend)
    result = json.loads(capsys.readouterr().out)
    assert (code, result["status"]) == (0, "promoted") and result["gates"]["requests"] == 80
    assert ("deploy", "fleet-a", {MODEL: str(version)}, "fleet") in backend.calls
