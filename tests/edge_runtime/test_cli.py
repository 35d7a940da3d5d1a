"""``python -m edge_runtime predict`` and the package surface."""

from __future__ import annotations

import json
import subprocess
import sys

import edge_runtime
from edge_runtime.cli import main
from tests.conftest import LABELS, REPO

HEAVY = ("torch", "transformers", "optimum", "boto3", "botocore", "sagemaker", "cloud", "great_expectations")


def test_public_api_is_pinned():
    assert sorted(edge_runtime.__all__) == sorted([
        "BUNDLE_FORMAT", "FORMAT_VERSION", "Backend", "BackendError", "BackendName", "BackendUnavailableError",
        "Bundle", "BundleError", "BundleNotFoundError", "EdgeRuntimeError", "InputError", "IntegrityError",
        "IntentClassifier", "Manifest", "ManifestError", "MissingFileError", "Prediction", "SignatureError", "SpoolError",
        "UnsupportedFormatError",
        "load_backend", "write_bundle", "zip_bundle"])
    for name in edge_runtime.__all__:
        assert hasattr(edge_runtime, name)


def test_predict_prints_one_json_line_per_text(tiny_bundle, capsys):
    rc = main(["predict", "--bundle", str(tiny_bundle[0].root), "--threads", "1", "play some jazz", "book a table"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert rows[0]["text"] == "play some jazz" and rows[0]["intent"] in LABELS
    assert rows[1]["model"] == {"name": "tiny", "version": "1"}


def test_predict_reads_stdin_and_loads_nothing_heavy(tiny_bundle):
    # Given a fresh interpreter, When it imports edge_runtime and runs predict on stdin texts,
    # Then no training-side or AWS module was imported
    code = (
        "import sys, runpy\n"
        "sys.argv = ['edge_runtime', 'predict', '--bundle', sys.argv[1], '--threads', '1']\n"
        "try:\n    runpy.run_module('edge_runtime', run_name='__main__')\nexcept SystemExit as e:\n    rc = e.code\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules], rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tiny_bundle[0].root)], input="play jazz\nrate this book\n",
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [json.loads(x)["text"] for x in lines[:2]] == ["play jazz", "rate this book"]
    assert lines[2] == "LOADED [] 0"


def test_import_alone_loads_neither_heavy_modules_nor_onnxruntime():
    code = f"import sys, edge_runtime; print([m for m in {HEAVY + ('onnxruntime', 'tokenizers')!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_bad_bundle_exits_2_with_a_message(tmp_path, capsys):
    assert main(["predict", "--bundle", str(tmp_path / "missing"), "x"]) == 2
    assert "bundle directory not found" in capsys.readouterr().err
