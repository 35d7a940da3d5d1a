"""The fleet simulation: three service processes on one broker, staged rollouts through the local backend."""

from __future__ import annotations

import pytest

from cloud.rollout import Gates, LocalBackend
from tests.edge_runtime.service.broker import MOSQUITTO, Mosquitto
from tests.fleet.bundles import other_domain_texts, reference_bundle, snips_texts
from tests.fleet.sim import DEVICE_ENV, MODEL, FleetWatch, run_rollout

GROUPS = {"canary": ["sim-canary-1"], "fleet": ["sim-fleet-1", "sim-fleet-2"]}
GATES = Gates(min_requests=40, max_error_rate=0.01, max_latency_p95_ms=1000.0, max_drift_alerts=0)


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
def test_a_good_version_reaches_the_fleet_and_a_bad_canary_never_does(tmp_path):
    # Given a fleet of 3 devices (1 canary, 2 fleet) running version 1, and versions 2 (good) and 3 (bad: its
    # reference statistics come from the wrong data, so real traffic raises drift alerts on the canary)
    bundles = {"1": reference_bundle(tmp_path / "v1", version="1"),
               "2": reference_bundle(tmp_path / "v2", version="2"),
               "3": reference_bundle(tmp_path / "v3", version="3", reference_texts=other_domain_texts(200))}
    texts = snips_texts("test", 64)
    with Mosquitto(tmp_path / "mq") as mq:
        watch = FleetWatch(mq.url)
        try:
            with LocalBackend(mq.url, GROUPS, bundles, workdir=tmp_path / "devices", env=DEVICE_ENV) as backend:
                for group in GROUPS:
                    backend.deploy(group, {MODEL: "1"}, stage="initial")
                watch.wait_online(GROUPS["canary"] + GROUPS["fleet"], "1")

                # When version 2 is rolled out, Then the canary passes its gates and both fleet devices get it
                good = run_rollout(backend, watch, tmp_path / "r2.json", "2", GROUPS, texts, gates=GATES)
                assert good["status"] == "promoted", good
                watch.wait_online(GROUPS["fleet"], "2")
                assert set(backend.running.values()) == {"2"}

                # When version 3 is rolled out, Then the canary fails the drift gate and is rolled back to 2
                bad = run_rollout(backend, watch, tmp_path / "r3.json", "3", GROUPS, texts, gates=GATES)
                assert bad["status"] == "rolled_back"
                failed = {c["gate"] for c in bad["gates"]["checks"] if not c["passed"]}
                assert failed == {"max_drift_alerts"}
                watch.wait_online(GROUPS["canary"], "2")
                # and the fleet never received it
                assert backend.running == {"sim-canary-1": "2", "sim-fleet-1": "2", "sim-fleet-2": "2"}
                assert not any(m.get("model", {}).get("version") == "3" for m in watch.telemetry
                               if m.get("thing") in GROUPS["fleet"])
        finally:
            watch.close()
