"""The main job on the full SNIPS data with the real MiniLM-L6 and the shipped params (about 10-15 minutes).

    .venv/bin/python -m pytest tests/cloud/test_pipeline_full.py --run-slow
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import SNIPS


@pytest.mark.slow
@pytest.mark.skipif(not (SNIPS / "train" / "seq.in").is_file(), reason="SNIPS data not beside the checkout")
def test_full_snips_run_meets_the_targets(tmp_path):
    from cloud.pipeline import main

    started = time.perf_counter()
    rc = main(["run", "--data", str(SNIPS), "--store", str(tmp_path / "store"),
               "--summary-json", str(tmp_path / "summary.json"), "--no-progress"])
    minutes = (time.perf_counter() - started) / 60
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 0, summary.get("error")
    m = summary["metrics"]
    assert m["int8"]["accuracy"] >= 0.985 and m["int8"]["macro_f1"] >= 0.985, m
    assert m["fp32"]["macro_f1"] - m["int8"]["macro_f1"] <= 0.003, m
    assert m["batch_consistency"] == 1.0
    assert minutes < 35
