"""Neo in the edge bundle: compile -> poll -> fetch into the dlr backend, and the fallback to ONNX Runtime INT8.

SageMaker's compilation API is stubbed (moto does not run Neo); S3 is moto. Where a test plays Neo, it puts
the "compiled" tar.gz where Neo would write it.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile

import pytest
from botocore.stub import ANY

from tests.cloud.aws.conftest import BUCKET, REGION, ROLE_ARN, stub

JOB = "slm-neo-test"
ARTIFACT = f"s3://{BUCKET}/slm-intents/neo/{JOB}/output/model-LINUX_ARM64.tar.gz"


def _compiled_tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("compiled.so", b"\x7fELF-arm64"), ("compiled.params", b"params"),
                           ("compiled_model.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture()
def clients(s3_bucket):
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION)
    return {"sagemaker": sm, "s3": s3_bucket}, stub(sm)


def _expect_create(stubber, max_length=16):
    stubber.add_response("create_compilation_job", {"CompilationJobArn": f"arn:aws:sagemaker:{REGION}:1:compilation-job/{JOB}"}, {
        "CompilationJobName": JOB, "RoleArn": ROLE_ARN,
        "InputConfig": {"S3Uri": f"s3://{BUCKET}/slm-intents/neo/{JOB}/input/model.tar.gz",
                        "DataInputConfig": json.dumps({n: [1, max_length] for n in
                                                       ("input_ids", "attention_mask", "token_type_ids")}),
                        "Framework": "ONNX"},
        "OutputConfig": {"S3OutputLocation": f"s3://{BUCKET}/slm-intents/neo/{JOB}/output",
                         "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}},
        "StoppingCondition": {"MaxRuntimeInSeconds": ANY}})


def _describe(stubber, status, **extra):
    stubber.add_response("describe_compilation_job", {
        "CompilationJobName": JOB, "CompilationJobArn": f"arn:aws:sagemaker:{REGION}:1:compilation-job/{JOB}",
        "CompilationJobStatus": status, "StoppingCondition": {}, "CreationTime": "2025-01-01T00:00:00Z",
        "LastModifiedTime": "2025-01-01T00:00:00Z", "FailureReason": extra.pop("FailureReason", ""),
        "ModelArtifacts": {"S3ModelArtifacts": extra.pop("artifact", "")}, "RoleArn": ROLE_ARN,
        "InputConfig": {"S3Uri": "s3://x", "Framework": "ONNX"}, "OutputConfig": {"S3OutputLocation": "s3://x"},
        **extra}, {"CompilationJobName": JOB})


def _package(candidate, tmp_path, clients_, **kw):
    from cloud.aws.neo import NeoConfig, package_edge

    config = NeoConfig(bucket=BUCKET, role_arn=ROLE_ARN, max_length=16, poll_s=0, timeout_s=kw.pop("timeout_s", 600))
    return package_edge(candidate, tmp_path / "edge", "7", neo=config, clients=clients_, job_name=JOB,
                        sleep=lambda s: None, **kw)


def test_neo_success_adds_the_dlr_backend(candidate_bundle, tmp_path, clients, s3_bucket):
    from edge_runtime.bundle import Bundle

    clients_, stubber = clients
    _expect_create(stubber)
    _describe(stubber, "INPROGRESS")
    s3_bucket.put_object(Bucket=BUCKET, Key=ARTIFACT.split("/", 3)[3], Body=_compiled_tarball())  # Neo's output
    _describe(stubber, "COMPLETED", artifact=ARTIFACT)
    bundle, zip_path, result = _package(candidate_bundle, tmp_path, clients_)
    stubber.assert_no_pending_responses()
    assert result.status == "compiled" and result.artifact_uri == ARTIFACT
    loaded = Bundle.load(bundle.root)  # every file, the Neo ones too, is listed with its sha256
    dlr = loaded.manifest.backends["dlr"]
    assert dlr["dir"] == "dlr" and dlr["target"] == "LINUX/ARM64" and dlr["compilation_job"] == JOB
    assert dlr["input_shapes"]["input_ids"] == [1, 16]
    assert {"dlr/compiled.so", "dlr/compiled.params", "dlr/compiled_model.json"} <= set(loaded.manifest.files)
    assert "onnxruntime" in loaded.manifest.backends
    assert loaded.manifest.version == "7" and loaded.manifest.lineage["neo"]["status"] == "compiled"
    assert zip_path == tmp_path / "edge" / "7.zip" and zip_path.is_file()
    # the model Neo compiled was uploaded as its input
    body = s3_bucket.get_object(Bucket=BUCKET, Key=f"slm-intents/neo/{JOB}/input/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.getnames() == ["model.onnx"]


def test_neo_failure_falls_back_to_onnxruntime_int8_with_a_clear_message(candidate_bundle, tmp_path, clients, caplog):
    from edge_runtime.bundle import Bundle

    clients_, stubber = clients
    _expect_create(stubber)
    _describe(stubber, "FAILED", FailureReason="ClientError: unsupported operator QuantizeLinear")
    with caplog.at_level(logging.WARNING, logger="cloud.aws.neo"):
        bundle, _, result = _package(candidate_bundle, tmp_path, clients_)
    assert result.status == "failed" and "QuantizeLinear" in result.reason
    loaded = Bundle.load(bundle.root)
    assert "dlr" not in loaded.manifest.backends and "onnxruntime" in loaded.manifest.backends
    assert loaded.manifest.lineage["neo"]["status"] == "failed"
    assert "ships the ONNX Runtime INT8 model only" in caplog.text and "LINUX/ARM64" in caplog.text


def test_neo_job_that_cannot_be_created_falls_back(candidate_bundle, tmp_path, clients):
    clients_, stubber = clients
    stubber.add_client_error("create_compilation_job", "AccessDeniedException", "not authorized: iam:PassRole")
    _, _, result = _package(candidate_bundle, tmp_path, clients_)
    assert result.status == "failed" and "AccessDeniedException" in result.reason


def test_neo_timeout_stops_the_job_and_falls_back(candidate_bundle, tmp_path, clients, monkeypatch):
    clients_, stubber = clients
    _expect_create(stubber)
    _describe(stubber, "INPROGRESS")
    stubber.add_response("stop_compilation_job", {}, {"CompilationJobName": JOB})
    _, _, result = _package(candidate_bundle, tmp_path, clients_, timeout_s=-1)
    stubber.assert_no_pending_responses()
    assert result.status == "failed" and "stopped it" in result.reason


def test_without_neo_the_bundle_is_the_candidate_under_its_version(candidate_bundle, tmp_path):
    from cloud.aws.neo import package_edge
    from edge_runtime.bundle import Bundle

    bundle, _, result = package_edge(candidate_bundle, tmp_path / "edge", "3", lineage={"run_id": "r"})
    assert result.status == "skipped"
    loaded = Bundle.load(bundle.root)
    assert loaded.manifest.version == "3" and loaded.manifest.lineage["run_id"] == "r"
    assert set(loaded.manifest.files) == set(Bundle.load(candidate_bundle).manifest.files)


@pytest.fixture()
def external_data_candidate(tiny_bundle, tmp_path):
    """A candidate bundle laid out like cloud.compile writes it: model.int8.onnx with its weights in
    model.int8.onnx.data beside it."""
    import shutil

    from cloud.compile import _externalize
    from edge_runtime.bundle import Bundle, write_bundle

    src = tiny_bundle[0]
    work = tmp_path / "int8"
    work.mkdir()
    shutil.copyfile(src.path_of("model.onnx"), work / "model.int8.onnx")
    _externalize(work / "model.int8.onnx", "model.int8.onnx.data")  # what cloud.compile does to the INT8 model
    m = src.manifest
    write_bundle(tmp_path / "candidate-ext", files={
        "model.int8.onnx": work / "model.int8.onnx", "model.int8.onnx.data": work / "model.int8.onnx.data",
        "tokenizer.json": src.path_of("tokenizer.json")}, name=m.name, version=m.version, labels=list(m.labels),
        max_length=m.max_length, tokenizer="tokenizer.json",
        backends={"onnxruntime": {"file": "model.int8.onnx", "quantization": {"scheme": "none"}}},
        metrics={}, lineage={}, reference={})
    return Bundle.load(tmp_path / "candidate-ext")


def test_neo_input_holds_the_external_weights_the_model_needs(external_data_candidate, tmp_path, clients, s3_bucket):
    import numpy as np
    import onnxruntime as ort

    # Given a candidate whose INT8 model keeps its weights in model.int8.onnx.data
    clients_, stubber = clients
    _expect_create(stubber)
    _describe(stubber, "FAILED", FailureReason="whatever Neo says")
    # When the Neo step runs
    _package(external_data_candidate.root, tmp_path, clients_)
    # Then the compile input is one .onnx file (Neo's ONNX format) that holds the weights: it runs on its own
    body = s3_bucket.get_object(Bucket=BUCKET, Key=f"slm-intents/neo/{JOB}/input/model.tar.gz")["Body"].read()
    unpacked = tmp_path / "neo-input"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.getnames() == ["model.int8.onnx"]
        tar.extractall(unpacked, filter="data")
    session = ort.InferenceSession(str(unpacked / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.ones((1, 4), dtype=np.int64) for i in session.get_inputs()}
    original = ort.InferenceSession(str(external_data_candidate.path_of("model.int8.onnx")),
                                    providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, feeds)[0], original.run(None, feeds)[0])


def test_neo_refuses_a_model_whose_external_weights_are_missing_before_uploading(external_data_candidate, tmp_path,
                                                                                 clients, s3_bucket):
    import shutil

    from cloud.aws.neo import NeoCompileFailed, NeoConfig, compile_with_neo

    # Given the INT8 model without its .data file
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copyfile(external_data_candidate.path_of("model.int8.onnx"), lone / "model.int8.onnx")
    clients_, stubber = clients
    # When it is sent to Neo, Then it is refused with the missing file named, and nothing was uploaded or started
    with pytest.raises(NeoCompileFailed, match=r"external weights: .*model.int8.onnx.data"):
        compile_with_neo(lone / "model.int8.onnx", tmp_path / "w", NeoConfig(bucket=BUCKET, role_arn=ROLE_ARN),
                         job_name=JOB, **clients_)
    assert s3_bucket.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    stubber.assert_no_pending_responses()


def test_an_fp32_model_without_external_data_is_sent_as_it_is(tiny_bundle):
    import onnx

    from cloud.aws.neo import neo_input

    model = tiny_bundle[0].path_of("model.onnx")
    with tarfile.open(fileobj=io.BytesIO(neo_input(model))) as tar:
        assert tar.getnames() == ["model.onnx"]
        sent = onnx.load_model_from_string(tar.extractfile("model.onnx").read())
    assert sent == onnx.load(str(model))
