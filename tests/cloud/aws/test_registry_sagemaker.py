"""The SageMaker Model Registry backend: moto for the registry API, Stubber for what moto does not keep
(ModelLifeCycle) and for packages registered by the pipeline."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from cloud.errors import RegistryError
from cloud.registry import ApprovalStatus, ModelRegistry, Stage, open_registry
from tests.cloud.aws.conftest import REGION, stub

GROUP = "slm-intents-snips"
METRICS = {"int8": {"accuracy": 0.97, "macro_f1": 0.975}, "fp32": {"accuracy": 0.98, "macro_f1": 0.979},
           "agreement": 0.996}
LINEAGE = {"run_id": "r1", "code_version": "abc123", "parameters": {"train": {"epochs": 3}}}


@pytest.fixture()
def reg(moto_aws):
    with open_registry("sagemaker", region=REGION) as registry:
        yield registry


def test_open_registry_gives_the_sagemaker_backend(reg):
    assert isinstance(reg, ModelRegistry) and reg.backend == "sagemaker"


def test_register_creates_the_group_and_numbers_versions(reg):
    # Given no group, When two versions are registered, Then they are 1 and 2, pending, in Staging
    p1 = reg.register(GROUP, METRICS, LINEAGE, {"evaluation": "s3://b/slm-intents/evaluation/r1"}, description="run r1")
    p2 = reg.register(GROUP, METRICS, {**LINEAGE, "run_id": "r2"}, {})
    assert (p1.version, p2.version) == (1, 2)
    assert p1.approval_status is ApprovalStatus.PENDING and p1.stage is Stage.STAGING
    assert p1.to_dict()["metrics"] == METRICS
    assert p1.lineage["run_id"] == "r1" and p1.lineage["parameters"]["train"]["epochs"] == 3
    assert p1.artifacts["evaluation"] == "s3://b/slm-intents/evaluation/r1"
    assert p1.macro_f1 == 0.975 and p1.description == "run r1"
    assert [g.name for g in reg.list_groups()] == [GROUP]
    assert [p.version for p in reg.list_versions(GROUP)] == [1, 2]


def test_approve_moves_to_prod_and_archives_the_previous_prod(reg):
    for run in ("r1", "r2"):
        reg.register(GROUP, METRICS, {**LINEAGE, "run_id": run}, {})
    assert reg.approve(GROUP, 1, "alice", "reviewed the report").stage is Stage.PROD
    v2 = reg.approve(GROUP, 2, "bob", "better on the new data")
    v1 = reg.get(GROUP, 1)
    assert (v2.approval_status, v2.stage, v2.stage_status) == (ApprovalStatus.APPROVED, Stage.PROD, "Approved")
    assert (v1.approval_status, v1.stage) == (ApprovalStatus.APPROVED, Stage.ARCHIVED)
    assert [p.version for p in reg.list_versions(GROUP, stage="Prod")] == [2]
    assert reg.latest(GROUP, stage=Stage.PROD).version == 2
    assert [(e.action.value, e.by) for e in reg.history(GROUP, 1)] == [
        ("registered", None), ("approved", "alice"), ("superseded", "bob")]


def test_reject_and_the_shared_transition_rules(reg):
    reg.register(GROUP, METRICS, LINEAGE, {})
    rejected = reg.reject(GROUP, 1, "carol", "bias on GetWeather")
    assert (rejected.approval_status, rejected.stage) == (ApprovalStatus.REJECTED, Stage.ARCHIVED)
    with pytest.raises(RegistryError, match="already Rejected"):
        reg.reject(GROUP, 1, "carol", "again")
    with pytest.raises(RegistryError, match="reason"):
        reg.approve(GROUP, 1, "carol", " ")
    assert reg.approve(GROUP, 1, "dave", "re-approved after review").stage is Stage.PROD


def test_add_artifacts_keeps_metrics_and_history(reg):
    reg.register(GROUP, METRICS, LINEAGE, {"model": "s3://b/m.tar.gz"})
    reg.approve(GROUP, 1, "alice", "ok")
    pkg = reg.add_artifacts(GROUP, 1, {"bundle": "s3://b/slm-intents/edge/1"})
    assert pkg.artifacts == {"model": "s3://b/m.tar.gz", "bundle": "s3://b/slm-intents/edge/1"}
    assert pkg.metrics["int8"]["macro_f1"] == 0.975 and pkg.stage is Stage.PROD


def test_unknown_group_or_version_and_use_after_close(moto_aws):
    reg = open_registry("sagemaker", region=REGION)
    with pytest.raises(RegistryError, match="unknown model package group"):
        reg.get(GROUP, 1)
    reg.register(GROUP, METRICS, LINEAGE, {})
    with pytest.raises(RegistryError, match="unknown model package version"):
        reg.get(GROUP, 9)
    reg.close()
    with pytest.raises(RegistryError, match="closed"):
        reg.list_groups()


def test_oversized_values_are_stored_by_hash_and_too_many_are_refused(reg):
    pkg = reg.register(GROUP, METRICS, {"notes": "x" * 300}, {})
    assert pkg.lineage["notes"].startswith("sha256:")
    with pytest.raises(RegistryError, match="CustomerMetadataProperties"):
        reg.register(GROUP, {f"m{i}": i for i in range(45)}, LINEAGE, {})


def test_cli_lists_and_approves_on_sagemaker(reg, capsys):
    from cloud.registry.cli import main

    reg.register(GROUP, METRICS, LINEAGE, {})
    assert main(["--backend", "sagemaker", "--region", REGION, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["version"], p["approval_status"], p["stage"]) for p in listed] == [(1, "PendingManualApproval", "Staging")]
    assert main(["--backend", "sagemaker", "--region", REGION, "approve", "1", "--by", "ci", "--reason", "ok"]) == 0
    assert "Approved / Prod" in capsys.readouterr().out


def _described(version: int, **extra):
    return {"ModelPackageGroupName": GROUP, "ModelPackageVersion": version, "ModelPackageName": GROUP,
            "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "ModelPackageArn": f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/{version}",
            "CreationTime": dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), "ModelPackageStatus": "Completed",
            **extra}


def test_approve_sends_model_lifecycle_and_approval_description(aws_env):
    # moto does not keep ModelLifeCycle: check the request itself with a Stubber
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION)
    stubber = stub(sm)
    group_arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package-group/{GROUP}"
    stubber.add_response("describe_model_package_group", {
        "ModelPackageGroupName": GROUP, "ModelPackageGroupArn": group_arn, "CreationTime": dt.datetime(2025, 1, 1),
        "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"}, {"ModelPackageGroupName": GROUP})
    pending = _described(2, ModelApprovalStatus="PendingManualApproval",
                         ModelLifeCycle={"Stage": "Staging", "StageStatus": "Registered"})
    stubber.add_response("describe_model_package", pending, {"ModelPackageName": pending["ModelPackageArn"]})
    stubber.add_response("list_model_packages", {"ModelPackageSummaryList": []},
                         {"ModelPackageGroupName": GROUP, "ModelApprovalStatus": "Approved"})

    from botocore.stub import ANY

    stubber.add_response("update_model_package", {"ModelPackageArn": pending["ModelPackageArn"]}, {
        "ModelPackageArn": pending["ModelPackageArn"], "ModelApprovalStatus": "Approved",
        "ApprovalDescription": "reviewed", "CustomerMetadataProperties": ANY,
        "ModelLifeCycle": {"Stage": "Prod", "StageStatus": "Approved", "StageDescription": "reviewed"}})
    approved = _described(2, ModelApprovalStatus="Approved", ApprovalDescription="reviewed",
                          ModelLifeCycle={"Stage": "Prod", "StageStatus": "Approved", "StageDescription": "reviewed"})
    stubber.add_response("describe_model_package", approved, {"ModelPackageName": pending["ModelPackageArn"]})
    with open_registry("sagemaker", client=sm) as reg:
        pkg = reg.approve(GROUP, 2, "alice", "reviewed")
    assert (pkg.approval_status, pkg.stage, pkg.stage_description) == (ApprovalStatus.APPROVED, Stage.PROD, "reviewed")
    stubber.assert_no_pending_responses()


def test_reads_a_version_registered_by_the_pipeline(aws_env):
    # Given what the pipeline's register step writes (ModelLifeCycle, dotted metadata, ModelMetrics, no history)
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION)
    stubber = stub(sm)
    group_arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package-group/{GROUP}"
    stubber.add_response("describe_model_package_group", {
        "ModelPackageGroupName": GROUP, "ModelPackageGroupArn": group_arn, "CreationTime": dt.datetime(2025, 1, 1),
        "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"})
    stubber.add_response("describe_model_package", _described(
        5, ModelApprovalStatus="PendingManualApproval", ModelPackageDescription="snips-intents from pipeline",
        ModelLifeCycle={"Stage": "Staging", "StageStatus": "Registered", "StageDescription": "after the gate"},
        CustomerMetadataProperties={"metrics.int8.macro_f1": "0.9812", "metrics.agreement": "0.995",
                                    "lineage.run_id": "exec-1", "artifacts.candidate_bundle": "s3://b/c"},
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                      "S3Uri": "s3://b/slm-intents/evaluation/exec-1/metrics.json"}}},
        InferenceSpecification={"Containers": [{"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz"}],
                                "SupportedContentTypes": [], "SupportedResponseMIMETypes": []}))
    with open_registry("sagemaker", client=sm) as reg:
        pkg = reg.get(GROUP, 5)
    # Then it reads like any other version
    assert pkg.macro_f1 == 0.9812 and pkg.metrics["agreement"] == 0.995 and pkg.lineage == {"run_id": "exec-1"}
    assert pkg.stage is Stage.STAGING and pkg.stage_description == "after the gate"
    assert pkg.artifacts == {"candidate_bundle": "s3://b/c", "model": "s3://b/model.tar.gz",
                             "evaluation": "s3://b/slm-intents/evaluation/exec-1"}
