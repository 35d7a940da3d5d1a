"""``python -m edge_runtime predict`` and the package surface."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import edge_runtime
from edge_runtime.cli import main
from tests.conftest import LABELS, REPO

HEAVY = ("torch", "transformers", "optimum", "boto3", "botocore", "sagemaker", "cloud", "great_expectations")


def test_public_api_is_pinned():
    assert sorted(edge_runtime.__all__) == sorted([
        "BUNDLE_FORMAT", "FORMAT_VERSION", "Backend", "BackendError", "BackendName", "BackendUnavailableError",
        "Bundle", "BundleError", "BundleNotFoundError", "EdgeRuntimeError", "InputError", "IntegrityError",
        "IntentClassifier", "Manifest", "ManifestError", "MissingFileError", "Prediction", "SignatureError",
        "SpoolError", "UnsupportedFormatError",
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


def _strict_json(line: str):  # type: ignore[no-untyped-def]
    """json.loads that refuses NaN / Infinity, which Python would print and no JSON parser accepts."""
    def refuse(token: str):  # type: ignore[no-untyped-def]
        raise ValueError(f"not JSON: {token}")

    return json.loads(line, parse_constant=refuse)


def test_predict_refuses_what_the_service_refuses_with_the_same_codes_and_drops_nothing(tiny_bundle, capsys):
    from edge_runtime.service.errors import RequestError
    from edge_runtime.service.protocol import decode_request

    texts = ["play some jazz", "", "   ", "x" * 513, "book a table"]
    # When predict gets valid texts mixed with ones the service refuses
    rc = main(["predict", "--bundle", str(tiny_bundle[0].root), "--threads", "1", *texts])
    rows = [_strict_json(line) for line in capsys.readouterr().out.splitlines()]
    # Then every text has its line, in order, and a refused text carries the service's error code
    assert rc == 1 and [r["text"] for r in rows] == texts
    for text, row in zip(texts, rows):
        try:
            decode_request(json.dumps({"id": "r", "text": text}).encode(), max_text_chars=512, max_texts=32,
                           max_payload_bytes=65536)
            expected = None
        except RequestError as exc:
            expected = exc.code
        assert row.get("error", {}).get("code") == expected, row
        assert ("intent" in row) == (expected is None)
    assert [r.get("error", {}).get("code") for r in rows] == [None, "empty_text", "empty_text", "text_too_long", None]


def test_predict_on_stdin_answers_every_line_even_one_that_is_not_utf8(tiny_bundle):
    out = subprocess.run([sys.executable, "-m", "edge_runtime", "predict", "--bundle", str(tiny_bundle[0].root),
                          "--threads", "1"], input=b"play jazz\n\xff\xfe broken\r\n\nrate this book\n",
                         capture_output=True, cwd=REPO, timeout=120)
    rows = [_strict_json(line) for line in out.stdout.decode("utf-8").splitlines()]
    assert out.returncode == 1, out.stderr
    assert [r.get("error", {}).get("code") for r in rows] == [None, "bad_encoding", "empty_text", None]
    assert rows[0]["text"] == "play jazz" and rows[3]["text"] == "rate this book"


def test_predict_never_prints_invalid_json_when_the_model_gives_nan(tmp_path, capsys):
    from tests.edge_runtime.service.test_robustness import _nan_bundle

    # Given a model that scores Inf for any text with "jazz" (it passes the load check)
    bundle = _nan_bundle(tmp_path / "b", poisoned_word="jazz")
    rc = main(["predict", "--bundle", str(bundle), "--threads", "1", "book a table", "play jazz", "rate a book"])
    rows = [_strict_json(line) for line in capsys.readouterr().out.splitlines()]
    # Then the poisoned text gets an internal error line and the others their answers
    assert rc == 1 and [r.get("error", {}).get("code") for r in rows] == [None, "internal", None]
    assert "non-finite" in rows[1]["error"]["message"]


@pytest.mark.parametrize("argv, shown", [
    (["predict", "--help"], ["(default: 3)", "(default: 512)", "{auto,onnxruntime,dlr,fake}", "(default: auto)"]),
    (["serve", "--help"], ["(default: mqtt://127.0.0.1:1883)", "(default: 256)", "(default: 0.0)"]),
])
def test_help_shows_defaults_and_choices(argv, shown, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert info.value.code == 0 and all(s in text for s in shown), text


@pytest.mark.parametrize("env, first, want", [
    ({}, "", "1"),  # numpy's OpenBLAS gets one thread: no thread besides the interpreter's own after the import
    ({"OMP_NUM_THREADS": "2"}, "", "None"),  # the process chose its BLAS threads
    ({"OPENBLAS_NUM_THREADS": "2"}, "", "2"),
    ({}, "import numpy; ", "None"),  # numpy already loaded: too late to matter, so left alone
])
def test_import_leaves_openblas_one_thread_unless_the_process_chose(env, first, want):
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")}

    def run(code: str) -> str:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                             env={**clean, **env})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    threads = "len(os.listdir('/proc/self/task'))"
    bare = run(f"import os; print({threads})")  # 1 natively; an emulator (QEMU user mode) adds its own
    value, after = run(f"{first}import os, edge_runtime, numpy; print(os.environ.get('OPENBLAS_NUM_THREADS'), "
                       f"{threads})").split()
    assert value == want
    if value == "1":
        assert after == bare  # OpenBLAS started no thread
