"""The bundle contract: what loads, and the specific error for each way a bundle can be broken."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from edge_runtime import (Bundle, BundleNotFoundError, IntegrityError, ManifestError, MissingFileError,
                          UnsupportedFormatError)
from edge_runtime.bundle import MANIFEST_NAME, sha256_file, zip_bundle


def _edit_manifest(root: Path, **changes) -> None:
    path = root / MANIFEST_NAME
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_written_bundle_loads_with_every_field(tiny_bundle):
    bundle, _ = tiny_bundle
    loaded = Bundle.load(bundle.root)
    m = loaded.manifest
    assert m.format_version == 1 and m.name == "tiny" and m.version == "1"
    assert len(m.labels) == 7 and m.max_length == 16
    assert set(m.files) == {"model.onnx", "tokenizer.json"}
    for rel, entry in m.files.items():
        assert entry["sha256"] == sha256_file(bundle.root / rel)
    assert m.metrics == {"accuracy": 0.5} and m.lineage == {"base_model": "tiny"}
    assert "label_distribution" in m.reference


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(BundleNotFoundError, match="not found"):
        Bundle.load(tmp_path / "nope")
    with pytest.raises(BundleNotFoundError, match="no manifest.json"):
        Bundle.load(tmp_path)


def test_manifest_that_is_not_json(bundle_copy):
    (bundle_copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("field, value, message", [
    ("labels", None, "'labels' is missing"),
    ("labels", "PlayMusic", "'labels' must be list"),
    ("labels", ["a", "a"], "distinct"),
    ("max_length", "40", "'max_length' must be int"),
    ("max_length", True, "'max_length' must be int"),
    ("files", {"../etc/passwd": {"sha256": "00"}}, "inside the bundle"),
    ("files", {"tokenizer.json": {"bytes": 3}}, "needs a 'sha256'"),
    ("tokenizer", "other.json", "not listed in 'files'"),
])
def test_malformed_manifest_fields(bundle_copy, field, value, message):
    _edit_manifest(bundle_copy, **{field: value})
    with pytest.raises(ManifestError, match=message):
        Bundle.load(bundle_copy)


def test_manifest_from_the_future_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, format_version=99)
    with pytest.raises(UnsupportedFormatError, match="format_version 99 is not supported"):
        Bundle.load(bundle_copy)


def test_other_format_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, format="something-else")
    with pytest.raises(UnsupportedFormatError, match="something-else"):
        Bundle.load(bundle_copy)


def test_missing_file(bundle_copy):
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(MissingFileError, match="model.onnx"):
        Bundle.load(bundle_copy)


def test_truncated_file(bundle_copy):
    path = bundle_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IntegrityError, match="truncated"):
        Bundle.load(bundle_copy)


def test_tampered_file_same_size(bundle_copy):
    path = bundle_copy / "tokenizer.json"
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 of 'tokenizer.json'"):
        Bundle.load(bundle_copy)


def test_verify_can_be_skipped_for_a_trusted_fast_path(bundle_copy):
    (bundle_copy / "model.onnx").write_bytes(b"x")
    assert Bundle.load(bundle_copy, verify=False).manifest.name == "tiny"


def test_unknown_manifest_keys_survive_a_round_trip(bundle_copy):
    _edit_manifest(bundle_copy, future_field={"a": 1})
    bundle = Bundle.load(bundle_copy)
    assert bundle.manifest.extra == {"future_field": {"a": 1}}
    assert bundle.manifest.to_dict()["future_field"] == {"a": 1}


def test_zip_is_reproducible_and_holds_the_bundle(tiny_bundle, tmp_path):
    bundle, _ = tiny_bundle
    a = zip_bundle(bundle.root, tmp_path / "a.zip")
    b = zip_bundle(bundle.root, tmp_path / "b.zip")
    assert sha256_file(a) == sha256_file(b)
    with zipfile.ZipFile(a) as zf:
        assert sorted(zf.namelist()) == ["manifest.json", "model.onnx", "tokenizer.json"]
        zf.extractall(tmp_path / "unzipped")
    assert Bundle.load(tmp_path / "unzipped").manifest.version == "1"


def test_write_bundle_replaces_an_old_bundle_and_leaves_no_staging_dirs(tiny_bundle, tmp_path):
    from tests.conftest import build_tiny_bundle

    target = tmp_path / "edge" / "7"
    build_tiny_bundle(target, version="7")
    build_tiny_bundle(target, version="8")
    assert Bundle.load(target).manifest.version == "8"
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []
