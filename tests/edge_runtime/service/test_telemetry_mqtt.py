"""Store and forward end to end: ``serve`` with a broker that comes up late delivers every window, in order."""

from __future__ import annotations

import threading
import time

import pytest

from edge_runtime.service.config import ServiceConfig
from edge_runtime.service.protocol import Topics
from edge_runtime.service.runner import serve
from tests.edge_runtime.service import broker as broker_mod
from tests.edge_runtime.service.broker import MOSQUITTO, Client, Mosquitto, free_port
from tests.fleet.bundles import reference_bundle


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
def test_windows_made_while_the_broker_is_down_arrive_in_order_once_it_is_up(tmp_path, monkeypatch):
    # Given a service whose broker is not up yet, publishing telemetry every 0.2 s into its spool
    bundle = reference_bundle(tmp_path / "bundle")
    port = free_port()
    thing = "late-broker-pi"
    cfg = ServiceConfig(bundle=str(bundle), thing=thing, broker=f"mqtt://127.0.0.1:{port}", telemetry_interval=0.2,
                        spool_path=str(tmp_path / "spool.sqlite"), status_interval_s=3600.0, reconnect_min_s=1,
                        reconnect_max_s=1)
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(cfg,), kwargs={"stop": stop}, daemon=True)
    server.start()
    time.sleep(1.0)  # about 5 windows go to the spool
    # When the broker comes up on that port and a subscriber listens
    monkeypatch.setattr(broker_mod, "free_port", lambda: port)
    with Mosquitto(tmp_path / "mq") as mq, \
            Client(mq.url, "telemetry-sink", [Topics.for_thing(thing).telemetry]) as sink:
        try:
            got = [m.json() for m in sink.collect(8, timeout=10)]
        finally:
            stop.set()
            server.join(10)
    # Then every window arrives, oldest first, none lost
    seqs = [b["seq"] for b in got if b["type"] == "telemetry"]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 5
    assert all(b["thing"] == thing and b["spool"]["dropped"] == 0 for b in got)
