"""The CloudFormation templates are cfn-lint clean and say what the issue asks; buildspec.yml runs the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO

cfnlint = pytest.importorskip("cfnlint", reason="cfn-lint is not installed (the dev extra)")
INFRA = REPO / "infra"
TEMPLATES = sorted(INFRA.glob("*.yaml"))


def _load(name: str):
    from cfnlint.decode import decode

    template, matches = decode(str(INFRA / name))
    assert not matches, matches
    return template


def _resources(template, kind: str):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_the_templates_are_there():
    assert [p.name for p in TEMPLATES] == ["cicd.yaml", "greengrass-core.yaml", "greengrass-role.yaml", "iot.yaml",
                                           "sagemaker-role.yaml", "storage.yaml", "telemetry.yaml"]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_is_clean(path: Path):
    from cfnlint.api import lint_file

    assert [str(m) for m in lint_file(path)] == []  # what `cfn-lint infra/*.yaml` reports


def test_bucket_is_encrypted_versioned_private_and_tls_only():
    t = _load("storage.yaml")
    (bucket,) = _resources(t, "AWS::S3::Bucket").values()
    p = bucket["Properties"]
    assert p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
    assert p["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(p["PublicAccessBlockConfiguration"][k] is True for k in
               ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    (policy,) = _resources(t, "AWS::S3::BucketPolicy").values()
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"]["Bool"]["aws:SecureTransport"] == "false"


def _statements(template):
    def each(statements):
        for st in statements:
            if "Fn::If" in st:  # a conditional statement: check the one it adds
                st = st["Fn::If"][1]
            yield st

    for res in template["Resources"].values():
        if res["Type"] == "AWS::IAM::Role":
            for pol in res["Properties"].get("Policies", []):
                yield from each(pol["PolicyDocument"]["Statement"])
        elif res["Type"] == "AWS::IoT::Policy":
            yield from each(res["Properties"]["PolicyDocument"]["Statement"])


@pytest.mark.parametrize("name", ["sagemaker-role.yaml", "greengrass-role.yaml", "iot.yaml", "greengrass-core.yaml",
                                  "cicd.yaml", "telemetry.yaml"])
def test_no_statement_allows_every_action(name):
    for st in _statements(_load(name)):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert st["Effect"] == "Allow"
        assert not any(a == "*" or a.endswith(":*") for a in actions), st


def test_greengrass_token_exchange_role_reads_only_component_artifacts():
    t = _load("greengrass-role.yaml")
    (role,) = _resources(t, "AWS::IAM::Role").values()
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"] == \
        "credentials.iot.amazonaws.com"
    statements = {st["Sid"]: st for st in _statements(t)}
    assert statements["ComponentArtifacts"]["Action"] == "s3:GetObject"
    assert "slm-intents/greengrass/*" in json.dumps(statements["ComponentArtifacts"]["Resource"])
    assert _resources(t, "AWS::IoT::RoleAlias")


def test_device_policy_is_scoped_to_its_own_contract_4_topics():
    t = _load("iot.yaml")
    device = t["Resources"]["IntentsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    text = json.dumps(device)
    thing = "${!iot:Connection.Thing.ThingName}"
    for topic in (f"topicfilter/cmd/intents/{thing}/request", f"topic/cmd/intents/{thing}/request",
                  f"topic/cmd/intents/{thing}/response", f"topic/cmd/intents/{thing}/response/*",
                  f"topic/dt/intents/{thing}/telemetry", f"topic/dt/intents/{thing}/status"):
        assert topic in text
    resources = [r for st in device for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])]
    assert all(thing in json.dumps(r) for r in resources)  # nothing outside the device's own topics
    assert "topic/*" not in text and "topicfilter/*" not in text


def test_thing_groups_are_the_ones_deploy_uses():
    from cloud.aws.greengrass import THING_GROUPS

    t = _load("iot.yaml")
    defaults = {t["Parameters"][p]["Default"] for p in ("CanaryGroupName", "FleetGroupName")}
    assert defaults == set(THING_GROUPS.values())
    assert len(_resources(t, "AWS::IoT::ThingGroup")) == 2


def test_codepipeline_has_a_manual_approval_before_promotion():
    t = _load("cicd.yaml")
    (pipeline,) = _resources(t, "AWS::CodePipeline::Pipeline").values()
    stages = [(s["Name"], [a["ActionTypeId"]["Category"] for a in s["Actions"]]) for s in pipeline["Properties"]["Stages"]]
    assert stages == [("Source", ["Source"]), ("Build", ["Build"]), ("Approve", ["Approval"]), ("Promote", ["Build"])]
    promote = t["Resources"]["Promote"]["Properties"]["Source"]["BuildSpec"]
    assert "approve" in promote and "PendingManualApproval" in promote


def test_buildspec_tests_then_upserts_and_starts_the_pipeline():
    import yaml

    spec = yaml.safe_load((REPO / "buildspec.yml").read_text())
    pre = " ".join(spec["phases"]["pre_build"]["commands"])
    build = " ".join(spec["phases"]["build"]["commands"])
    assert "make test" in pre
    assert build.index("cloud.pipeline upsert") < build.index("cloud.pipeline start") < build.index("--wait")


def test_telemetry_rule_role_is_assumed_by_iot_for_this_rule_only():
    t = _load("telemetry.yaml")
    (role,) = _resources(t, "AWS::IAM::Role").values()
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "iot.amazonaws.com"}
    # confused-deputy guard: only this account's rule of this name may use the role
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert "rule/${RuleName}" in json.dumps(trust["Condition"]["ArnLike"]["aws:SourceArn"])
    (rule,) = _resources(t, "AWS::IoT::TopicRule").values()
    assert [list(a) for a in rule["Properties"]["TopicRulePayload"]["Actions"]] == [["S3"]]
