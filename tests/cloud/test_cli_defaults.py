"""Commands write under the store (default ``.store/``) or where the user says, never into the working directory;
``--help`` shows defaults and choices; the AWS region is read as the docs say."""

from __future__ import annotations

import json
import os
import stat

import pytest

STORE = ".store/slm-intents"


def test_keygen_writes_the_pair_into_the_store(tmp_path, monkeypatch, capsys):
    pytest.importorskip("cryptography")
    from cloud import signing

    monkeypatch.chdir(tmp_path)
    assert signing.main(["keygen"]) == 0
    keys = tmp_path / STORE / "keys"
    assert stat.S_IMODE(os.stat(keys / "signing.key").st_mode) == 0o600
    assert (keys / "signing.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store"]
    # and it prints the one-line key the Greengrass app's BundlePublicKey takes
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("BundlePublicKey"))
    assert line.split(": ", 1)[1] == signing.public_key_b64(signing.load_private_key(keys / "signing.key"))
    # and a second keygen refuses to overwrite the private key
    assert signing.main(["keygen"]) == 1


def test_rollout_state_defaults_to_the_store(tmp_path, monkeypatch, capsys):
    from cloud import rollout

    class Backend:
        def current(self, group):  # type: ignore[no-untyped-def]
            return {}

        def deploy(self, group, components, *, stage):  # type: ignore[no-untyped-def]
            return {"deployment_id": f"d-{group}", "group": group}

        def status(self, deployment):  # type: ignore[no-untyped-def]
            return {"state": "ACTIVE"}

        def cancel(self, deployment):  # type: ignore[no-untyped-def]
            return None

        def things(self, group):  # type: ignore[no-untyped-def]
            return []

    monkeypatch.chdir(tmp_path)
    assert rollout.main(["plan", "--version", "2", "--component", "com.slmintents.IntentModel=1.0.2"]) == 0
    state = tmp_path / STORE / "rollouts" / "rollout.json"
    assert json.loads(state.read_text())["plan"]["canary_group"] == "slm-intents-canary"
    assert rollout.main(["start"], backend=Backend()) == 0
    assert json.loads(state.read_text())["status"] == "canary"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store"]


@pytest.mark.parametrize("argv", [
    ["cloud.greengrass", "build"], ["cloud.rollout", "plan"], ["cloud.rollout", "start"],
    ["cloud.aws.greengrass", "deploy"], ["cloud.aws.greengrass", "publish"], ["cloud.signing", "keygen"],
    ["cloud.shadow", "collect"], ["cloud.shadow", "compare"], ["cloud.pipeline", "definition"],
    ["cloud.pipeline", "upsert"], ["cloud.pipeline", "start"], ["cloud.pipeline", "status"],
    ["cloud.endpoint", "deploy"]])
def test_help_shows_defaults_and_choices(argv, capsys):
    import importlib

    module = importlib.import_module(argv[0])
    with pytest.raises(SystemExit) as exit_:
        module.main([argv[1], "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: " in text and "(default: None)" not in text and "(default: False)" not in text
    if argv == ["cloud.aws.greengrass", "deploy"]:
        assert "{canary,fleet}" in text and "AWS_REGION" in text
    if argv == ["cloud.pipeline", "definition"]:  # cloud.aws.cli's options
        assert "(default: ml.m5.xlarge)" in text and "(default: ml.m5.2xlarge)" in text
        assert "(default: slm-intents)" in text and "--set KEY=VALUE" in text
    if argv == ["cloud.endpoint", "deploy"]:
        assert "{teacher,package}" in text and "(default: teacher)" in text and "(default: 3072)" in text


def test_aws_region_is_read_before_aws_default_region(monkeypatch):
    pytest.importorskip("boto3")
    from cloud.aws.clients import make_client

    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    assert make_client("iot").meta.region_name == "eu-north-1"  # botocore alone would find no region here
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert make_client("iot").meta.region_name == "eu-north-1"
    assert make_client("iot", region="ap-south-1").meta.region_name == "ap-south-1"
    monkeypatch.delenv("AWS_REGION")
    assert make_client("iot").meta.region_name == "us-west-2"
