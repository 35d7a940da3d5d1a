"""``python -m edge_runtime.bench``: the JSON contract and the budget check (not timings)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_runtime.bench import check_budget, load_budgets
from edge_runtime.bench.cli import main
from tests.conftest import REPO


def test_bench_writes_the_contract_keys_and_passes_a_loose_profile(tiny_bundle, tmp_path):
    # In its own process, as a user runs it: peak RSS is the bench's, not the test runner's.
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.bench", "--bundle", str(tiny_bundle[0].root),
                           "--profile", "tiny", "--json", str(out), "--threads", "1", "--iterations", "20",
                           "--batches", "2", "--cold-runs", "1"], capture_output=True, text=True, cwd=REPO, timeout=300)
    data = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(data["latency_ms"]) >= {"p50", "p95", "p99"}
    assert set(data["throughput"]) == {"batch8", "batch32"}
    assert data["cold_start_s"] > 0 and data["load_s"] > 0 and data["peak_rss_mb"] > 0
    assert data["budget"] == {"profile": "tiny", "passed": True, "violations": []}
    assert "latency_p50_ms" in proc.stdout


def test_exceeded_budget_exits_1_and_names_the_metric(tiny_bundle, tmp_path):
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"impossible": {"max": {"peak_rss_mb": 1}, "min": {"throughput_batch32": 1e12}}}))
    out = tmp_path / "bench.json"
    rc = main(["--bundle", str(tiny_bundle[0].root), "--profile", "impossible", "--budgets", str(budgets),
               "--json", str(out), "--iterations", "5", "--batches", "1", "--cold-runs", "0", "--threads", "1"])
    violations = json.loads(out.read_text())["budget"]["violations"]
    assert rc == 1
    assert {v["metric"] for v in violations} == {"peak_rss_mb", "throughput_batch32"}


def test_every_device_profile_exists_with_the_contract_metrics():
    budgets = load_budgets()
    assert {"x86-ci", "rpi4", "jetson-nano", "qemu-arm64"} <= set(budgets)
    for name in ("x86-ci", "rpi4", "jetson-nano", "qemu-arm64"):
        assert {"latency_p50_ms", "cold_start_s", "peak_rss_mb"} <= set(budgets[name]["max"])
        assert {"throughput_batch32"} <= set(budgets[name]["min"])


def test_check_budget_limits_are_inclusive_and_unknown_profiles_fail():
    budgets = {"p": {"max": {"a": 1.0}, "min": {"b": 2.0}}}
    assert check_budget({"a": 1.0, "b": 2.0}, "p", budgets)["passed"]
    assert not check_budget({"a": 1.01, "b": 2.0}, "p", budgets)["passed"]
    with pytest.raises(KeyError, match="unknown profile"):
        check_budget({}, "nope", budgets)


def test_bad_bundle_exits_2(tmp_path):
    assert main(["--bundle", str(tmp_path), "--profile", "tiny", "--cold-runs", "0"]) == 2


def test_the_spin_comparison_runs_short_and_reports_every_setting(tiny_bundle, tmp_path):
    out = tmp_path / "spin.json"
    proc = subprocess.run([sys.executable, "bench/spin_compare.py", "--bundle", str(tiny_bundle[0].root),
                           "--spins", "5,50", "--threads", "1", "--rounds", "1", "--seconds", "0.1", "--hog", "0.2",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert sorted(result["spins"]) == ["5", "50"]
    for row in result["spins"].values():
        assert row["latency_p50_ms"] > 0 and row["one_caller_per_s"] > 0 and row["two_callers_per_s"] > 0


def test_the_batcher_overhead_comparison_runs_short_and_reports_every_contender(tiny_bundle, tmp_path):
    out = tmp_path / "batcher.json"
    proc = subprocess.run([sys.executable, "bench/batcher_overhead.py", "--bundle", str(tiny_bundle[0].root),
                           "--threads", "1", "--rounds", "1", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert sorted(result["contenders"]) == ["1 worker", "2 workers", "direct"]
    for row in result["contenders"].values():
        assert 0 < row["p50"] <= row["p90"] <= row["p99"]


def test_a_missing_bundle_is_one_line_of_error_not_a_traceback(tmp_path):
    # As a user runs it, cold-start runs included: the bundle is looked at before any process is started
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.bench", "--bundle", str(tmp_path / "missing")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: bundle directory not found: {tmp_path / 'missing'}"]


def test_bench_help_shows_defaults_and_choices():
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.bench", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0
    assert all(s in text for s in ("(default: 500)", "(default: 30)", "(default: 3)", "{auto,onnxruntime,dlr,fake}"))
