"""python -m cloud.endpoint: a registered version on a SageMaker endpoint, offline.

botocore's Stubber pins the exact requests (it validates them against the service model, so a misspelt field or
a wrong type fails); moto walks deploy -> status -> delete through its SageMaker. moto makes an endpoint
InService at once and runs no container: that the PyTorch image really loads code/inference.py is what
test_inference.py approaches from the other side, and only a real account proves.
"""

from __future__ import annotations

import datetime as dt
import io

import pytest
from botocore.stub import ANY

from tests.cloud.aws.conftest import ACCOUNT, REGION, ROLE_ARN, stub

GROUP = "slm-intents-snips"
GROUP_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package-group/{GROUP}"
PACKAGE_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{GROUP}/7"
NAME = f"{GROUP}-7"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _environment():
    from cloud.aws.code import SERVING_ENVIRONMENT

    return {**SERVING_ENVIRONMENT, "SAGEMAKER_REGION": REGION, "SLM_MODEL_NAME": "snips-intents"}


@pytest.fixture()
def sm(aws_env):
    import boto3

    client = boto3.client("sagemaker", region_name=REGION)
    stubber = stub(client)
    yield client, stubber
    stubber.deactivate()


TEACHER = "s3://b/slm-intents/models/slm-intents-train-abc/output/model.tar.gz"
IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.6-cpu-py312"


def _expect_package(stubber, approval="Approved", environment=None, metadata=None):
    stubber.add_response("describe_model_package_group", {
        "ModelPackageGroupName": GROUP, "ModelPackageGroupArn": GROUP_ARN, "CreationTime": T0,
        "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"}, {"ModelPackageGroupName": GROUP})
    stubber.add_response("describe_model_package", {
        "ModelPackageName": GROUP, "ModelPackageGroupName": GROUP, "ModelPackageVersion": 7,
        "ModelPackageArn": PACKAGE_ARN, "CreationTime": T0, "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
        "ModelApprovalStatus": approval,
        "InferenceSpecification": {"Containers": [{
            "Image": IMAGE,
            "ModelDataUrl": "s3://b/slm-intents/models/run/output/model.tar.gz",
            "Environment": _environment() if environment is None else environment}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
        **({"CustomerMetadataProperties": metadata} if metadata is not None else {})},
        {"ModelPackageName": PACKAGE_ARN})


def _describe_endpoint(stubber, state, **extra):
    variant = {"VariantName": "AllTraffic"}
    if state == "InService":
        variant["CurrentServerlessConfig"] = {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
    stubber.add_response("describe_endpoint", {
        "EndpointName": NAME, "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{NAME}",
        "EndpointConfigName": NAME, "EndpointStatus": state, "CreationTime": T0, "LastModifiedTime": T0,
        "ProductionVariants": [variant], **extra}, {"EndpointName": NAME})


PACKAGE_CONTAINER = {"ModelPackageName": PACKAGE_ARN, "Environment": {"SLM_MODEL_VERSION": "7"}}


def _expect_creates(stubber, variant, container=None):
    stubber.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{NAME}"}, {
        "ModelName": NAME, "ExecutionRoleArn": ROLE_ARN,
        "PrimaryContainer": PACKAGE_CONTAINER if container is None else container})
    stubber.add_response("create_endpoint_config", {
        "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{NAME}"},
        {"EndpointConfigName": NAME, "ProductionVariants": [variant]})


def test_deploy_creates_a_serverless_endpoint_from_the_package_and_waits_with_progress(sm):
    from cloud.endpoint import deploy

    client, stubber = sm
    # Given an approved version registered with the handler
    _expect_package(stubber)
    # Then: the model from the package (its version in the environment), a serverless config, the endpoint
    _expect_creates(stubber, {"VariantName": "AllTraffic", "ModelName": NAME,
                              "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 5}})
    stubber.add_response("create_endpoint", {"EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{NAME}"},
                         {"EndpointName": NAME, "EndpointConfigName": NAME})
    for state in ("Creating", "Creating", "InService", "InService"):  # the last one is status()'s
        _describe_endpoint(stubber, state)
    out, ticks = io.StringIO(), iter(range(0, 1000, 30))
    # When it is deployed
    result = deploy(GROUP, 7, role_arn=ROLE_ARN, client=client, out=out, sleep=lambda s: None,
                    clock=lambda: next(ticks))
    stubber.assert_no_pending_responses()
    assert result["status"] == "InService" and result["variants"] == [
        {"name": "AllTraffic", "serverless": {"MemorySizeInMB": 3072, "MaxConcurrency": 5}}]
    # a package without a teacher (distill.layers 0) serves itself, and says so
    assert result["serves"] == {"model": "package", "source": PACKAGE_ARN, "package": PACKAGE_ARN}
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{GROUP}/7 records no teacher (artifacts.teacher_model): serving the registered model"
    # each status change is printed once, with the time waited
    assert lines[2:] == [f"{NAME}: Creating (30s)", f"{NAME}: InService (120s)"]


def _deploy_no_wait(stubber, client, container, **kwargs):
    from cloud.endpoint import deploy

    _expect_creates(stubber, {"VariantName": "AllTraffic", "ModelName": NAME,
                              "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 5}}, container)
    stubber.add_response("create_endpoint", {"EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{NAME}"},
                         {"EndpointName": NAME, "EndpointConfigName": NAME})
    _describe_endpoint(stubber, "Creating")
    out = io.StringIO()
    result = deploy(GROUP, 7, role_arn=ROLE_ARN, client=client, wait=False, out=out, **kwargs)
    stubber.assert_no_pending_responses()
    return result, out.getvalue()


def test_deploy_serves_the_teacher_a_distilled_package_records(sm):
    # Given a distilled version: the package is the student, its metadata names the teacher's model.tar.gz
    client, stubber = sm
    _expect_package(stubber, metadata={"artifacts.teacher_model": TEACHER, "lineage.distilled_from.layers": "6"})
    # When it is deployed with the defaults, Then CreateModel gets the package's image and environment with the
    # teacher's model data, and no ModelPackageName (the Stubber checks the request against the service model)
    teacher = {"Image": IMAGE, "ModelDataUrl": TEACHER, "Environment": {**_environment(), "SLM_MODEL_VERSION": "7"}}
    result, out = _deploy_no_wait(stubber, client, teacher)
    assert result["serves"] == {"model": "teacher", "source": TEACHER, "package": PACKAGE_ARN}
    assert f"creating from the teacher {TEACHER} of {PACKAGE_ARN}" in out


def test_deploy_serve_package_serves_the_student(sm):
    client, stubber = sm
    _expect_package(stubber, metadata={"artifacts.teacher_model": TEACHER})
    result, out = _deploy_no_wait(stubber, client, PACKAGE_CONTAINER, serve="package")
    assert result["serves"]["model"] == "package" and "no teacher" not in out


@pytest.mark.parametrize("teacher", ["s3://b/slm-intents/models/job/output/", "https://b.s3.amazonaws.com/m.tar.gz",
                                     "s3://b/model.zip"])
def test_a_teacher_that_is_not_an_s3_tarball_is_refused_before_creating_anything(sm, teacher):
    # ModelDataUrl must point to one gzip-compressed tar archive (.tar.gz); the teacher is a training job's, on S3
    from cloud.endpoint import deploy
    from cloud.errors import CloudError

    client, stubber = sm
    _expect_package(stubber, metadata={"artifacts.teacher_model": teacher})
    with pytest.raises(CloudError, match="not the s3://.../model.tar.gz"):
        deploy(GROUP, 7, role_arn=ROLE_ARN, client=client, out=io.StringIO())
    stubber.assert_no_pending_responses()


def test_the_teacher_container_obeys_the_container_definition_of_the_service_model():
    """What the Stubber does not check: the teacher's container names no package (a container with
    ModelPackageName takes its image and data from the package), ModelDataUrl matches the Url shape's pattern and
    length, and the environment stays within EnvironmentMap's bounds."""
    import re

    import botocore.session

    from cloud.endpoint import model_container

    shapes = botocore.session.get_session().get_service_model("sagemaker")
    members = shapes.shape_for("ContainerDefinition").members
    desc = {"ModelPackageArn": PACKAGE_ARN, "CustomerMetadataProperties": {"artifacts.teacher_model": TEACHER},
            "InferenceSpecification": {"Containers": [{"Image": IMAGE, "Environment": _environment()}]}}
    container, served = model_container(desc, 7)
    assert served == "teacher" and set(container) == {"Image", "ModelDataUrl", "Environment"}
    assert set(container) <= set(members) and "ModelPackageName" in members
    url = members["ModelDataUrl"].metadata
    assert re.fullmatch(url["pattern"], container["ModelDataUrl"]) and len(container["ModelDataUrl"]) <= url["max"]
    env = members["Environment"].metadata
    assert len(container["Environment"]) <= env["max"] == 100
    assert all(len(k) <= 1024 and len(v) <= 1024 for k, v in container["Environment"].items())
    assert model_container(desc, 7, "package") == (PACKAGE_CONTAINER, "package")


def test_deploy_on_a_provisioned_instance(sm):
    from cloud.endpoint import Serving, deploy

    client, stubber = sm
    _expect_package(stubber)
    _expect_creates(stubber, {"VariantName": "AllTraffic", "ModelName": NAME, "InstanceType": "ml.m5.large",
                              "InitialInstanceCount": 2})
    stubber.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/x"},
                         {"EndpointName": NAME, "EndpointConfigName": NAME})
    _describe_endpoint(stubber, "Creating")
    deploy(GROUP, 7, role_arn=ROLE_ARN, client=client, wait=False, out=io.StringIO(),
           serving=Serving(instance_type="ml.m5.large", instance_count=2))
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(("approval", "environment", "message"), [
    ("PendingManualApproval", None, "is PendingManualApproval: approve it"),
    ("Approved", {"SAGEMAKER_REGION": REGION}, "registered without the inference handler"),
])
def test_deploy_refuses_before_creating_anything(sm, approval, environment, message):
    from cloud.endpoint import deploy
    from cloud.errors import CloudError

    client, stubber = sm
    _expect_package(stubber, approval=approval, environment=environment)
    # no create_* response is queued: a create call would fail the test with the Stubber's own error
    with pytest.raises(CloudError, match=message):
        deploy(GROUP, 7, role_arn=ROLE_ARN, client=client, out=io.StringIO())
    stubber.assert_no_pending_responses()


def test_a_failed_create_removes_what_this_run_made(sm):
    from cloud.aws.errors import AwsCallFailed
    from cloud.endpoint import deploy

    client, stubber = sm
    _expect_package(stubber)
    _expect_creates(stubber, ANY)
    stubber.add_client_error("create_endpoint", "ResourceLimitExceeded", "serverless concurrency quota reached")
    stubber.add_response("delete_endpoint_config", {}, {"EndpointConfigName": NAME})
    stubber.add_response("delete_model", {}, {"ModelName": NAME})
    with pytest.raises(AwsCallFailed, match="ResourceLimitExceeded"):
        deploy(GROUP, 7, role_arn=ROLE_ARN, client=client, out=io.StringIO())
    stubber.assert_no_pending_responses()


def test_an_endpoint_that_fails_says_why(sm):
    from cloud.aws.errors import AwsError
    from cloud.endpoint import deploy

    client, stubber = sm
    _expect_package(stubber)
    _expect_creates(stubber, ANY)
    stubber.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/x"},
                         {"EndpointName": NAME, "EndpointConfigName": NAME})
    _describe_endpoint(stubber, "Failed", FailureReason="The primary container did not pass the ping health check")
    with pytest.raises(AwsError, match="Failed: The primary container did not pass the ping"):
        deploy(GROUP, 7, role_arn=ROLE_ARN, client=client, out=io.StringIO(), sleep=lambda s: None)


def test_delete_removes_endpoint_then_config_then_model(sm):
    from cloud.endpoint import delete

    client, stubber = sm
    _describe_endpoint(stubber, "InService")
    stubber.add_response("delete_endpoint", {}, {"EndpointName": NAME})
    _describe_endpoint(stubber, "Deleting")
    stubber.add_client_error("describe_endpoint", "ValidationException",
                             f'Could not find endpoint "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{NAME}".')
    stubber.add_response("describe_endpoint_config", {
        "EndpointConfigName": NAME, "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{NAME}",
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": NAME}], "CreationTime": T0},
        {"EndpointConfigName": NAME})
    stubber.add_response("delete_endpoint_config", {}, {"EndpointConfigName": NAME})
    stubber.add_response("delete_model", {}, {"ModelName": NAME})
    out = io.StringIO()
    assert delete(NAME, client=client, out=out, sleep=lambda s: None) == {
        "endpoint": NAME, "config": NAME, "models": [NAME]}
    stubber.assert_no_pending_responses()
    assert f"{NAME}: deleted" in out.getvalue()


def test_delete_of_something_already_gone_skips_it_and_other_errors_surface(sm):
    from cloud.aws.errors import AwsCallFailed
    from cloud.endpoint import delete

    client, stubber = sm
    stubber.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
    stubber.add_client_error("describe_endpoint_config", "ValidationException", "Could not find endpoint configuration")
    stubber.add_client_error("delete_model", "ValidationException", "Could not find model")
    assert delete(NAME, client=client, out=io.StringIO()) == {"endpoint": None, "config": None, "models": []}
    stubber.add_client_error("describe_endpoint", "AccessDeniedException", "not authorized")
    with pytest.raises(AwsCallFailed, match="AccessDenied"):
        delete(NAME, client=client, out=io.StringIO())


@pytest.mark.parametrize(("kwargs", "message"), [({"memory_mb": 1500}, "one of"), ({"max_concurrency": 0}, "1-200"),
                                                 ({"instance_type": "m5.large"}, "ml.\\* instance")])
def test_serving_settings_are_checked(kwargs, message):
    from cloud.endpoint import Serving
    from cloud.errors import CloudError

    with pytest.raises(CloudError, match=message):
        Serving(**kwargs)


def test_endpoint_names_follow_sagemakers_rule():
    from cloud.endpoint import endpoint_name

    assert endpoint_name("slm-intents-snips", 7) == "slm-intents-snips-7"
    long = endpoint_name("g" * 70, 12)
    assert len(long) == 63 and long.endswith("-12")
    assert endpoint_name("a_b.c", 1) == "a-b-c-1"


def test_the_cli_walks_deploy_status_delete_on_moto(moto_aws, capsys):
    import json

    import boto3

    from cloud.endpoint import main

    # Given a version registered with the handler's environment and approved (moto's SageMaker)
    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    sm.create_model_package(ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved", InferenceSpecification={
        "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz", "Environment": _environment()}],
        "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]})
    # When it is deployed, asked about and deleted from the command line
    assert main(["deploy", "--version", "1", "--role-arn", ROLE_ARN, "--region", REGION, "--memory-mb", "2048"]) == 0
    deployed = json.loads(capsys.readouterr().out)
    assert main(["status", "--version", "1", "--region", REGION]) == 0
    shown = json.loads(capsys.readouterr().out)
    model = sm.describe_model(ModelName=f"{GROUP}-1")
    assert main(["delete", "--version", "1", "--region", REGION]) == 0
    removed = json.loads(capsys.readouterr().out)
    # Then the endpoint served version 1 of the package serverless, and nothing is left
    assert deployed["status"] == shown["status"] == "InService" and shown["endpoint"] == f"{GROUP}-1"
    assert shown["variants"][0]["serverless"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert model["PrimaryContainer"]["ModelPackageName"].endswith(f"model-package/{GROUP}/1")
    assert removed == {"endpoint": f"{GROUP}-1", "config": f"{GROUP}-1", "models": [f"{GROUP}-1"]}
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert main(["status", "--version", "1", "--region", REGION]) == 1
    assert "Could not find endpoint" in capsys.readouterr().err


def test_the_cli_deploys_the_teacher_of_a_distilled_version_on_moto(moto_aws, capsys):
    import json

    import boto3

    from cloud.endpoint import main

    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    sm.create_model_package(ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved", InferenceSpecification={
        "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/student/model.tar.gz", "Environment": _environment()}],
        "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
        CustomerMetadataProperties={"artifacts.teacher_model": TEACHER})
    assert main(["deploy", "--version", "1", "--role-arn", ROLE_ARN, "--region", REGION, "--no-wait"]) == 0
    deployed = json.loads(capsys.readouterr().out)
    container = sm.describe_model(ModelName=f"{GROUP}-1")["PrimaryContainer"]
    assert deployed["serves"]["model"] == "teacher"
    assert container["Image"] == "img" and container["ModelDataUrl"] == TEACHER
    assert container["Environment"] == {**_environment(), "SLM_MODEL_VERSION": "1"}
    with pytest.raises(SystemExit) as exc:
        main(["deploy", "--version", "1", "--role-arn", ROLE_ARN, "--serve", "student"])
    assert exc.value.code == 2  # argparse: --serve is teacher or package
    assert "invalid choice: 'student'" in capsys.readouterr().err


def test_the_registered_package_names_the_handler(sagemaker_definition):
    """What deploy relies on: the pipeline's RegisterModel container points the serving toolkit at code/inference.py."""
    from cloud.aws.code import INFERENCE_SCRIPT, SERVING_CODE_DIR
    from cloud.params import load_params

    d, _ = sagemaker_definition
    gate = next(s for s in d["Steps"] if s["Name"] == "CheckQualityGate")
    register = next(s for s in gate["Arguments"]["IfSteps"] if s["Name"] == "RegisterModel")
    (container,) = register["Arguments"]["InferenceSpecification"]["Containers"]
    assert container["Environment"] == {
        "SAGEMAKER_PROGRAM": INFERENCE_SCRIPT, "SAGEMAKER_SUBMIT_DIRECTORY": f"/opt/ml/model/{SERVING_CODE_DIR}",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": REGION,
        "SLM_MODEL_NAME": load_params().model_name}
    assert container["Image"].endswith("/pytorch-inference:2.6-cpu-py312")
    # the model that ships: the student of the Distill job (params.json distills), whose model.tar.gz holds code/
    assert container["ModelDataUrl"] == {"Get": "Steps.Distill.ModelArtifacts.S3ModelArtifacts"}
