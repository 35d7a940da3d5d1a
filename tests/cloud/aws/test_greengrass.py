"""Greengrass v2 publish and staged deploy. moto has no Greengrass v2, so its client is stubbed; S3 and IoT
thing groups are moto."""

from __future__ import annotations

import json

import pytest
from botocore.stub import ANY

from tests.cloud.aws.conftest import BUCKET, REGION, stub

MODEL = "com.slmintents.IntentModel"
APP = "com.slmintents.IntentService"
COMPONENTS = f"arn:aws:greengrass:{REGION}:123456789012:components"


def _recipe(name: str, version: str, artifact: str) -> dict:
    return {"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
            "ComponentDescription": "test", "ComponentPublisher": "slm-intents",
            "Manifests": [{"Platform": {"os": "linux", "architecture": "aarch64"},
                           "Artifacts": [{"Uri": f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{artifact}",
                                          "Unarchive": "ZIP"}],
                           "Lifecycle": {}}]}


@pytest.fixture()
def build_dir(tmp_path):
    """A GDK-style build folder: a JSON and a YAML recipe, and the model component's bundle zip."""
    import yaml

    root = tmp_path / "greengrass-build"
    (root / "recipes").mkdir(parents=True)
    (root / "recipes" / "model.json").write_text(json.dumps(_recipe(MODEL, "1.0.3", "bundle.zip")))
    (root / "recipes" / "service.yaml").write_text(yaml.safe_dump(_recipe(APP, "1.0.3", "service.zip")))
    for name, file in ((MODEL, "bundle.zip"), (APP, "service.zip")):
        folder = root / "artifacts" / name / "1.0.3"
        folder.mkdir(parents=True)
        (folder / file).write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return root


def _ggv2():
    import boto3

    client = boto3.client("greengrassv2", region_name=REGION)
    return client, stub(client)


def test_rollout_presets_are_staged():
    from cloud.aws.greengrass import RolloutConfig

    canary, fleet = RolloutConfig.canary(), RolloutConfig.fleet()
    assert canary.maximum_per_minute < fleet.maximum_per_minute
    assert canary.abort_min_executed == 1 and canary.abort_failed_percent <= fleet.abort_failed_percent
    job = fleet.iot_job_configuration()
    assert job["jobExecutionsRolloutConfig"]["exponentialRate"]["baseRatePerMinute"] == 10
    assert {c["failureType"] for c in job["abortConfig"]["criteriaList"]} == {"FAILED", "REJECTED", "TIMED_OUT"}
    assert all(c["action"] == "CANCEL" for c in job["abortConfig"]["criteriaList"])
    assert fleet.deployment_policies()["failureHandlingPolicy"] == "ROLLBACK"


def test_publish_uploads_artifacts_and_creates_deployable_versions(build_dir, s3_bucket):
    from cloud.aws.greengrass import find_components, publish
    from cloud.aws.s3store import S3Store

    components = find_components(build_dir)
    assert [(c.name, c.version) for c in components] == [(MODEL, "1.0.3"), (APP, "1.0.3")]
    gg, stubber = _ggv2()
    for name in (MODEL, APP):
        arn = f"{COMPONENTS}:{name}:versions:1.0.3"
        stubber.add_response("create_component_version", {
            "arn": arn, "componentName": name, "componentVersion": "1.0.3", "creationTimestamp": "2025-01-01T00:00:00Z",
            "status": {"componentState": "REQUESTED"}}, {"inlineRecipe": ANY})
        stubber.add_response("describe_component", {"arn": arn, "status": {"componentState": "DEPLOYABLE"}},
                             {"arn": arn})
    published = publish(components, store=S3Store(bucket=BUCKET, client=s3_bucket), greengrass=gg, poll_s=0)
    stubber.assert_no_pending_responses()
    assert [p.state for p in published] == ["DEPLOYABLE", "DEPLOYABLE"]
    uri = f"s3://{BUCKET}/slm-intents/greengrass/{MODEL}/1.0.3/bundle.zip"
    assert published[0].artifacts == (uri,)
    s3_bucket.head_object(Bucket=BUCKET, Key=uri.split("/", 3)[3])


def test_publish_sends_the_rewritten_recipe(build_dir, s3_bucket):
    from cloud.aws.greengrass import find_components, publish
    from cloud.aws.s3store import S3Store

    gg, stubber = _ggv2()
    model = find_components(build_dir)[0]
    recipe = json.loads(json.dumps(model.recipe))
    recipe["Manifests"][0]["Artifacts"][0]["Uri"] = f"s3://{BUCKET}/slm-intents/greengrass/{MODEL}/1.0.3/bundle.zip"
    arn = f"{COMPONENTS}:{MODEL}:versions:1.0.3"
    stubber.add_response("create_component_version", {"arn": arn, "componentName": MODEL, "componentVersion": "1.0.3",
                                                      "creationTimestamp": "2025-01-01T00:00:00Z",
                                                      "status": {"componentState": "DEPLOYABLE"}},
                         {"inlineRecipe": json.dumps(recipe, indent=2).encode()})
    stubber.add_response("describe_component", {"arn": arn, "status": {"componentState": "DEPLOYABLE"}}, {"arn": arn})
    publish([model], store=S3Store(bucket=BUCKET, client=s3_bucket), greengrass=gg)
    stubber.assert_no_pending_responses()


def test_publish_refuses_unresolved_versions_and_existing_ones(build_dir, s3_bucket):
    from cloud.aws.errors import AwsError
    from cloud.aws.greengrass import find_components, publish
    from cloud.aws.s3store import S3Store

    (build_dir / "recipes" / "model.json").write_text(json.dumps(_recipe(MODEL, "NEXT_PATCH", "bundle.zip")))
    with pytest.raises(AwsError, match="NEXT_PATCH"):
        find_components(build_dir)
    (build_dir / "recipes" / "model.json").write_text(json.dumps(_recipe(MODEL, "1.0.3", "bundle.zip")))
    gg, stubber = _ggv2()
    stubber.add_client_error("create_component_version", "ConflictException", "version exists")
    with pytest.raises(AwsError, match="already exists; bump ComponentVersion"):
        publish(find_components(build_dir)[:1], store=S3Store(bucket=BUCKET, client=s3_bucket), greengrass=gg)


@pytest.fixture()
def iot(moto_aws):
    import boto3

    client = boto3.client("iot", region_name=REGION)
    arns = {g: client.create_thing_group(thingGroupName=g)["thingGroupArn"]
            for g in ("slm-intents-canary", "slm-intents-fleet")}
    return client, arns


def test_deploy_to_canary_with_rollback_rollout_and_abort(iot):
    from cloud.aws.greengrass import RolloutConfig, deploy

    client, arns = iot
    gg, stubber = _ggv2()
    stubber.add_response("list_deployments", {"deployments": [{"deploymentId": "old"}]},
                         {"targetArn": arns["slm-intents-canary"], "historyFilter": "LATEST_ONLY"})
    stubber.add_response("get_deployment", {"deploymentId": "old", "components": {
        "aws.greengrass.Nucleus": {"componentVersion": "2.12.0"}, MODEL: {"componentVersion": "1.0.2"}}},
        {"deploymentId": "old"})
    canary = RolloutConfig.canary()
    stubber.add_response("create_deployment", {"deploymentId": "d-1", "iotJobId": "job-1", "iotJobArn": "arn:job-1"}, {
        "targetArn": arns["slm-intents-canary"], "deploymentName": "slm-intents-canary",
        "components": {"aws.greengrass.Nucleus": {"componentVersion": "2.12.0"},
                       MODEL: {"componentVersion": "1.0.3"}, APP: {"componentVersion": "1.0.3"}},
        "deploymentPolicies": {"failureHandlingPolicy": "ROLLBACK",
                               "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
                               "configurationValidationPolicy": {"timeoutInSeconds": 30}},
        "iotJobConfiguration": canary.iot_job_configuration(),
        "tags": {"project": "slm-intents", "stage": "canary"}})
    result = deploy({MODEL: "1.0.3", APP: "1.0.3"}, stage="canary", greengrass=gg, iot=client)
    stubber.assert_no_pending_responses()
    assert result["deployment_id"] == "d-1" and result["thing_group"] == "slm-intents-canary"
    assert result["components"][MODEL] == "1.0.3" and result["components"]["aws.greengrass.Nucleus"] == "2.12.0"


def _canary_state(stubber, iot_stubber, *, versions, details, status="ACTIVE"):
    canary_arn = f"arn:aws:iot:{REGION}:123456789012:thinggroup/slm-intents-canary"
    iot_stubber.add_response("describe_thing_group", {"thingGroupName": "slm-intents-canary",
                                                      "thingGroupArn": canary_arn},
                             {"thingGroupName": "slm-intents-canary"})
    stubber.add_response("list_deployments", {"deployments": [{"deploymentId": "c-1"}]},
                         {"targetArn": canary_arn, "historyFilter": "LATEST_ONLY"})
    stubber.add_response("get_deployment", {"deploymentId": "c-1", "iotJobId": "job-c", "deploymentStatus": status,
                                            "components": {k: {"componentVersion": v} for k, v in versions.items()}},
                         {"deploymentId": "c-1"})
    if details is not None:
        iot_stubber.add_response("describe_job", {"job": {"jobId": "job-c", "jobProcessDetails": details}},
                                 {"jobId": "job-c"})


def test_fleet_deploy_is_blocked_until_the_canary_is_healthy(aws_env):
    import boto3

    from cloud.aws.errors import DeploymentBlocked
    from cloud.aws.greengrass import deploy

    gg, stubber = _ggv2()
    iot_client = boto3.client("iot", region_name=REGION)
    iot_stubber = stub(iot_client)
    # the canary runs an older model
    _canary_state(stubber, iot_stubber, versions={MODEL: "1.0.2"}, details=None)
    with pytest.raises(DeploymentBlocked, match="deploy these to the canary first"):
        deploy({MODEL: "1.0.3"}, stage="fleet", greengrass=gg, iot=iot_client)
    # the canary runs it, but a device failed
    _canary_state(stubber, iot_stubber, versions={MODEL: "1.0.3"},
                  details={"numberOfSucceededThings": 2, "numberOfFailedThings": 1})
    with pytest.raises(DeploymentBlocked, match="has failures"):
        deploy({MODEL: "1.0.3"}, stage="fleet", greengrass=gg, iot=iot_client)
    # the canary is still rolling out
    _canary_state(stubber, iot_stubber, versions={MODEL: "1.0.3"},
                  details={"numberOfSucceededThings": 1, "numberOfInProgressThings": 2})
    with pytest.raises(DeploymentBlocked, match="not done"):
        deploy({MODEL: "1.0.3"}, stage="fleet", greengrass=gg, iot=iot_client)
    stubber.assert_no_pending_responses()


def test_fleet_deploy_after_a_healthy_canary(aws_env):
    import boto3

    from cloud.aws.greengrass import RolloutConfig, deploy

    gg, stubber = _ggv2()
    iot_client = boto3.client("iot", region_name=REGION)
    iot_stubber = stub(iot_client)
    _canary_state(stubber, iot_stubber, versions={MODEL: "1.0.3"}, details={"numberOfSucceededThings": 3})
    fleet_arn = f"arn:aws:iot:{REGION}:123456789012:thinggroup/slm-intents-fleet"
    iot_stubber.add_response("describe_thing_group", {"thingGroupName": "slm-intents-fleet", "thingGroupArn": fleet_arn},
                             {"thingGroupName": "slm-intents-fleet"})
    stubber.add_response("create_deployment", {"deploymentId": "f-1", "iotJobId": "job-f"}, {
        "targetArn": fleet_arn, "deploymentName": "slm-intents-fleet", "components": {MODEL: {"componentVersion": "1.0.3"}},
        "deploymentPolicies": ANY, "iotJobConfiguration": RolloutConfig.fleet().iot_job_configuration(), "tags": ANY})
    result = deploy({MODEL: "1.0.3"}, stage="fleet", greengrass=gg, iot=iot_client, merge_current=False)
    assert result["deployment_id"] == "f-1" and result["canary"]["succeeded"] == 3
    stubber.assert_no_pending_responses()
    iot_stubber.assert_no_pending_responses()


def test_deploy_to_a_missing_thing_group_says_which(moto_aws):
    import boto3

    from cloud.aws.errors import DeploymentBlocked
    from cloud.aws.greengrass import deploy

    gg, _ = _ggv2()
    with pytest.raises(DeploymentBlocked, match="slm-intents-canary.*does not exist"):
        deploy({MODEL: "1.0.3"}, stage="canary", greengrass=gg, iot=boto3.client("iot", region_name=REGION))


def test_deploy_dry_run_prints_the_exact_request_and_calls_nothing(aws_env, capsys, monkeypatch):
    import boto3

    from cloud.aws import greengrass

    # Given clients on which any call fails (stubbers with no responses queued)
    gg, gg_stub = _ggv2()
    iot_client = boto3.client("iot", region_name=REGION)
    iot_stub = stub(iot_client)
    monkeypatch.setattr(greengrass, "make_client", lambda service, **kw: {"greengrassv2": gg, "iot": iot_client}[service])
    target = f"arn:aws:iot:{REGION}:123456789012:thinggroup/slm-intents-fleet"
    # When a fleet deployment is dry-run with the group's ARN, no merge, and a configuration for the app
    code = greengrass.main(["deploy", "--stage", "fleet", "--component", f"{MODEL}=1.0.3", "--component",
                            f"{APP}=0.1.0", "--config", f'{APP}={{"BundlePublicKey": "bXkta2V5", "RequireMtls": true}}',
                            "--target-arn", target, "--no-merge", "--dry-run", "--region", REGION])
    # Then it printed the request (no canary check, no call at all)
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    gg_stub.assert_no_pending_responses()
    iot_stub.assert_no_pending_responses()
    request = out["request"]
    assert out["dry_run"] is True and request["targetArn"] == target
    assert request["components"] == {
        MODEL: {"componentVersion": "1.0.3"},
        APP: {"componentVersion": "0.1.0",
              "configurationUpdate": {"merge": json.dumps({"BundlePublicKey": "bXkta2V5", "RequireMtls": True})}}}
    # and it is the exact request deploy sends: botocore validates it against CreateDeployment's model
    gg_stub.add_response("create_deployment", {"deploymentId": "d-9"}, request)
    assert gg.create_deployment(**request)["deploymentId"] == "d-9"
    gg_stub.assert_no_pending_responses()
