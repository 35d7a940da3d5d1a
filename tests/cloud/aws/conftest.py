"""Fixtures of the AWS tests: moto for S3 / SageMaker / IoT, fake credentials, no network, one SDK import.

Everything here is offline. moto stands in for the AWS APIs it implements; botocore's Stubber for those it
does not (Greengrass v2, pipeline execution steps, Neo compilation polling). Tests that need a real account
are marked ``aws`` and run only with ``--run-aws``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

pytest.importorskip("boto3", reason="the aws extra is not installed (pip install 'slm-intents[aws]')")
pytest.importorskip("moto", reason="moto is not installed (the dev extra)")

REGION = "eu-west-1"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/slm-intents-sagemaker"
BUCKET = "slm-test-bucket"
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture()
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region (moto needs some; nothing real is ever reached)."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in FAKE_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture()
def moto_aws(aws_env):
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture()
def s3_bucket(moto_aws):
    import boto3

    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return client


class _NoNetwork:
    """Any socket connection attempt fails the test: proves the code under test stays offline."""

    def __enter__(self):
        self._orig = socket.socket.connect

        def refuse(sock, address, *a, **k):
            raise AssertionError(f"network access attempted: {address}")

        socket.socket.connect = refuse
        return self

    def __exit__(self, *exc):
        socket.socket.connect = self._orig


def _build_definition(out_dir: Path, *extra: str) -> tuple[dict, str]:
    """``python -m cloud.pipeline definition [extra]`` with no credentials in the environment and the network
    refused; returns ``(definition, source digest)``."""
    import importlib.util
    import json

    if importlib.util.find_spec("sagemaker") is None:  # find, not import: the SDK needs a region to import
        pytest.skip("the SageMaker SDK 3.x is not installed (pip install 'slm-intents[aws]')")
    from cloud.aws.code import collect_source
    from cloud.pipeline import main

    params = extra[extra.index("--params") + 1] if "--params" in extra else None
    out = out_dir / "definition.json"
    with pytest.MonkeyPatch.context() as mp, _NoNetwork():
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                    "AWS_DEFAULT_REGION", "AWS_REGION", "SAGEMAKER_VALIDATE_ROLE"):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        for _ in range(3):  # a file edited while the definition builds changes the digest: build again
            before = collect_source(params_path=params).digest
            rc = main(["definition", "--region", REGION, "--role-arn", ROLE_ARN, "--bucket", BUCKET,
                       "--out", str(out), *extra])
            assert rc == 0
            if collect_source(params_path=params).digest == before:
                break
        # the environment the SDK needed while building is put back
        assert "SAGEMAKER_VALIDATE_ROLE" not in os.environ and "AWS_DEFAULT_REGION" not in os.environ
    return json.loads(out.read_text()), before


@pytest.fixture(scope="session")
def sagemaker_definition(tmp_path_factory):
    """The definition of ``pipelines/params.json`` (which distills: ``distill.layers`` > 0), built once per
    session (the SDK import and build take seconds); returns ``(definition, source digest)``."""
    return _build_definition(tmp_path_factory.mktemp("definition"))


@pytest.fixture(scope="session")
def sagemaker_definition_without_distill(tmp_path_factory):
    """The definition of ``pipelines/params.json`` with ``distill.layers`` 0 (the trained model ships)."""
    import json

    from tests.conftest import REPO

    root = tmp_path_factory.mktemp("definition-no-distill")
    params = json.loads((REPO / "pipelines" / "params.json").read_text())
    params["distill"]["layers"] = 0
    (root / "params.json").write_text(json.dumps(params))
    return _build_definition(root, "--params", str(root / "params.json"))


@pytest.fixture()
def no_network():
    with _NoNetwork():
        yield


def stub(client):
    """A botocore Stubber on ``client``, activated; the test adds responses and calls ``assert_no_pending_responses``."""
    from botocore.stub import Stubber

    stubber = Stubber(client)
    stubber.activate()
    return stubber


@pytest.fixture()
def candidate_bundle(tiny_bundle, tmp_path: Path) -> Path:
    """A copy of the tiny ONNX bundle, standing in for the pipeline's INT8 candidate bundle."""
    import shutil

    dst = tmp_path / "candidate"
    shutil.copytree(tiny_bundle[0].root, dst)
    return dst
