"""The soak benchmark, short: bench/soak.py end to end through a real broker (the long run is by hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.edge_runtime.service.broker import MOSQUITTO

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


def test_a_short_soak_loses_nothing_and_reports_memory_and_latency_windows(tiny_bundle, tmp_path):
    # Given the soak script on the tiny bundle for a few seconds (CI machines are shared and noisy, so the
    # p99 stability target is judged only on the long run: here it is reported, not enforced)
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--bundle", str(tiny_bundle[0].root),
                           "--duration", "10", "--warmup", "3", "--window", "3", "--rate", "40", "--clients", "2",
                           "--threads", "1", "--grace", "10", "--p99-tolerance", "1000", "--rss-limit-mb", "5",
                           "--json", str(out)], capture_output=True, text=True, timeout=90, cwd=REPO)
    # Then it passes: every request answered exactly once, RSS growth after warm-up within 5 MB
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["sent"] >= 300 and result["lost"] == 0 and result["duplicates"] == 0 and result["errors"] == 0
    assert result["rss_mb"]["growth_after_warmup"] <= 5
    assert result["p99_ms"]["first_window"] > 0 and result["p99_ms"]["last_window"] > 0
    assert result["service_exit"] == 0 and result["targets"]["passed"]


def test_the_soak_script_refuses_windows_that_overlap(tiny_bundle):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--bundle", str(tiny_bundle[0].root),
                           "--duration", "5", "--warmup", "3", "--window", "3"], capture_output=True, text=True,
                          timeout=30, cwd=REPO)
    assert proc.returncode == 2 and "--duration must cover" in proc.stderr
