"""bench/service_load.py keeps working: a short round trip and a short load run on the tiny bundle."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.edge_runtime.service.broker import MOSQUITTO

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")


@pytest.mark.parametrize("mode, args", [
    ("roundtrip", ["--requests", "40", "--warmup", "5"]),
    ("load", ["--rate", "150", "--clients", "3", "--duration", "1.5", "--grace", "10"]),
])
def test_the_service_benchmark_runs_short_and_loses_nothing(mode, args, tiny_bundle, tmp_path):
    out = tmp_path / f"{mode}.json"
    proc = subprocess.run([sys.executable, "bench/service_load.py", mode, "--bundle", str(tiny_bundle[0].root),
                           "--threads", "1", "--no-check", "--json", str(out), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["service_exit"] == 0 and result["latency_ms"]["p50"] > 0
    assert result["model"] == {"name": "tiny", "version": "1"}
    if mode == "load":
        assert result["sent"] >= 200 and result["lost"] == 0 and result["duplicates"] == 0 and result["errors"] == 0
        assert result["service"]["counters"]["replied"] == result["sent"]
