"""A local fleet: service processes on one Mosquitto, deployed in stages by :mod:`cloud.rollout`'s logic.

Used by ``tests/fleet/test_fleet_simulation.py``, and runnable as a demo (needs mosquitto)::

    python -m tests.fleet.sim            # a good version is promoted, a bad one never leaves the canary
    python -m tests.fleet.sim --help

The devices are ``edge_runtime serve`` processes on one broker (:class:`cloud.rollout.LocalBackend`), not
Greengrass deployments: no nucleus is involved, so nothing here needs the nucleus settings a Greengrass
deployment would (and the app recipe needs none either: greengrass/README.md, "IPC authorization").
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from cloud.rollout import LocalBackend, Rollout, RolloutPlan
from edge_runtime.service.protocol import Topics

MODEL = LocalBackend.COMPONENT
DEVICE_ENV = {"EDGE_INTENTS_TELEMETRY_INTERVAL": "0.5", "EDGE_INTENTS_DRIFT_MIN_REQUESTS": "10",
              "EDGE_INTENTS_STATUS_INTERVAL_S": "3600", "EDGE_INTENTS_LOG_LEVEL": "WARNING"}


class FleetWatch:
    """Subscribes to every device's telemetry, status and replies; drives traffic."""

    def __init__(self, url: str) -> None:
        import paho.mqtt.client as mqtt

        self.telemetry: list[dict[str, Any]] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.replies: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-watch", protocol=mqtt.MQTTv5)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([("dt/intents/+/telemetry", 1), ("dt/intents/+/status", 1),
                                                            ("cmd/intents/+/response", 1)])
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        c.connect(host, int(port))
        c.loop_start()
        self.client = c
        if not self._subscribed.wait(10):
            raise TimeoutError("the fleet watcher could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        body = json.loads(msg.payload)
        with self._cond:
            if msg.topic.endswith("/telemetry"):
                self.telemetry.append(body)
            elif msg.topic.endswith("/status"):
                self.status[body["thing"]] = body
            else:
                self.replies.append(body)
            self._cond.notify_all()

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out waiting for {what}")
                self._cond.wait(left)

    def wait_online(self, things: Sequence[str], version: str, timeout: float = 30.0) -> None:
        def ok() -> bool:
            return all(self.status.get(t, {}).get("state") == "online"
                       and self.status[t].get("model", {}).get("version") == version for t in things)
        self.wait(ok, timeout, f"{list(things)} online with version {version}")

    def traffic(self, things: Sequence[str], texts: Sequence[str], batch: int = 16) -> None:
        """Send ``texts`` to each thing (batched requests) and wait for every reply."""
        with self._cond:
            before = len(self.replies)
        sent = 0
        for thing in things:
            for i in range(0, len(texts), batch):
                self.client.publish(Topics.for_thing(thing).request,
                                    json.dumps({"id": f"{thing}-{i}", "texts": list(texts[i:i + batch])}), qos=1)
                sent += 1
        self.wait(lambda: len(self.replies) - before >= sent, 30, f"{sent} replies")

    def windows(self, thing: str, version: str) -> list[dict[str, Any]]:
        with self._cond:
            return [m for m in self.telemetry if m.get("thing") == thing and m.get("type") == "telemetry"
                    and m["model"]["version"] == version and m["window"]["requests"] > 0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_rollout(backend: LocalBackend, watch: FleetWatch, state: Path, version: str, groups: dict[str, list[str]],
                traffic_texts: Sequence[str], *, gates: Any) -> dict[str, Any]:
    """plan -> start (canary) -> canary traffic and telemetry -> promote; returns promote's result."""
    Rollout.create(RolloutPlan(version, {MODEL: version}, "canary", ("fleet",), gates), state)
    rollout = Rollout(state, backend)
    rollout.start()
    canary = groups["canary"]
    watch.wait_online(canary, version)
    watch.traffic(canary, traffic_texts)
    # Judge once the canary's windows are conclusive, plus one more window each (a drift alert follows its window).
    watch.wait(lambda: rollout.verdict(list(watch.telemetry)).verdict != "wait", 20,
               f"conclusive telemetry of {version} from the canary")
    seen = len(watch.telemetry)
    watch.wait(lambda: {m.get("thing") for m in watch.telemetry[seen:] if m.get("type") == "telemetry"} >= set(canary),
               10, "one more telemetry window from the canary")
    with watch._cond:
        telemetry = list(watch.telemetry)
    return rollout.promote(telemetry)


def build_parser() -> "argparse.ArgumentParser":
    import argparse

    from cloud.clihelp import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="python -m tests.fleet.sim", formatter_class=HelpFormatter,
        description="A local fleet demo: one canary and two fleet devices (edge_runtime serve processes) on a "
                    "Mosquitto started on a free loopback port. Version 1 runs everywhere; version 2 (same data) "
                    "is rolled out canary first and promoted; version 3 (a drifted reference) fails the canary's "
                    "gates and is rolled back. Prints each verdict and what every device runs. Needs mosquitto "
                    "and the tiny test bundles (built on the fly); everything lives in a temporary folder.")
    parser.add_argument("--min-requests", type=int, default=40, help="canary requests before the gates judge")
    parser.add_argument("--max-latency-p95-ms", type=float, default=1000.0, help="latency gate of the canary")
    return parser


def demo(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - a manual demo
    from cloud.rollout import Gates
    from tests.edge_runtime.service.broker import Mosquitto
    from tests.fleet.bundles import other_domain_texts, reference_bundle, snips_texts

    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundles = {"1": reference_bundle(root / "v1", version="1"), "2": reference_bundle(root / "v2", version="2"),
                   "3": reference_bundle(root / "v3", version="3", reference_texts=other_domain_texts(200))}
        groups = {"canary": ["sim-canary-1"], "fleet": ["sim-fleet-1", "sim-fleet-2"]}
        with Mosquitto(root / "mq") as mq:
            watch = FleetWatch(mq.url)
            with LocalBackend(mq.url, groups, bundles, workdir=root / "devices", env=DEVICE_ENV) as backend:
                for g in groups:
                    backend.deploy(g, {MODEL: "1"}, stage="initial")
                watch.wait_online(groups["canary"] + groups["fleet"], "1")
                texts = snips_texts("test", 64)
                for v in ("2", "3"):
                    result = run_rollout(backend, watch, root / f"rollout-{v}.json", v, groups, texts,
                                         gates=Gates(min_requests=args.min_requests,
                                                     max_latency_p95_ms=args.max_latency_p95_ms))
                    print(f"version {v}: {result['status']}; gates {json.dumps(result['gates']['checks'])}")
                    print("  running:", {t: backend.running[t] for g in groups.values() for t in g})
            watch.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(demo())
