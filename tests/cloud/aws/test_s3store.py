"""The S3 store: contract 2's key layout in a bucket, moved to and from a local store (moto S3)."""

from __future__ import annotations

import json

import pytest

from cloud.errors import RegistryError
from cloud.store import Store
from tests.cloud.aws.conftest import BUCKET


def test_store_at_s3_uri_has_the_local_key_layout():
    # Given an s3:// location, When the store is opened, Then its keys mirror the local store's folders
    s3 = Store.at(f"s3://{BUCKET}/team-a")
    local = Store.at("/tmp/x")
    assert s3.root == f"s3://{BUCKET}/team-a"
    for method, arg in (("raw", None), ("processed", None), ("validation", "r1"), ("models", "r1"),
                        ("evaluation", "r1"), ("edge", "3"), ("cache", None)):
        remote = getattr(s3, method)(*([arg] if arg else []))
        here = getattr(local, method)(*([arg] if arg else []))
        assert remote == f"s3://{BUCKET}/team-a/" + here.relative_to(local.root).as_posix()
    assert s3.last_run == f"s3://{BUCKET}/team-a/last-run.json"
    assert Store.at(f"s3://{BUCKET}").edge("3") == f"s3://{BUCKET}/slm-intents/edge/3"


def test_the_local_registry_refuses_an_s3_store():
    from cloud.registry import open_registry

    with pytest.raises(NotImplementedError, match="--backend sagemaker"):
        Store.at(f"s3://{BUCKET}").registry_db
    with pytest.raises(RegistryError, match="local store"):
        open_registry(store=f"s3://{BUCKET}")


def test_directories_round_trip(s3_bucket, tmp_path):
    from cloud.aws.s3store import S3Store

    src = tmp_path / "bundle"
    (src / "dlr").mkdir(parents=True)
    (src / "manifest.json").write_text("{}")
    (src / "dlr" / "model.so").write_bytes(b"\x7fELF")
    store = S3Store.from_uri(f"s3://{BUCKET}")
    uploaded = store.upload_dir(src, store.edge("3"))
    assert uploaded == [f"s3://{BUCKET}/slm-intents/edge/3/dlr/model.so",
                        f"s3://{BUCKET}/slm-intents/edge/3/manifest.json"]
    assert store.exists(store.edge("3") + "/manifest.json") and not store.exists(store.edge("4") + "/manifest.json")
    got = store.download_dir(store.edge("3"), tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in got) == ["dlr/model.so", "manifest.json"]
    assert (tmp_path / "back" / "dlr" / "model.so").read_bytes() == b"\x7fELF"
    store.write_json(store.last_run, {"status": "succeeded"})
    assert store.read_json(store.last_run) == {"status": "succeeded"}


def test_publish_local_uploads_the_store_but_not_the_step_cache(s3_bucket, tmp_path):
    from cloud.aws.s3store import S3Store

    local = Store(tmp_path / "store")
    (local.edge("1")).mkdir(parents=True)
    (local.edge("1") / "manifest.json").write_text("{}")
    local.cache().mkdir(parents=True)
    (local.cache() / "train.json").write_text("{}")
    local.last_run.write_text(json.dumps({"status": "succeeded"}))
    remote = S3Store.from_uri(f"s3://{BUCKET}")
    uploaded = remote.publish_local(local)
    assert uploaded == [f"s3://{BUCKET}/slm-intents/edge/1/manifest.json", f"s3://{BUCKET}/last-run.json"]


def test_missing_bucket_is_a_clear_error(moto_aws):
    from cloud.aws.errors import AwsCallFailed
    from cloud.aws.s3store import S3Store

    with pytest.raises(AwsCallFailed, match="NoSuchBucket"):
        S3Store.from_uri("s3://no-such-bucket").read_json("s3://no-such-bucket/x.json")


def test_run_with_an_s3_store_runs_in_a_mirror_and_publishes(s3_bucket, tmp_path, monkeypatch, capsys):
    # Given a run command on s3://bucket, When it runs, Then the local runner sees a local mirror and the
    # mirror's files end up in the bucket under the same keys
    import argparse

    from cloud.aws.cli import run_with_s3_store

    monkeypatch.chdir(tmp_path)
    seen = {}

    def fake_run(args: argparse.Namespace) -> int:
        store = Store.at(args.store)
        seen["store"] = store.root
        store.edge("1").mkdir(parents=True)
        (store.edge("1") / "manifest.json").write_text("{}")
        store.last_run.write_text("{}")
        return 0

    rc = run_with_s3_store(argparse.Namespace(store=f"s3://{BUCKET}"), fake_run)
    assert rc == 0
    assert seen["store"].as_posix() == f".store/s3/{BUCKET}"
    keys = [o["Key"] for o in s3_bucket.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(keys) == ["last-run.json", "slm-intents/edge/1/manifest.json"]
    assert "published 2 files" in capsys.readouterr().out
