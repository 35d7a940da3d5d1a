"""A bundle loads only what its manifest lists: the whole tree is accounted for, every path the manifest names is
relative, inside and listed, and staging copies listed regular files only, without following links or blocking."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import types
from pathlib import Path

import pytest

from edge_runtime.bundle import MANIFEST_NAME, Bundle, stage_bundle, write_bundle
from edge_runtime.errors import IntegrityError, ManifestError, MissingFileError
from tests.conftest import build_tiny_bundle


@pytest.fixture()
def neo_bundle(tmp_path: Path) -> Path:
    """A bundle with a (stand-in) Neo artifact folder beside the ONNX model, as ``cloud.aws.neo`` writes one."""
    tiny, _ = build_tiny_bundle(tmp_path / "tiny")
    src = tmp_path / "neo-src"
    src.mkdir()
    (src / "compiled.so").write_bytes(b"\x7fELF compiled model")
    (src / "compiled.params").write_bytes(b"params")
    files = {rel: tiny.root / rel for rel in tiny.manifest.files}
    files.update({"dlr/compiled.so": src / "compiled.so", "dlr/compiled.params": src / "compiled.params"})
    m = tiny.manifest
    write_bundle(tmp_path / "neo", files=files, name=m.name, version=m.version, labels=m.labels,
                 max_length=m.max_length, tokenizer=m.tokenizer,
                 backends={"onnxruntime": {"file": "model.onnx"}, "dlr": {"dir": "dlr"}})
    return tmp_path / "neo"


def _rewrite(root: Path, change) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    change(manifest)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_a_file_dropped_beside_a_neo_artifact_is_refused_by_name(neo_bundle):
    # Given a complete bundle, When a libdlr.so (native code DLR would load) is dropped into its model folder
    (neo_bundle / "dlr" / "libdlr.so").write_bytes(b"\x7fELF evil")
    # Then loading it fails and names the file
    with pytest.raises(IntegrityError, match="'dlr/libdlr.so' is not listed"):
        Bundle.load(neo_bundle)


def test_a_signed_bundle_with_an_added_file_does_not_verify(neo_bundle, tmp_path):
    pytest.importorskip("cryptography")
    from cloud.signing import generate_keypair, sign_bundle
    from edge_runtime.signing import verify_bundle

    # Given a bundle signed with the release key
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    sign_bundle(neo_bundle, tmp_path / "k")
    assert verify_bundle(neo_bundle, tmp_path / "k.pub").manifest.name == "tiny"
    # When one unsigned file is added (the manifest and its signature untouched), Then it no longer verifies
    (neo_bundle / "dlr" / "libdlr.so").write_bytes(b"\x7fELF evil")
    with pytest.raises(IntegrityError, match="libdlr.so"):
        verify_bundle(neo_bundle, tmp_path / "k.pub")


@pytest.mark.parametrize("make, name, what", [
    (lambda root: (root / "extra").mkdir(), "extra", "directory 'extra' is not listed"),
    (lambda root: (root / "dlr" / "deeper").mkdir(), "dlr/deeper", "directory 'dlr/deeper' is not listed"),
    (lambda root: (root / "notes.txt").write_text("hi"), "notes.txt", "file 'notes.txt' is not listed"),
    (lambda root: (root / "link").symlink_to(root / "model.onnx"), "link", "'link' is a symlink"),
    (lambda root: (root / "zero").symlink_to("/dev/zero"), "zero", "'zero' is a symlink"),
    (lambda root: os.mkfifo(root / "pipe"), "pipe", "'pipe' is a FIFO"),
])
def test_anything_unlisted_in_the_tree_is_an_error_with_its_name(neo_bundle, make, name, what):
    make(neo_bundle)
    with pytest.raises(IntegrityError, match=what):
        Bundle.load(neo_bundle)


def test_a_listed_file_replaced_by_a_symlink_or_a_fifo_is_refused(neo_bundle, tmp_path):
    # Given the model file replaced by a link to an identical copy outside the bundle: refused, though the bytes match
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(neo_bundle / "model.onnx", outside)
    (neo_bundle / "model.onnx").unlink()
    (neo_bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(IntegrityError, match="'model.onnx' is a symlink"):
        Bundle.load(neo_bundle)
    # and by a FIFO: refused at once (opening it for reading would block until a writer came)
    (neo_bundle / "model.onnx").unlink()
    os.mkfifo(neo_bundle / "model.onnx")
    with pytest.raises(IntegrityError, match="'model.onnx' is a FIFO"):
        Bundle.load(neo_bundle)


def test_a_bundle_reached_through_a_symlink_still_loads(neo_bundle, tmp_path):
    # A deployment points a `current` link at the bundle: the root may be a link, nothing inside it may
    (tmp_path / "current").symlink_to(neo_bundle)
    assert Bundle.load(tmp_path / "current").manifest.name == "tiny"


@pytest.mark.parametrize("backends, message", [
    ({"onnxruntime": {"file": "/etc/passwd"}}, "must be relative"),
    ({"onnxruntime": {"file": "../outside.onnx"}}, "must be relative"),
    ({"onnxruntime": {"file": "./model.onnx"}}, "must be relative"),
    ({"onnxruntime": {"file": "other.onnx"}}, "'other.onnx' is not listed"),
    ({"onnxruntime": {"file": 7}}, "must be relative"),
    ({"dlr": {"dir": "/opt/neo"}}, "must be relative"),
    ({"dlr": {"dir": "dlr/.."}}, "must be relative"),
    ({"dlr": {"dir": "neo"}}, "'neo' is not a directory of files listed"),
    ({"dlr": {"dir": "model.onnx"}}, "is not a directory of files listed"),
])
def test_every_path_a_backend_names_is_relative_inside_and_listed(neo_bundle, backends, message):
    _rewrite(neo_bundle, lambda m: m.update(backends=backends))
    with pytest.raises(ManifestError, match=message):
        Bundle.load(neo_bundle)


@pytest.mark.parametrize("files, message", [
    ({"a//b": {"sha256": "0" * 64}}, "must be relative"),
    ({"manifest.sig": {"sha256": "0" * 64}}, "cannot be listed"),
    ({"tokenizer.json": {"sha256": "xyz"}}, "64 lower-case hex"),
    ({"tokenizer.json": {"sha256": "0" * 64, "bytes": -1}}, "non-negative"),
])
def test_file_entries_are_normalised_paths_with_a_real_digest(neo_bundle, files, message):
    _rewrite(neo_bundle, lambda m: m["files"].update(files))
    with pytest.raises(ManifestError, match=message):
        Bundle.load(neo_bundle)


def test_a_manifest_nested_100k_deep_or_with_huge_numbers_gets_its_specific_error(bundle_copy):
    # Given a manifest nested 100,000 deep: a ManifestError, not a RecursionError traceback
    (bundle_copy / MANIFEST_NAME).write_text('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ManifestError, match="nested too deeply"):
        Bundle.load(bundle_copy)
    # Given an integer of 5000 digits (json.loads raises ValueError): a ManifestError
    (bundle_copy / MANIFEST_NAME).write_text('{"max_length": ' + "9" * 5000 + "}")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Bundle.load(bundle_copy)


def test_a_max_length_of_2_to_the_70_is_refused_before_the_tokenizer_sees_it(bundle_copy):
    from edge_runtime import IntentClassifier

    _rewrite(bundle_copy, lambda m: m.update(max_length=2**70))
    with pytest.raises(ManifestError, match="'max_length' must be between 2 and 65536"):
        IntentClassifier.from_bundle(bundle_copy, backend="onnxruntime", threads=1)


def test_staging_copies_the_listed_files_only_and_refuses_a_stray_file_before_copying(neo_bundle, tmp_path):
    # Given a signature next to the manifest: staged with it, and the copy verifies
    (neo_bundle / "manifest.sig").write_text("c2ln\n")
    copy = stage_bundle(neo_bundle, tmp_path / "copy")
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == sorted(
        ["manifest.json", "manifest.sig", "model.onnx", "tokenizer.json", "dlr/compiled.so", "dlr/compiled.params"])
    assert (copy.stat().st_mode & 0o077) == 0
    assert Bundle.load(copy).manifest.files == Bundle.load(neo_bundle).manifest.files
    # Given a stray file: nothing is copied
    (neo_bundle / "dlr" / "libdlr.so").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="libdlr.so"):
        stage_bundle(neo_bundle, tmp_path / "copy2")
    assert not (tmp_path / "copy2").exists()


def test_staging_a_file_that_grows_past_its_listed_size_stops_at_that_size(neo_bundle, tmp_path):
    # Given a listed file that is larger than the manifest says (it grew after the check)
    entry = Bundle.load(neo_bundle).manifest.files["tokenizer.json"]
    with (neo_bundle / "tokenizer.json").open("ab") as fh:
        fh.write(b" " * 10)
    # Then the copy is refused at the listed size (verification would refuse it too, but never copies more)
    with pytest.raises(IntegrityError, match=f"larger than the {entry['bytes']} bytes"):
        stage_bundle(neo_bundle, tmp_path / "copy")


def test_staging_never_blocks_on_a_fifo(neo_bundle, tmp_path):
    # Given a listed file swapped for a FIFO: staging is refused at once instead of waiting for a writer forever
    (neo_bundle / "tokenizer.json").unlink()
    os.mkfifo(neo_bundle / "tokenizer.json")
    outcome: list[BaseException] = []

    def stage() -> None:
        try:
            stage_bundle(neo_bundle, tmp_path / "copy")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    worker = threading.Thread(target=stage, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "staging blocked on a FIFO"
    assert isinstance(outcome[0], IntegrityError) and "FIFO" in str(outcome[0])


def test_a_missing_listed_file_is_still_named(neo_bundle):
    (neo_bundle / "dlr" / "compiled.params").unlink()
    with pytest.raises(MissingFileError, match="'dlr/compiled.params' listed in the manifest is missing"):
        Bundle.load(neo_bundle)


def test_dlr_is_told_never_to_take_a_library_from_the_model_folder(neo_bundle, monkeypatch):
    # dlr 1.10's DLRModel(model_path, dev_type, dev_id, error_log_file, use_default_dlr=False) loads
    # <model_path>/libdlr.so when one exists unless use_default_dlr is True (dlr/libpath.py, find_lib_path). The
    # stand-in keeps that rule: given a libdlr.so in the folder, it "loads" it unless told otherwise.
    loaded: list[str] = []

    class DLRModel:
        def __init__(self, model_path, dev_type=None, dev_id=None, error_log_file=None, use_default_dlr=False):
            candidate = os.path.join(model_path, "libdlr.so")
            loaded.append(candidate if not use_default_dlr and os.path.exists(candidate) else "default libdlr.so")

        def get_input_names(self):
            return ["input_ids", "attention_mask"]

    fake = types.ModuleType("dlr")
    fake.DLRModel = DLRModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dlr", fake)
    from edge_runtime.backends.dlr import DlrBackend

    # (a folder that holds one, as an unverified path would)
    (neo_bundle / "dlr" / "libdlr.so").write_bytes(b"\x7fELF evil")
    DlrBackend(neo_bundle / "dlr")
    assert loaded == ["default libdlr.so"]


def test_every_listed_file_still_has_its_sha256_checked(neo_bundle):
    with (neo_bundle / "dlr" / "compiled.so").open("r+b") as fh:
        fh.write(b"X")
    with pytest.raises(IntegrityError, match="sha256 of 'dlr/compiled.so'"):
        Bundle.load(neo_bundle)
