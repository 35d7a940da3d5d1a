"""End to end under QEMU (``--run-arm64``): the runner on the tiny bundle, one CPU model, a few texts.

The full proof (real bundle, both CPU models, the edge tests and the bench) is ``make test-arm64``.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import SNIPS

pytestmark = pytest.mark.arm64


def test_runner_imports_predicts_and_matches_x86(tiny_bundle, tmp_path):
    from bench.arm64.run import main

    if not (SNIPS / "test" / "seq.in").is_file():
        pytest.skip(f"no SNIPS data at {SNIPS}")
    rc = main(["--steps", "imports,predict,cli", "--cpus", "neoverse-n1", "--bundle", str(tiny_bundle[0].root),
               "--max-texts", "21", "--results", str(tmp_path), "--jobs", "1"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 0, json.dumps(summary["results"], indent=1)[:4000]
    steps = summary["results"]["neoverse-n1"]
    assert steps["imports"]["result"]["machine"] == "aarch64"
    assert steps["predict"]["result"]["checked"] >= 21 and steps["predict"]["result"]["mismatches"] == []
