"""Backend selection, the DLR fallback (with the real dlr package) and backend errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from edge_runtime import BackendError, BackendUnavailableError, Bundle, load_backend
from edge_runtime.backends import BackendName
from edge_runtime.bundle import sha256_file
from tests.conftest import REPO, build_tiny_bundle


def test_backend_names_parse_from_strings():
    assert BackendName.parse("onnxruntime") is BackendName.ONNXRUNTIME
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        BackendName.parse("tvm")


def test_auto_without_dlr_artifact_is_onnxruntime(tiny_bundle):
    backend = load_backend(tiny_bundle[0], "auto", threads=1)
    assert backend.name == "onnxruntime" and backend.input_names == ("input_ids", "attention_mask")
    backend.close()


def test_named_backend_missing_from_bundle(tiny_bundle):
    with pytest.raises(BackendUnavailableError, match="no 'dlr' model"):
        load_backend(tiny_bundle[0], "dlr")


def test_unavailable_execution_provider(tiny_bundle):
    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
        load_backend(tiny_bundle[0], "onnxruntime", providers=["TensorrtExecutionProvider"])


def test_corrupt_model_with_matching_hash_gives_backend_error_not_a_deep_trace(tmp_path):
    # Given a bundle whose model file is garbage but whose manifest hash matches it
    bundle, _ = build_tiny_bundle(tmp_path / "b")
    (bundle.root / "model.onnx").write_bytes(b"not an onnx model")
    manifest = json.loads((bundle.root / "manifest.json").read_text())
    # (the file stays listed: a bundle may hold nothing its manifest does not list)
    manifest["files"]["model.onnx"] = {"sha256": sha256_file(bundle.root / "model.onnx"),
                                       "bytes": (bundle.root / "model.onnx").stat().st_size}
    (bundle.root / "manifest.json").write_text(json.dumps(manifest))
    # When it is loaded, Then the error is ours
    with pytest.raises(BackendError, match="onnxruntime cannot load"):
        load_backend(Bundle.load(bundle.root), "onnxruntime")


@pytest.fixture()
def dlr_bundle(tmp_path):
    """A bundle with a (fake) Neo artifact folder next to the ONNX model."""
    src = tmp_path / "neo"
    src.mkdir()
    (src / "compiled.so").write_bytes(b"\x7fELF not really")
    (src / "compiled.params").write_bytes(b"params")
    from edge_runtime.bundle import write_bundle
    from tests.conftest import write_tiny_onnx, write_tiny_tokenizer, tiny_weights

    tok = write_tiny_tokenizer(tmp_path / "tokenizer.json")
    vocab = len(json.loads(tok.read_text())["model"]["vocab"])
    model = write_tiny_onnx(tmp_path / "model.onnx", tiny_weights(vocab, 7))
    return write_bundle(tmp_path / "bundle", files={"tokenizer.json": tok, "model.onnx": model,
                                                   "dlr/compiled.so": src / "compiled.so",
                                                   "dlr/compiled.params": src / "compiled.params"},
                        name="t", version="1", labels=[f"l{i}" for i in range(7)], max_length=16,
                        tokenizer="tokenizer.json",
                        backends={"onnxruntime": {"file": "model.onnx"}, "dlr": {"dir": "dlr"}})


def test_auto_falls_back_from_dlr_to_onnxruntime_and_says_why_once(dlr_bundle, caplog):
    pytest.importorskip("dlr.api", reason="the dlr extra is not installed")
    import edge_runtime.backends as backends

    backends._warned.clear()
    with caplog.at_level(logging.WARNING, logger="edge_runtime.backends"):
        first = load_backend(dlr_bundle, "auto", threads=1)
        second = load_backend(dlr_bundle, "auto", threads=1)
    assert first.name == second.name == "onnxruntime"
    warnings = [r.getMessage() for r in caplog.records if "DLR" in r.getMessage()]
    assert len(warnings) == 1 and "DLR cannot load" in warnings[0]


def test_dlr_named_explicitly_raises_when_the_native_library_is_missing(dlr_bundle):
    pytest.importorskip("dlr.api", reason="the dlr extra is not installed")
    with pytest.raises(BackendUnavailableError, match="DLR cannot load"):
        load_backend(dlr_bundle, "dlr")


def test_importing_dlr_through_the_runtime_makes_no_network_call(dlr_bundle):
    # In a fresh process (dlr not yet imported), every outgoing connection attempt is recorded.
    pytest.importorskip("dlr.api", reason="the dlr extra is not installed")
    code = textwrap.dedent(f"""
        import socket, sys
        calls = []
        real_connect = socket.socket.connect
        def spy(self, addr):
            calls.append(addr)
            raise OSError("network disabled in this test")
        socket.socket.connect = spy
        socket.create_connection = lambda *a, **k: spy(None, a[0])
        from edge_runtime import Bundle, load_backend
        b = load_backend(Bundle.load({str(dlr_bundle.root)!r}), "auto", threads=1)
        print(b.name, "dlr" in sys.modules, type(sys.modules["dlr.counter.phone_home"].MGR).__name__, calls)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["onnxruntime", "True", "NoneType", "[]"]


def test_a_fixed_shape_neo_model_gets_each_text_padded_to_its_length_and_run_alone():
    # Given a DLR backend whose (stand-in) model records the shapes it is run with
    import threading

    import numpy as np

    from edge_runtime.backends.dlr import DlrBackend

    class Model:
        shapes = []

        def run(self, feeds):
            self.shapes.append(feeds["input_ids"].shape)
            return [feeds["attention_mask"].sum(axis=1, keepdims=True).astype(np.float32)]

    backend = DlrBackend.__new__(DlrBackend)
    backend._model, backend.fixed_length, backend.input_names = Model(), 8, ("input_ids", "attention_mask")
    backend._lock = threading.Lock()
    ids = np.array([[2, 5, 3, 0], [2, 5, 6, 3]], dtype=np.int64)
    # When a padded batch of two runs, Then each row runs alone at [1, 8] and keeps its own mask
    out = backend.run({"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)})
    assert Model.shapes == [(1, 8), (1, 8)]
    assert out.ravel().tolist() == [3.0, 4.0]
