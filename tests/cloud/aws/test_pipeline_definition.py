"""The SageMaker pipeline definition: steps, dependencies, condition, parameters, register step - built offline."""

from __future__ import annotations

import json

import pytest

from cloud.params import load_params
from tests.cloud.aws.conftest import BUCKET, REGION, ROLE_ARN, stub

PARAMS = load_params()


def _steps(definition):
    """Every step by name, the condition's branches included."""
    out = {}
    for step in definition["Steps"]:
        out[step["Name"]] = step
        if step["Type"] == "Condition":
            for branch in ("IfSteps", "ElseSteps"):
                for inner in step["Arguments"][branch]:
                    out[inner["Name"]] = inner
    return out


def _refs(node) -> set[str]:
    """The ``Get`` references anywhere under ``node`` (how SageMaker sees data dependencies)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Get" and isinstance(v, str):
                found.add(v)
            else:
                found |= _refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _refs(v)
    return found


def _depends_on(step) -> set[str]:
    return {r.split(".")[1] for r in _refs(step["Arguments"]) if r.startswith("Steps.")}


def test_steps_and_their_types(sagemaker_definition):
    # Given the definition built offline from params.json (which distills), When its steps are listed,
    # Then they are the local pipeline's, the student's Distill after Train
    assert PARAMS.distill.layers > 0, "these tests read the definition of a params.json that distills"
    d, _ = sagemaker_definition
    assert [(s["Name"], s["Type"]) for s in d["Steps"]] == [
        ("PrepareData", "Processing"), ("Train", "Training"), ("Distill", "Training"), ("Evaluate", "Processing"),
        ("CheckQualityGate", "Condition")]
    cond = d["Steps"][4]["Arguments"]
    assert [(s["Name"], s["Type"]) for s in cond["IfSteps"]] == [("RegisterModel", "RegisterModel"),
                                                                  ("CompileEdge", "Processing")]
    assert [(s["Name"], s["Type"]) for s in cond["ElseSteps"]] == [("QualityGateFailed", "Fail")]


def test_data_dependencies_chain_the_steps(sagemaker_definition):
    d, _ = sagemaker_definition
    steps = _steps(d)
    assert _depends_on(steps["PrepareData"]) == set()
    assert _depends_on(steps["Train"]) == {"PrepareData"}
    assert _depends_on(steps["Distill"]) == {"PrepareData", "Train"}
    assert _depends_on(steps["Evaluate"]) == {"PrepareData", "Train", "Distill"}
    assert _depends_on(steps["RegisterModel"]) == {"Train", "Distill", "Evaluate"}
    assert "Steps.RegisterModel.ModelPackageArn" in _refs(steps["CompileEdge"]["Arguments"])
    assert _depends_on(steps["CompileEdge"]) == {"RegisterModel", "Evaluate"}


def test_parameters_take_their_defaults_from_params_json(sagemaker_definition):
    d, _ = sagemaker_definition
    params = {p["Name"]: p for p in d["Parameters"]}
    assert list(params) == ["InputData", "ProcessingInstanceType", "TrainingInstanceType", "MinMacroF1",
                            "MinAccuracy", "MaxInt8Drop", "ModelPackageGroupName", "ModelApprovalStatus", "NeoCompile"]
    assert params["MinAccuracy"]["DefaultValue"] == PARAMS.gate.min_accuracy
    assert params["MinMacroF1"] == {"Name": "MinMacroF1", "Type": "Float",
                                    "DefaultValue": PARAMS.gate.min_macro_f1}
    assert params["MaxInt8Drop"]["DefaultValue"] == PARAMS.gate.max_int8_drop
    assert params["ModelPackageGroupName"]["DefaultValue"] == PARAMS.model_package_group
    assert params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    assert params["InputData"]["DefaultValue"] == f"s3://{BUCKET}/slm-intents/raw/"
    # Neo does not compile this model family (docs/aws.md), so the default skips it; NeoCompile=true still tries
    assert params["NeoCompile"] == {"Name": "NeoCompile", "Type": "String", "DefaultValue": "false"}


@pytest.mark.parametrize("flags, neo", [([], False), (["--neo"], True), (["--no-neo"], False)])
def test_neo_compile_default_is_off_unless_asked(flags, neo):
    import argparse

    from cloud.aws.cli import add_pipeline_commands

    parser = argparse.ArgumentParser()
    add_pipeline_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["definition", "--region", REGION, "--role-arn", ROLE_ARN, "--bucket", BUCKET, *flags])
    assert args.neo is neo


def test_condition_gates_on_int8_macro_f1_and_the_int8_drop(sagemaker_definition):
    d, _ = sagemaker_definition
    steps = _steps(d)
    evaluate = steps["Evaluate"]
    files = {f["PropertyFileName"]: f for f in evaluate["PropertyFiles"]}
    assert files["EvaluationMetrics"] == {"PropertyFileName": "EvaluationMetrics", "OutputName": "evaluation",
                                          "FilePath": "metrics.json"}
    assert files["QualityGate"]["FilePath"] == "gate.json"
    f1, drop, accuracy = d["Steps"][4]["Arguments"]["Conditions"]
    assert accuracy["Type"] == "GreaterThanOrEqualTo" and accuracy["RightValue"] == {"Get": "Parameters.MinAccuracy"}
    assert accuracy["LeftValue"]["Std:JsonGet"]["Path"] == "int8.accuracy"
    assert f1["Type"] == "GreaterThanOrEqualTo"
    assert f1["LeftValue"] == {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationMetrics"},
                                               "Path": "int8.macro_f1"}}
    assert f1["RightValue"] == {"Get": "Parameters.MinMacroF1"}
    assert drop["Type"] == "LessThanOrEqualTo"
    assert drop["LeftValue"]["Std:JsonGet"]["Path"] == "int8_drop"
    assert drop["RightValue"] == {"Get": "Parameters.MaxInt8Drop"}
    assert "Parameters.MinMacroF1" in _refs(steps["QualityGateFailed"]["Arguments"])


def test_register_step_is_pending_manual_approval_in_staging_with_metrics(sagemaker_definition):
    d, _ = sagemaker_definition
    register = _steps(d)["RegisterModel"]["Arguments"]
    assert register["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert register["ModelPackageGroupName"] == {"Get": "Parameters.ModelPackageGroupName"}
    assert register["ModelLifeCycle"]["Stage"] == "Staging"
    stats = register["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert stats["ContentType"] == "application/json"
    assert stats["S3Uri"]["Std:Join"]["Values"] == [
        {"Get": "Steps.Evaluate.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri"}, "metrics.json"]
    meta = register["CustomerMetadataProperties"]
    assert {"metrics.int8.macro_f1", "metrics.fp32.macro_f1", "metrics.agreement", "lineage.run_id",
            "artifacts.model", "artifacts.evaluation"} <= set(meta)
    assert meta["lineage.run_id"] == {"Get": "Execution.PipelineExecutionId"}
    # the package's model is the one that ships: the student
    assert register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == {
        "Get": "Steps.Distill.ModelArtifacts.S3ModelArtifacts"}
    assert meta["artifacts.model"] == {"Get": "Steps.Distill.ModelArtifacts.S3ModelArtifacts"}


def test_compile_step_runs_neo_for_linux_arm64_and_writes_to_edge(sagemaker_definition):
    d, _ = sagemaker_definition
    compile_edge = _steps(d)["CompileEdge"]["Arguments"]
    args = compile_edge["AppSpecification"]["ContainerArguments"]
    assert args[0] == "compile-edge"
    assert args[args.index("--neo") + 1] == {"Get": "Parameters.NeoCompile"}
    assert args[args.index("--role-arn") + 1] == ROLE_ARN and args[args.index("--region") + 1] == REGION
    (edge,) = compile_edge["ProcessingOutputConfig"]["Outputs"]
    assert edge["S3Output"]["S3Uri"] == f"s3://{BUCKET}/slm-intents/edge"
    assert "CacheConfig" not in _steps(d)["CompileEdge"]  # a new version is never a cache hit


def test_every_job_runs_the_source_bundle_of_this_checkout(sagemaker_definition):
    d, digest = sagemaker_definition
    steps = _steps(d)
    code = f"s3://{BUCKET}/slm-intents/code/{digest}"
    for name in ("PrepareData", "Evaluate", "CompileEdge"):
        app = steps[name]["Arguments"]["AppSpecification"]
        assert app["ContainerEntrypoint"] == ["python3", "/opt/ml/processing/input/code/sm_entry.py"]
        inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in steps[name]["Arguments"]["ProcessingInputs"]}
        assert inputs["code"] == f"{code}/sm_entry.py" and inputs["source"] == f"{code}/sourcedir.tar.gz"
    for name, step in (("Train", "train"), ("Distill", "distill")):
        hp = steps[name]["Arguments"]["HyperParameters"]
        assert json.loads(hp["sagemaker_submit_directory"]) == f"{code}/sourcedir.tar.gz"
        assert json.loads(hp["sagemaker_program"]) == "sm_entry.py" and json.loads(hp["step"]) == step
        assert steps[name]["Arguments"]["RoleArn"] == ROLE_ARN


def test_prepare_train_distill_and_evaluate_are_cached(sagemaker_definition):
    d, _ = sagemaker_definition
    steps = _steps(d)
    for name in ("PrepareData", "Train", "Distill", "Evaluate"):
        assert steps[name]["CacheConfig"] == {"Enabled": True, "ExpireAfter": "P30D"}


def _channels(step) -> dict:
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in step["Arguments"]["InputDataConfig"]}


def _inputs(step) -> dict:
    return {i["InputName"]: i["S3Input"] for i in step["Arguments"]["ProcessingInputs"]}


TRAIN_MODEL = {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
STUDENT_MODEL = {"Get": "Steps.Distill.ModelArtifacts.S3ModelArtifacts"}
PROCESSED = {"Get": "Steps.PrepareData.ProcessingOutputConfig.Outputs['processed'].S3Output.S3Uri"}


def test_distill_trains_the_student_on_the_processed_data_from_the_train_artifact(sagemaker_definition):
    # Given the definition of a params.json that distills, When the Distill step is read,
    # Then it is a training job like Train's (image, instance parameter, volume, stopping condition, output
    # path), its channels are the processed data and Train's model.tar.gz (SM_CHANNEL_TEACHER), and it is cached
    d, _ = sagemaker_definition
    steps = _steps(d)
    distill, train = steps["Distill"]["Arguments"], steps["Train"]["Arguments"]
    assert _channels(steps["Distill"]) == {"train": PROCESSED, "teacher": TRAIN_MODEL}
    assert _channels(steps["Train"]) == {"train": PROCESSED}
    for key in ("AlgorithmSpecification", "ResourceConfig", "StoppingCondition", "OutputDataConfig", "RoleArn",
                "Environment"):
        assert distill[key] == train[key], key
    assert distill["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert steps["Distill"]["CacheConfig"] == steps["Train"]["CacheConfig"]


def test_evaluate_scores_the_student_and_the_teacher(sagemaker_definition):
    d, _ = sagemaker_definition
    inputs = _inputs(_steps(d)["Evaluate"])
    assert inputs["model"]["S3Uri"] == STUDENT_MODEL
    assert inputs["model"]["LocalPath"] == "/opt/ml/processing/input/model"  # the evaluate job's --model default
    assert inputs["teacher"]["S3Uri"] == TRAIN_MODEL
    assert inputs["teacher"]["LocalPath"] == "/opt/ml/processing/input/teacher"  # the evaluate job's --teacher default


def test_the_registered_package_records_the_teacher_it_was_distilled_from(sagemaker_definition):
    # the package serves the student; the teacher is in its metadata under the local registry's names
    d, _ = sagemaker_definition
    meta = _steps(d)["RegisterModel"]["Arguments"]["CustomerMetadataProperties"]
    assert meta["artifacts.teacher_model"] == TRAIN_MODEL and meta["lineage.distilled_from.model"] == TRAIN_MODEL
    assert meta["lineage.distilled_from.training_job"] == {"Get": "Steps.Train.TrainingJobName"}
    assert meta["lineage.distilled_from.layers"] == str(PARAMS.distill.layers)
    teacher_f1 = meta["metrics.teacher_fp32.macro_f1"]["Std:Join"]["Values"][0]["Std:JsonGet"]
    assert teacher_f1 == {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationMetrics"},
                          "Path": "teacher_fp32.macro_f1"}
    assert len(meta) <= 50  # SageMaker's limit on CustomerMetadataProperties


def test_without_distill_there_is_no_distill_step_and_the_trained_model_ships(sagemaker_definition_without_distill):
    # Given params with distill.layers 0, When the definition is built, Then Train's artifact is evaluated and
    # registered, there is no teacher input and no teacher in the package's metadata
    d, _ = sagemaker_definition_without_distill
    steps = _steps(d)
    assert [s["Name"] for s in d["Steps"]] == ["PrepareData", "Train", "Evaluate", "CheckQualityGate"]
    assert "Distill" not in steps
    inputs = _inputs(steps["Evaluate"])
    assert inputs["model"]["S3Uri"] == TRAIN_MODEL and "teacher" not in inputs
    register = steps["RegisterModel"]["Arguments"]
    assert register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == TRAIN_MODEL
    assert not any("teacher" in k or "distilled_from" in k for k in register["CustomerMetadataProperties"])
    assert _depends_on(steps["Evaluate"]) == {"PrepareData", "Train"}


def test_upsert_uploads_the_code_creates_the_group_and_the_pipeline(sagemaker_definition, s3_bucket):
    import boto3

    from cloud.aws.code import collect_source
    from cloud.aws.pipeline import PipelineBuild, PipelineConfig, upload_source, upsert

    # Given an empty bucket and registry, When the pipeline is upserted
    config = PipelineConfig(region=REGION, role_arn=ROLE_ARN, bucket=BUCKET)
    first = upsert(config)
    assert first["pipeline_arn"].endswith(":pipeline/slm-intents")
    assert first["code"] == f"s3://{BUCKET}/slm-intents/code/{sagemaker_definition[1]}"
    assert first["uploaded"] == [f"{first['code']}/sourcedir.tar.gz", f"{first['code']}/sm_entry.py"]
    # Then the same code is not uploaded twice
    build = PipelineBuild(pipeline=None, source=collect_source(), code_uri=first["code"], params=PARAMS, config=config)
    assert upload_source(build) == []
    sm = boto3.client("sagemaker", region_name=REGION)
    stored = json.loads(sm.describe_pipeline(PipelineName="slm-intents")["PipelineDefinition"])
    assert [s["Name"] for s in stored["Steps"]] == ["PrepareData", "Train", "Distill", "Evaluate", "CheckQualityGate"]
    assert sm.describe_model_package_group(ModelPackageGroupName=PARAMS.model_package_group)


def test_upsert_without_credentials_says_so(sagemaker_definition, monkeypatch):
    from cloud.aws.errors import AwsCallFailed
    from cloud.aws.pipeline import PipelineConfig, upsert

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(AwsCallFailed, match="no AWS credentials"):
        upsert(PipelineConfig(region=REGION, role_arn=ROLE_ARN, bucket=BUCKET))


def test_start_passes_parameter_overrides(moto_aws):
    import boto3

    from cloud.aws.pipeline import start

    sm = boto3.client("sagemaker", region_name=REGION)
    stubber = stub(sm)
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:pipeline/slm-intents/execution/abc"
    stubber.add_response("start_pipeline_execution", {"PipelineExecutionArn": arn},
                         {"PipelineName": "slm-intents", "PipelineExecutionDisplayName": "ci-7",
                          "PipelineParameters": [{"Name": "MinMacroF1", "Value": "0.96"}]})
    assert start("slm-intents", parameters={"MinMacroF1": 0.96}, display_name="ci-7", client=sm) == arn
    stubber.assert_no_pending_responses()


def test_status_reports_the_latest_execution_and_its_steps(moto_aws, capsys, monkeypatch):
    import datetime as dt

    import boto3

    import cloud.aws.pipeline as aws_pipeline
    from cloud.pipeline import main

    sm = boto3.client("sagemaker", region_name=REGION)
    stubber = stub(sm)
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:pipeline/slm-intents/execution/abc"
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    stubber.add_response("list_pipeline_executions", {"PipelineExecutionSummaries": [{"PipelineExecutionArn": arn}]},
                         {"PipelineName": "slm-intents", "SortBy": "CreationTime", "SortOrder": "Descending",
                          "MaxResults": 1})
    stubber.add_response("describe_pipeline_execution", {
        "PipelineExecutionArn": arn, "PipelineExecutionStatus": "Failed", "CreationTime": t0,
        "FailureReason": "Step failure: One or multiple steps failed."}, {"PipelineExecutionArn": arn})
    stubber.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": [
        {"StepName": "PrepareData", "StepStatus": "Succeeded", "StartTime": t0, "CacheHitResult": {
            "SourcePipelineExecutionArn": arn}},
        {"StepName": "QualityGateFailed", "StepStatus": "Failed", "FailureReason": "quality gate failed: ..."}]},
        {"PipelineExecutionArn": arn, "SortOrder": "Ascending"})
    monkeypatch.setattr(aws_pipeline, "make_client", lambda *a, **k: sm)
    rc = main(["status", "--region", REGION])
    out = capsys.readouterr().out
    assert rc == 1  # a failed execution
    assert "slm-intents: Failed" in out and "PrepareData" in out and "(cached)" in out
    assert "quality gate failed" in out
    stubber.assert_no_pending_responses()


@pytest.mark.aws
def test_upsert_on_a_real_account():
    """Needs --run-aws, credentials, SLM_AWS_BUCKET and SLM_AWS_ROLE_ARN (stacks of infra/)."""
    import os

    from cloud.aws.pipeline import PipelineConfig, upsert

    bucket, role = os.environ.get("SLM_AWS_BUCKET"), os.environ.get("SLM_AWS_ROLE_ARN")
    if not bucket or not role:
        pytest.skip("set SLM_AWS_BUCKET and SLM_AWS_ROLE_ARN")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or REGION
    result = upsert(PipelineConfig(region=region, role_arn=role, bucket=bucket, name="slm-intents-test"))
    assert result["pipeline_arn"].endswith(":pipeline/slm-intents-test")


def test_status_wait_prints_each_state_change_until_the_execution_ends(aws_env):
    import io

    import boto3

    from cloud.aws.cli import wait_for_execution

    sm = boto3.client("sagemaker", region_name=REGION)
    stubber = stub(sm)
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:pipeline/slm-intents/execution/abc"
    polls = [("Executing", [("PrepareData", "Executing")]), ("Executing", [("PrepareData", "Executing")]),
             ("Executing", [("PrepareData", "Succeeded"), ("Train", "Executing")]),
             ("Succeeded", [("PrepareData", "Succeeded"), ("Train", "Succeeded")])]
    for state, steps in polls:
        stubber.add_response("describe_pipeline_execution", {"PipelineExecutionArn": arn,
                                                             "PipelineExecutionStatus": state},
                             {"PipelineExecutionArn": arn})
        stubber.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": [
            {"StepName": n, "StepStatus": s} for n, s in steps]}, {"PipelineExecutionArn": arn, "SortOrder": "Ascending"})
    out, slept = io.StringIO(), []
    result = wait_for_execution("slm-intents", region=REGION, execution_arn=arn, client=sm, sleep=slept.append,
                                poll_s=7, out=out)
    stubber.assert_no_pending_responses()
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    # one line per change, none for the poll that changed nothing; it stops at the final state
    assert lines == ["(execution): Executing", "PrepareData: Executing", "PrepareData: Succeeded", "Train: Executing",
                     "(execution): Succeeded", "Train: Succeeded"]
    assert result["status"] == "Succeeded" and slept == [7, 7, 7]


def test_training_jobs_get_no_gate_parameters_and_evaluate_gets_them_all(sagemaker_definition):
    # the gate's parameters are read by Evaluate and the condition only: handing them to Train and Distill would
    # make a new threshold at StartPipelineExecution retrain (their cache key holds the hyperparameters)
    d, _ = sagemaker_definition
    steps = _steps(d)
    tunables = [p["Name"] for p in d["Parameters"] if p["Name"] in ("MinMacroF1", "MinAccuracy", "MaxInt8Drop")]
    for name in ("Train", "Distill"):
        hp = steps[name]["Arguments"]["HyperParameters"]
        assert sorted(hp) == ["sagemaker_program", "sagemaker_submit_directory", "step"]
    args = steps["Evaluate"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert {r.split(".")[1] for r in _refs(args) if r.startswith("Parameters.")} == set(tunables)


def test_training_hyperparameters_carry_the_non_gate_parameters_within_sagemakers_limits(no_network):
    import botocore.session

    from cloud.aws.pipeline import _import_sdk, _sdk_environment, training_hyperparameters
    from cloud.aws.errors import AwsError

    with _sdk_environment(REGION, offline=True):
        s = _import_sdk()
        tunables = {"train.epochs": s.ParameterInteger(name="TrainEpochs", default_value=3),
                    "train.base_model": s.ParameterString(name="BaseModel", default_value="m"),
                    "gate.min_macro_f1": s.ParameterFloat(name="MinMacroF1", default_value=0.9)}
        kinds = {"train.epochs": "Integer", "train.base_model": "String", "gate.min_macro_f1": "Float"}
        hp = training_hyperparameters(tunables, kinds, s.Join)
        exprs = {k: v.expr for k, v in hp.items()}
        with pytest.raises(AwsError, match="longer than 256"):
            training_hyperparameters({"train." + "x" * 260: tunables["train.epochs"]}, {}, s.Join)
    # a number as it is (the toolkit JSON-decodes it), a string in quotes; the gate's stays out
    assert exprs == {
        "set.train.epochs": {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.TrainEpochs"}]}},
        "set.train.base_model": {"Std:Join": {"On": "", "Values": ['"', {"Get": "Parameters.BaseModel"}, '"']}}}
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("HyperParameters")
    assert shape.metadata["max"] == 100 and shape.key.metadata["max"] == 256 and shape.value.metadata["max"] == 2500


def test_a_definition_built_with_overrides_uses_them_and_ships_them_to_the_jobs(tmp_path):
    from cloud.aws.code import collect_source
    from tests.cloud.aws.conftest import _build_definition

    d, _ = _build_definition(tmp_path, "--set", "gate.min_macro_f1=0.9", "--set", "train.epochs=2")
    params = {p["Name"]: p for p in d["Parameters"]}
    assert params["MinMacroF1"]["DefaultValue"] == 0.9
    effective = PARAMS.override({"gate.min_macro_f1": 0.9, "train.epochs": 2})
    digest = collect_source(params_json=(json.dumps(effective.to_dict(), indent=2) + "\n").encode()).digest
    hp = _steps(d)["Train"]["Arguments"]["HyperParameters"]
    assert json.loads(hp["sagemaker_submit_directory"]) == f"s3://{BUCKET}/slm-intents/code/{digest}/sourcedir.tar.gz"
    assert digest != collect_source().digest


def test_set_values_are_json_else_strings_and_a_bad_one_is_refused():
    from cloud.params import parse_overrides
    from cloud.errors import CloudError

    assert parse_overrides(["train.epochs=3", "gate.min_macro_f1=0.9", "model_name=snips", "x.y=a=b"]) == {
        "train.epochs": 3, "gate.min_macro_f1": 0.9, "model_name": "snips", "x.y": "a=b"}
    with pytest.raises(CloudError, match="--set wants KEY=VALUE"):
        parse_overrides(["train.epochs"])
