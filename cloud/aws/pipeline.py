"""The local pipeline as a SageMaker Pipelines definition (SageMaker Python SDK 3.x), and upsert / start / status.

::

    PrepareData (Processing: cloud.data + cloud.validate, GX)
      -> Train (Training: cloud.train, the teacher)
      -> Distill (Training: cloud.steps.distill_step, the student that ships; only with distill.layers > 0)
      -> Evaluate (Processing: cloud.compile INT8 candidate + cloud.evaluate; metrics.json, gate.json; the
         student's, with the teacher's FP32 scores beside them)
      -> CheckQualityGate (Condition: INT8 macro-F1 >= MinMacroF1, accuracy >= MinAccuracy, FP32 - INT8 <= MaxInt8Drop)
           ├─ yes: RegisterModel (Model Registry: PendingManualApproval, ModelLifeCycle Staging, metrics; the
           │        model that ships (the student's artifact when distilled) in the PyTorch inference image,
           │        served by its code/inference.py; the teacher's artifact in the metadata properties)
           │        -> CompileEdge (Processing: SageMaker Neo for LINUX/ARM64, falling back to ONNX Runtime
           │           INT8; the bundle goes to s3://<bucket>/slm-intents/edge/<version>/)
           └─ no:  QualityGateFailed (Fail)

Every job runs ``sm_entry.py`` of the source bundle (:mod:`cloud.aws.code`), i.e. the same step modules as the
local run, in the PyTorch CPU container of the region. The definition is built offline: the SDK is imported
with ``AWS_DEFAULT_REGION`` set and IAM role validation off, the bucket is given explicitly, and code and data
are ``s3://`` URIs, so no credentials or network are needed until ``upsert``.

The SageMaker SDK (``pip install 'slm-intents[aws]'``) is imported inside these functions only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Mapping

from ..inference.handler import MODEL_NAME_ENV
from ..params import Params, load_params, parameter_fields
from .clients import AWS_EXTRA, call, make_client, make_session
from .code import ENTRY_SCRIPT, SERVING_ENVIRONMENT, TARBALL, SourceBundle, collect_source
from .errors import AwsCallFailed, AwsError, DependencyMissing
from .s3store import S3Store

__all__ = ["PipelineConfig", "PipelineBuild", "STEP_NAMES", "PARAMETER_NAMES", "build_pipeline", "definition",
           "training_hyperparameters", "upsert", "start", "status"]

PYTORCH_VERSION = "2.6"
PYTORCH_PY = "py312"
TELEMETRY_OFF = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
#: every step the definition can hold; ``Distill`` is there only when ``distill.layers`` > 0
STEP_NAMES = ("PrepareData", "Train", "Distill", "Evaluate", "CheckQualityGate", "RegisterModel", "CompileEdge",
              "QualityGateFailed")
PARAMETER_NAMES = ("InputData", "ProcessingInstanceType", "TrainingInstanceType", "MinMacroF1", "MaxInt8Drop",
                   "ModelPackageGroupName", "ModelApprovalStatus", "NeoCompile")
PROC = "/opt/ml/processing"


@dataclass(frozen=True)
class PipelineConfig:
    """What the definition needs besides ``pipelines/params.json``.

    region: the AWS region the pipeline runs in.
    role_arn: the SageMaker execution role (jobs, the pipeline itself, and Neo assume it).
    bucket: the store's bucket; store_prefix: an optional key prefix above ``slm-intents/``.
    name: the pipeline's name.
    params_path: the params file (default ``pipelines/params.json``); its values become parameter defaults.
    image_uri: the image of the processing and training jobs (default: the region's PyTorch 2.6 CPU training image).
    inference_image_uri: the image recorded in the registered model package (default: PyTorch 2.6 CPU inference).
    processing_instance_type, training_instance_type: defaults of the matching pipeline parameters.
    neo: default of the ``NeoCompile`` parameter (try SageMaker Neo in ``CompileEdge``); off, since Neo does not
        compile this model family (docs/aws.md), and a user can still start an execution with ``NeoCompile=true``.
    max_train_seconds: the training job's stopping condition.
    cache_expire_after: ISO 8601 duration for step caching of prepare, train, distill and evaluate.
    overrides: ``{"train.epochs": 3}``-style values (``--set KEY=VALUE``) applied to the params file; the
        effective params become the source bundle's ``pipelines/params.json``, which every job reads, and the
        definition is built from them (parameter defaults, the Distill step, the registered model's name).
    """

    region: str
    role_arn: str
    bucket: str
    name: str = "slm-intents"
    store_prefix: str = ""
    params_path: Path | None = None
    image_uri: str | None = None
    inference_image_uri: str | None = None
    processing_instance_type: str = "ml.m5.xlarge"
    training_instance_type: str = "ml.m5.2xlarge"
    neo: bool = False
    max_train_seconds: int = 4 * 3600
    cache_expire_after: str = "P30D"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def load_params(self) -> Params:
        """The params the definition and its jobs use: the file, with ``overrides`` applied."""
        params = load_params(self.params_path)
        return params.override(dict(self.overrides)) if self.overrides else params

    @property
    def store(self) -> S3Store:
        return S3Store(bucket=self.bucket, prefix=self.store_prefix, region=self.region)


@dataclass
class PipelineBuild:
    """A built pipeline: the SDK ``Pipeline``, the source bundle its jobs run, and where that bundle goes."""

    pipeline: Any
    source: SourceBundle
    code_uri: str
    params: Params
    config: PipelineConfig
    session: Any = field(repr=False, default=None)

    def definition(self) -> dict[str, Any]:
        with _quiet_sdk():
            return json.loads(self.pipeline.definition())


@contextlib.contextmanager
def _quiet_sdk() -> Iterator[None]:
    # Expected while *defining* a pipeline: the SDK says no job starts, and its own modules import their
    # deprecated shims. Anything else still surfaces.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Running within a PipelineSession", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sagemaker(\.|$)")
        warnings.filterwarnings("ignore", message=r".*(has been moved to|is deprecated).*", category=DeprecationWarning)
        yield


@contextlib.contextmanager
def _sdk_environment(region: str, *, offline: bool) -> Iterator[None]:
    """Region set and IAM role validation off while the SDK builds the definition (restored afterwards).

    Importing the SDK creates a default boto3 client at module level, which looks for credentials; ``offline``
    keeps that look-up off the EC2 instance metadata service, so building a definition opens no connection.
    """
    names = ("AWS_DEFAULT_REGION", "SAGEMAKER_VALIDATE_ROLE", "AWS_EC2_METADATA_DISABLED")
    saved = {k: os.environ.get(k) for k in names}
    os.environ["AWS_DEFAULT_REGION"] = region
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    if offline:
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        with _quiet_sdk():
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _import_sdk() -> SimpleNamespace:
    """The SDK 3.x names the definition uses (sagemaker.workflow is gone in 3.x: mlops / core / train / serve)."""
    try:
        from sagemaker.core import image_uris
        from sagemaker.core.model_life_cycle import ModelLifeCycle
        from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
        from sagemaker.core.processing import ScriptProcessor
        from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
        from sagemaker.core.training.configs import Compute, InputData, OutputDataConfig, StoppingCondition
        from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo, ConditionLessThanOrEqualTo
        from sagemaker.core.workflow.execution_variables import ExecutionVariables
        from sagemaker.core.workflow.functions import Join, JsonGet
        from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
        from sagemaker.core.workflow.pipeline_context import PipelineSession
        from sagemaker.core.workflow.properties import PropertyFile
        from sagemaker.mlops.workflow.condition_step import ConditionStep
        from sagemaker.mlops.workflow.fail_step import FailStep
        from sagemaker.mlops.workflow.model_step import ModelStep
        from sagemaker.mlops.workflow.pipeline import Pipeline
        from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep, TrainingStep
        from sagemaker.serve.model_builder import ModelBuilder
        from sagemaker.train import ModelTrainer
    except ImportError as exc:
        raise DependencyMissing(f"the SageMaker Python SDK 3.x is not installed ({exc}): {AWS_EXTRA}") from None
    return SimpleNamespace(
        image_uris=image_uris, ModelLifeCycle=ModelLifeCycle, MetricsSource=MetricsSource, ModelMetrics=ModelMetrics,
        ScriptProcessor=ScriptProcessor, ProcessingInput=ProcessingInput, ProcessingOutput=ProcessingOutput,
        ProcessingS3Input=ProcessingS3Input, ProcessingS3Output=ProcessingS3Output, Compute=Compute,
        InputData=InputData, OutputDataConfig=OutputDataConfig, StoppingCondition=StoppingCondition,
        ConditionGreaterThanOrEqualTo=ConditionGreaterThanOrEqualTo,
        ConditionLessThanOrEqualTo=ConditionLessThanOrEqualTo, ExecutionVariables=ExecutionVariables, Join=Join,
        JsonGet=JsonGet, ParameterFloat=ParameterFloat, ParameterInteger=ParameterInteger,
        ParameterString=ParameterString,
        PipelineSession=PipelineSession, PropertyFile=PropertyFile, ConditionStep=ConditionStep, FailStep=FailStep,
        ModelStep=ModelStep, Pipeline=Pipeline, CacheConfig=CacheConfig, ProcessingStep=ProcessingStep,
        TrainingStep=TrainingStep, ModelBuilder=ModelBuilder, ModelTrainer=ModelTrainer)


#: sections of params.json only the Evaluate job and the quality gate read: their pipeline parameters are not
#: handed to the training jobs, so a new gate threshold at StartPipelineExecution keeps Train and Distill cached
EVALUATION_ONLY_SECTIONS = ("gate",)
#: CreateTrainingJob HyperParameters (botocore's service model): at most 100 entries, keys <= 256 characters; the
#: values (<= 2500, or 256 in its documentation) are pipeline parameters resolved at run time, checked by SageMaker
HYPERPARAMETER_LIMITS = {"entries": 100, "key": 256}
#: the hyperparameter key prefix of a parameter override; the training toolkit passes ``--set.KEY VALUE``
SET_PREFIX = "set."


def training_hyperparameters(tunables: Mapping[str, Any], kinds: Mapping[str, str],
                             join: Callable[..., Any]) -> dict[str, Any]:
    """The pipeline parameters a training job gets as hyperparameters: ``{"set.train.epochs": <parameter>}``.

    Every hyperparameter value is a string that the SageMaker training toolkit JSON-decodes before it passes
    ``--set.KEY VALUE`` to ``sm_entry.py`` (:func:`cloud.aws.steps.hyperparameter_overrides` reads them back),
    so a number is sent as it is and a string in quotes. The gate's parameters stay out
    (:data:`EVALUATION_ONLY_SECTIONS`).
    """
    out: dict[str, Any] = {}
    for key, param in tunables.items():
        if key.split(".", 1)[0] in EVALUATION_ONLY_SECTIONS:
            continue
        name = f"{SET_PREFIX}{key}"
        if len(name) > HYPERPARAMETER_LIMITS["key"]:
            raise AwsError(f"hyperparameter {name!r} is longer than {HYPERPARAMETER_LIMITS['key']} characters")
        out[name] = join(on="", values=['"', param, '"'] if kinds.get(key) == "String" else [param])
    if len(out) + 3 > HYPERPARAMETER_LIMITS["entries"]:  # + sagemaker_program, sagemaker_submit_directory, step
        raise AwsError(f"{len(out) + 3} training hyperparameters; SageMaker takes at most "
                       f"{HYPERPARAMETER_LIMITS['entries']}")
    return out


def build_pipeline(config: PipelineConfig, *, boto_session: Any = None, source: SourceBundle | None = None) -> PipelineBuild:
    """Build the SageMaker pipeline; offline unless ``boto_session`` has credentials and something uses them."""
    params = config.load_params()
    # with overrides the bundle carries the effective params, so the jobs read what the definition was built from
    effective = (json.dumps(params.to_dict(), indent=2) + "\n").encode() if config.overrides else None
    source = source or collect_source(params_path=config.params_path, params_json=effective)
    store = config.store
    code = f"{store.code(source.digest)}"
    with _sdk_environment(config.region, offline=boto_session is None):
        pipeline, session = _define(_import_sdk(), config, params, store, code, boto_session)
    return PipelineBuild(pipeline=pipeline, source=source, code_uri=code, params=params, config=config,
                         session=session)


def _define(s: SimpleNamespace, config: PipelineConfig, params: Params, store: S3Store, code: str,
            boto_session: Any) -> tuple[Any, Any]:
    boto_session = boto_session or make_session(config.region)
    session = s.PipelineSession(boto_session=boto_session, default_bucket=config.bucket,
                                default_bucket_prefix=store.key("pipeline"), sagemaker_config=TELEMETRY_OFF)
    image = config.image_uri or s.image_uris.retrieve(
        framework="pytorch", region=config.region, version=PYTORCH_VERSION, py_version=PYTORCH_PY,
        instance_type="ml.m5.xlarge", image_scope="training")
    inference_image = config.inference_image_uri or s.image_uris.retrieve(
        framework="pytorch", region=config.region, version=PYTORCH_VERSION, py_version=PYTORCH_PY,
        instance_type="ml.m5.xlarge", image_scope="inference")
    run_id = s.ExecutionVariables.PIPELINE_EXECUTION_ID
    cache = s.CacheConfig(enable_caching=True, expire_after=config.cache_expire_after)

    # parameters: defaults from params.json and the config
    input_data = s.ParameterString(name="InputData", default_value=store.raw() + "/")
    processing_type = s.ParameterString(name="ProcessingInstanceType", default_value=config.processing_instance_type)
    training_type = s.ParameterString(name="TrainingInstanceType", default_value=config.training_instance_type)
    # the fields of cloud.params marked as pipeline parameters, with their values as defaults; each job gets them
    # back as ``--set key=value``, so a parameter given at StartPipelineExecution reaches the step functions
    kinds = {"Float": s.ParameterFloat, "Integer": s.ParameterInteger, "String": s.ParameterString}
    tunables = {key: kinds[kind](name=name, default_value=value) for name, key, value, kind in parameter_fields(params)}
    min_f1, max_drop = tunables["gate.min_macro_f1"], tunables["gate.max_int8_drop"]
    min_acc = tunables["gate.min_accuracy"]
    overrides = [a for key, param in tunables.items() for a in ("--set", s.Join(on="", values=[f"{key}=", param]))]
    training_overrides = training_hyperparameters(tunables, {k: kind for _, k, _, kind in parameter_fields(params)},
                                                  s.Join)
    group = s.ParameterString(name="ModelPackageGroupName", default_value=params.model_package_group)
    approval = s.ParameterString(name="ModelApprovalStatus", default_value="PendingManualApproval")
    neo = s.ParameterString(name="NeoCompile", default_value="true" if config.neo else "false")
    parameters = [input_data, processing_type, training_type, *tunables.values(), group, approval, neo]

    def per_run(uri: str) -> Any:
        return s.Join(on="/", values=[uri, run_id])

    def s3_in(name: str, uri: Any, local: str) -> Any:
        return s.ProcessingInput(input_name=name, s3_input=s.ProcessingS3Input(
            s3_uri=uri, local_path=local, s3_data_type="S3Prefix", s3_input_mode="File"))

    def s3_out(name: str, uri: Any, local: str) -> Any:
        return s.ProcessingOutput(output_name=name, s3_output=s.ProcessingS3Output(
            s3_uri=uri, local_path=local, s3_upload_mode="EndOfJob"))

    def processor(job: str) -> Any:
        return s.ScriptProcessor(role=config.role_arn, image_uri=image, command=["python3"], instance_count=1,
                                 instance_type=processing_type, volume_size_in_gb=30,
                                 base_job_name=f"{config.name}-{job}", sagemaker_session=session,
                                 env={"PYTHONUNBUFFERED": "1"})

    source_input = s3_in("source", f"{code}/{TARBALL}", f"{PROC}/input/source")
    entry = f"{code}/{ENTRY_SCRIPT}"

    # 1. prepare + validate
    prepare = s.ProcessingStep(
        name="PrepareData", description="cloud.data (prepare) and cloud.validate (Great Expectations)",
        cache_config=cache,
        step_args=processor("prepare").run(
            code=entry, arguments=["prepare"],
            inputs=[s3_in("data", input_data, f"{PROC}/input/data"), source_input],
            outputs=[s3_out("processed", per_run(store.processed()), f"{PROC}/output/processed"),
                     s3_out("validation", per_run(store.uri_of("validation")), f"{PROC}/output/validation")]))
    processed = prepare.properties.ProcessingOutputConfig.Outputs["processed"].S3Output.S3Uri

    # 2. train (the SageMaker training toolkit unpacks sourcedir.tar.gz and runs sm_entry.py --step train)
    def training(job: str, description: str, channels: Mapping[str, Any]) -> Any:
        trainer = s.ModelTrainer(
            training_image=image, role=config.role_arn, sagemaker_session=session,
            base_job_name=f"{config.name}-{job}",
            compute=s.Compute(instance_type=training_type, instance_count=1, volume_size_in_gb=30),
            stopping_condition=s.StoppingCondition(max_runtime_in_seconds=config.max_train_seconds),
            output_data_config=s.OutputDataConfig(s3_output_path=store.uri_of("models")),
            hyperparameters={"sagemaker_program": json.dumps(ENTRY_SCRIPT),
                             "sagemaker_submit_directory": json.dumps(f"{code}/{TARBALL}"),
                             "step": json.dumps(job), **training_overrides},
            environment={"PYTHONUNBUFFERED": "1"},
            input_data_config=[s.InputData(channel_name=name, data_source=uri) for name, uri in channels.items()])
        return s.TrainingStep(name=job.capitalize(), description=description, cache_config=cache,
                              step_args=trainer.train())

    train = training("train", "cloud.train: fine-tune MiniLM-L6", {"train": processed})
    teacher_data = model_data = train.properties.ModelArtifacts.S3ModelArtifacts
    training_steps = [train]

    # 2b. distill: the shallower student that ships, taught by the trained model (its model.tar.gz is the
    # "teacher" channel: SM_CHANNEL_TEACHER); without it (distill.layers 0) the trained model ships
    distilled = params.distill.layers > 0
    if distilled:
        distill = training("distill", f"cloud.steps.distill_step: the {params.distill.layers}-layer student of Train",
                           {"train": processed, "teacher": teacher_data})
        model_data = distill.properties.ModelArtifacts.S3ModelArtifacts
        training_steps.append(distill)

    # 3. evaluate: INT8 candidate bundle (cloud.compile) scored with cloud.evaluate
    metrics_file = s.PropertyFile(name="EvaluationMetrics", output_name="evaluation", path="metrics.json")
    gate_file = s.PropertyFile(name="QualityGate", output_name="evaluation", path="gate.json")
    evaluate = s.ProcessingStep(
        name="Evaluate", description="cloud.compile (ONNX + static INT8 candidate) and cloud.evaluate",
        cache_config=cache, property_files=[metrics_file, gate_file],
        step_args=processor("evaluate").run(
            code=entry, arguments=["evaluate", *overrides],
            inputs=[s3_in("model", model_data, f"{PROC}/input/model"),
                    *([s3_in("teacher", teacher_data, f"{PROC}/input/teacher")] if distilled else []),
                    s3_in("processed", processed, f"{PROC}/input/processed"), source_input],
            outputs=[s3_out("evaluation", per_run(store.uri_of("evaluation")), f"{PROC}/output/evaluation"),
                     s3_out("candidate", s.Join(on="/", values=[store.uri_of("models"), run_id, "candidate"]),
                            f"{PROC}/output/candidate"),
                     s3_out("onnx", s.Join(on="/", values=[store.uri_of("models"), run_id, "onnx"]),
                            f"{PROC}/output/onnx")]))
    outputs = evaluate.properties.ProcessingOutputConfig.Outputs
    evaluation_uri = outputs["evaluation"].S3Output.S3Uri

    def metric(path: str, file: Any = metrics_file) -> Any:
        return s.JsonGet(step_name=evaluate.name, property_file=file, json_path=path)

    def text(value: Any) -> Any:  # CustomerMetadataProperties values are strings
        return s.Join(on="", values=[value])

    # 4a. register: PendingManualApproval, stage Staging, metrics attached
    # the training artifact (the student's when distilled) carries the inference handler in code/
    # (cloud.aws.code.write_serving_code); the container's environment names it, so the registered package serves
    # as it is (python -m cloud.endpoint). A model package has one model (InferenceSpecification), the one that
    # ships; the teacher it was distilled from is recorded in its CustomerMetadataProperties, under the keys the
    # local registry uses for the same run (artifacts.teacher_model, lineage.distilled_from.*, metrics.teacher_fp32.*)
    serving_env = {**SERVING_ENVIRONMENT, "SAGEMAKER_REGION": config.region, MODEL_NAME_ENV: params.model_name}
    builder = s.ModelBuilder(s3_model_data_url=model_data, image_uri=inference_image, sagemaker_session=session,
                             role_arn=config.role_arn, instance_type="ml.m5.large", dependencies={"auto": False},
                             env_vars=serving_env, log_level=logging.WARNING)
    builder.bucket = config.bucket  # explicit, or the SDK looks up (and creates) a default bucket
    register = s.ModelStep(
        name="RegisterModel", description="register the evaluated model (PendingManualApproval, Staging)",
        step_args=builder.register(
            model_package_group_name=group, approval_status=approval,
            content_types=["application/json"], response_types=["application/json"],
            inference_instances=["ml.m5.large"], transform_instances=["ml.m5.large"],
            model_metrics=s.ModelMetrics(model_statistics=s.MetricsSource(
                content_type="application/json", s3_uri=s.Join(on="/", values=[evaluation_uri, "metrics.json"]))),
            model_life_cycle=s.ModelLifeCycle(stage="Staging", stage_status="Registered",
                                              stage_description="registered by the pipeline after the quality gate"),
            customer_metadata_properties={
                "metrics.int8.macro_f1": text(metric("int8.macro_f1")),
                "metrics.int8.accuracy": text(metric("int8.accuracy")),
                "metrics.fp32.macro_f1": text(metric("fp32.macro_f1")),
                "metrics.fp32.accuracy": text(metric("fp32.accuracy")),
                "metrics.agreement": text(metric("agreement")),
                "lineage.run_id": run_id,
                "lineage.pipeline": config.name,
                "lineage.code_version": code.rsplit("/", 1)[-1],
                "lineage.base_model": params.train.base_model,
                "lineage.data_input": input_data,
                "artifacts.model": model_data,
                "artifacts.evaluation": evaluation_uri,
                "artifacts.candidate_bundle": outputs["candidate"].S3Output.S3Uri,
                **({"artifacts.teacher_model": teacher_data,
                    "lineage.distilled_from.model": teacher_data,
                    "lineage.distilled_from.training_job": train.properties.TrainingJobName,
                    "lineage.distilled_from.layers": str(params.distill.layers),
                    "metrics.teacher_fp32.macro_f1": text(metric("teacher_fp32.macro_f1")),
                    "metrics.teacher_fp32.accuracy": text(metric("teacher_fp32.accuracy"))} if distilled else {}),
            },
            description=f"{params.model_name} from pipeline {config.name}"))

    # 4b. compile for the device and write the edge bundle of the registered version
    compile_edge = s.ProcessingStep(
        name="CompileEdge", description="SageMaker Neo (LINUX/ARM64) with fallback to ONNX Runtime INT8; edge bundle",
        step_args=processor("compile-edge").run(
            code=entry,
            arguments=["compile-edge", "--model-package-arn", register.properties.ModelPackageArn,
                       "--bucket", config.bucket, "--role-arn", config.role_arn, "--region", config.region,
                       "--neo", neo, "--run-id", run_id]
            + (["--store-prefix", config.store_prefix] if config.store_prefix else []),
            inputs=[s3_in("candidate", outputs["candidate"].S3Output.S3Uri, f"{PROC}/input/candidate"),
                    s3_in("onnx", outputs["onnx"].S3Output.S3Uri, f"{PROC}/input/onnx"),
                    s3_in("evaluation", evaluation_uri, f"{PROC}/input/evaluation"), source_input],
            outputs=[s3_out("edge", store.uri_of("edge"), f"{PROC}/output/edge")]))

    failed = s.FailStep(name="QualityGateFailed", error_message=s.Join(on=" ", values=[
        "quality gate failed: INT8 macro-F1", metric("int8.macro_f1"), "(needs >=", min_f1,
        "), FP32 - INT8 macro-F1", metric("int8_drop", gate_file), "(needs <=", max_drop, "), INT8 accuracy",
        metric("int8.accuracy"), "(needs >=", min_acc, ")"]))
    gate = s.ConditionStep(
        name="CheckQualityGate",
        conditions=[s.ConditionGreaterThanOrEqualTo(left=metric("int8.macro_f1"), right=min_f1),
                    s.ConditionLessThanOrEqualTo(left=metric("int8_drop", gate_file), right=max_drop),
                    s.ConditionGreaterThanOrEqualTo(left=metric("int8.accuracy"), right=min_acc)],
        if_steps=[register, compile_edge], else_steps=[failed])
    pipeline = s.Pipeline(name=config.name, parameters=parameters, steps=[prepare, *training_steps, evaluate, gate],
                          sagemaker_session=session)
    return pipeline, session


def definition(config: PipelineConfig) -> dict[str, Any]:
    """The pipeline definition (the JSON SageMaker stores), built offline."""
    return build_pipeline(config).definition()


def upload_source(build: PipelineBuild, store: S3Store | None = None) -> list[str]:
    """Upload the source bundle and the entry script to the definition's code folder (skipped if there)."""
    store = store or build.config.store
    uploaded = []
    for name, body in ((TARBALL, build.source.tarball()), (ENTRY_SCRIPT, build.source.entry_script)):
        uri = f"{build.code_uri}/{name}"
        if not store.exists(uri):
            store.put_bytes(uri, body)
            uploaded.append(uri)
    return uploaded


def upsert(config: PipelineConfig, *, description: str = "", boto_session: Any = None,
           registry_client: Any = None) -> dict[str, Any]:
    """Upload the code, make sure the model package group exists, create or update the pipeline."""
    from ..registry.sagemaker import SageMakerRegistry

    session = boto_session or make_session(config.region)
    if session.get_credentials() is None:  # resolved (and cached by the session) before the SDK is involved
        raise AwsCallFailed("no AWS credentials found (configure a profile, environment variables or a role)",
                            operation="sagemaker.upsert", code="NoCredentials")
    build = build_pipeline(config, boto_session=session)
    store = replace(config.store, client=make_client("s3", region=config.region, session=session))
    uploaded = upload_source(build, store)
    registry = SageMakerRegistry(client=registry_client or make_client("sagemaker", region=config.region,
                                                                       session=session))
    with registry:
        registry.create_group(build.params.model_package_group,
                              f"{build.params.model_name}: MiniLM-L6 intent classifier (edge bundles)")
    from botocore.exceptions import BotoCoreError, ClientError

    from .clients import error_code

    with _sdk_environment(config.region, offline=False):
        try:
            response = build.pipeline.upsert(role_arn=config.role_arn,
                                             description=description or f"{build.params.model_name} training pipeline")
        except (ClientError, BotoCoreError) as exc:  # the SDK lets botocore's errors through as they are
            raise AwsCallFailed(f"sagemaker.upsert pipeline {config.name} failed: {exc}",
                                operation="sagemaker.create_pipeline", code=error_code(exc)) from None
    return {"pipeline_arn": response.get("PipelineArn", ""), "code": build.code_uri, "uploaded": uploaded,
            "model_package_group": build.params.model_package_group}


def start(name: str, *, region: str | None = None, parameters: Mapping[str, str] | None = None,
          display_name: str | None = None, client: Any = None) -> str:
    """Start an execution; returns its ARN. ``parameters`` override the pipeline's parameter defaults."""
    sm = client or make_client("sagemaker", region=region)
    request: dict[str, Any] = {"PipelineName": name}
    if parameters:
        request["PipelineParameters"] = [{"Name": k, "Value": str(v)} for k, v in parameters.items()]
    if display_name:
        request["PipelineExecutionDisplayName"] = display_name
    return str(call(sm.start_pipeline_execution, **request)["PipelineExecutionArn"])


FINAL_STATES = ("Succeeded", "Failed", "Stopped")


def status(name: str, *, region: str | None = None, execution_arn: str | None = None, client: Any = None,
           wait: bool = False, poll_s: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """The (latest) execution's status and its steps; with ``wait`` until it succeeds, fails or stops."""
    sm = client or make_client("sagemaker", region=region)
    if execution_arn is None:
        rows = call(sm.list_pipeline_executions, PipelineName=name, SortBy="CreationTime", SortOrder="Descending",
                    MaxResults=1).get("PipelineExecutionSummaries", [])
        if not rows:
            raise AwsError(f"pipeline {name} has no executions yet (python -m cloud.pipeline start)")
        execution_arn = rows[0]["PipelineExecutionArn"]
    while True:
        desc = call(sm.describe_pipeline_execution, PipelineExecutionArn=execution_arn)
        state = desc.get("PipelineExecutionStatus", "")
        if not wait or state in FINAL_STATES:
            break
        sleep(poll_s)
    steps = []
    request: dict[str, Any] = {"PipelineExecutionArn": execution_arn, "SortOrder": "Ascending"}
    while True:
        page = call(sm.list_pipeline_execution_steps, **request)
        for step in page.get("PipelineExecutionSteps", []):
            steps.append({"name": step.get("StepName"), "status": step.get("StepStatus"),
                          "started": _iso(step.get("StartTime")), "ended": _iso(step.get("EndTime")),
                          "cache_hit": bool(step.get("CacheHitResult")), "failure": step.get("FailureReason", "")})
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]
    return {"pipeline": name, "execution_arn": execution_arn, "status": state,
            "failure": desc.get("FailureReason", ""), "started": _iso(desc.get("CreationTime")),
            "updated": _iso(desc.get("LastModifiedTime")), "steps": steps}


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value
