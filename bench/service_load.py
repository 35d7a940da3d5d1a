"""Service benchmarks through a real broker: round-trip latency, sustained load, saturation throughput.

Starts a Mosquitto on a free 127.0.0.1 port (or uses ``--broker``), runs ``python -m edge_runtime serve`` as its own
process, drives it with paho MQTT 5 clients (each with its own connection and MQTT 5 response topic), and stops
everything by PID. Latency is client-side: publish call -> reply received.

    # round trip, batch 1, one client (target: p50 <= 3 ms)
    python bench/service_load.py roundtrip --bundle /tmp/x/edge --requests 2000
    # 500 requests/s from 5 clients for 60 s (target: p99 < 50 ms, zero lost; --duration 5 for CI)
    python bench/service_load.py load --bundle /tmp/x/edge --rate 500 --clients 5 --duration 60
    # the most it sustains with and without micro-batching (closed loop, --inflight requests per client)
    python bench/service_load.py saturate --bundle /tmp/x/edge --clients 4 --inflight 16 --duration 10 --max-batch 1

Exit status 1 when a target is missed (``--no-check`` reports only). ``--json F`` writes the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_runtime.bench.utterances import UTTERANCES  # noqa: E402
from edge_runtime.service.config import ServiceConfig  # noqa: E402
from edge_runtime.service.protocol import Topics  # noqa: E402
from tests.edge_runtime.service.broker import Client, Mosquitto  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"roundtrip_p50_ms": 3.0, "load_p99_ms": 50.0, "load_lost": 0}


def percentiles(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {}
    v = sorted(values_ms)

    def q(p: float) -> float:
        k = (len(v) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(v) - 1)
        return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 3)

    return {"p50": q(0.50), "p90": q(0.90), "p95": q(0.95), "p99": q(0.99), "max": round(v[-1], 3),
            "mean": round(sum(v) / len(v), 3), "n": len(v)}


class Service:
    """``python -m edge_runtime serve`` in its own process group."""

    def __init__(self, args: argparse.Namespace, broker_url: str, thing: str, log: Path) -> None:
        cmd = [sys.executable, "-m", "edge_runtime", "serve", "--bundle", args.bundle, "--thing", thing,
               "--broker", broker_url, "--status-interval-s", "3600", "--max-batch", str(args.max_batch),
               "--batch-window-ms", str(args.batch_window_ms), "--queue-size", str(args.queue_size),
               "--workers", str(args.workers),
               "--log-level", "WARNING"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_INTENTS_")}
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def wait_status(client: Client, topic: str, state: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = client.get(max(0.05, deadline - time.monotonic()), topic=topic).json()
        except TimeoutError:
            break
        if body.get("state") == state:
            return body
    raise RuntimeError(f"no {state!r} status from the service within {timeout} s")


def roundtrip(url: str, topics: Topics, args: argparse.Namespace) -> dict[str, Any]:
    """One client, one request at a time, batch 1."""
    topic = f"{topics.response}/rt"
    with Client(url, f"bench-rt-{os.getpid()}", [topic]) as c:
        samples = []
        for i in range(args.warmup + args.requests):
            text = UTTERANCES[i % len(UTTERANCES)]
            sent = c.publish(topics.request, {"id": f"rt{i}", "text": text}, response_topic=topic)
            reply = c.get(10, topic=topic)
            if reply.json().get("id") != f"rt{i}":
                raise RuntimeError(f"out-of-order reply {reply.payload[:100]!r}")
            if i >= args.warmup:
                samples.append((reply.at - sent) * 1000)
    return {"latency_ms": percentiles(samples), "requests": args.requests, "warmup": args.warmup}


class LoadClient:
    """One connection; sends on a schedule (open loop) or keeps ``inflight`` requests outstanding (closed loop)."""

    def __init__(self, url: str, topics: Topics, index: int) -> None:
        self.index = index
        self.topics = topics
        self.reply_topic = f"{topics.response}/load{index}"
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.replies: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()
        self.slot = threading.Semaphore(0)
        self.client = Client(url, f"bench-load{index}-{os.getpid()}", [self.reply_topic])
        self.client.client.on_message = self._on_message

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.perf_counter()
        body = json.loads(msg.payload)
        rid = body.get("id")
        with self.lock:
            self.replies[rid] = self.replies.get(rid, 0) + 1
            if "error" in body:
                self.errors[body["error"]["code"]] = self.errors.get(body["error"]["code"], 0) + 1
            elif rid in self.sent and self.replies[rid] == 1:
                self._record(self.sent[rid], (now - self.sent[rid]) * 1000)
        self.slot.release()

    def _record(self, sent: float, latency_ms: float) -> None:
        """One first answer (called under ``self.lock``)."""
        self.latencies.append(latency_ms)

    def send(self, n: int) -> None:
        rid = f"c{self.index}-{n}"
        text = UTTERANCES[(self.index * 7 + n) % len(UTTERANCES)]
        payload = json.dumps({"id": rid, "text": text})
        with self.lock:
            self.sent[rid] = time.perf_counter()
        self.client.client.publish(self.topics.request, payload, qos=1, properties=self._props())

    def _props(self) -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        return props

    def run_open(self, rate: float, duration: float, start: float) -> None:
        interval = 1.0 / rate
        n = 0
        phase = self.index * interval / 7.0
        end = start + duration
        while True:
            due = start + phase + n * interval
            if due >= end:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.send(n)
            n += 1

    def run_closed(self, inflight: int, duration: float) -> None:
        end = time.perf_counter() + duration
        n = 0
        for _ in range(inflight):
            self.send(n)
            n += 1
        while time.perf_counter() < end:
            if self.slot.acquire(timeout=1.0):
                self.send(n)
                n += 1

    def summary(self) -> dict[str, int]:
        with self.lock:
            answered = sum(1 for rid in self.sent if rid in self.replies)
            return {"sent": len(self.sent), "answered": answered, "lost": len(self.sent) - answered,
                    "duplicates": sum(c - 1 for c in self.replies.values() if c > 1),
                    "errors": sum(self.errors.values())}

    def close(self) -> None:
        self.client.close()


def drive(url: str, topics: Topics, args: argparse.Namespace, *, closed: bool) -> dict[str, Any]:
    clients = [LoadClient(url, topics, i) for i in range(args.clients)]
    try:
        start = time.perf_counter() + 0.2
        if closed:
            threads = [threading.Thread(target=c.run_closed, args=(args.inflight, args.duration)) for c in clients]
        else:
            threads = [threading.Thread(target=c.run_open, args=(args.rate / args.clients, args.duration, start))
                       for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sending_s = time.perf_counter() - start
        deadline = time.monotonic() + args.grace
        while time.monotonic() < deadline and any(c.summary()["lost"] for c in clients):
            time.sleep(0.05)
        totals = {k: sum(c.summary()[k] for c in clients) for k in ("sent", "answered", "lost", "duplicates", "errors")}
        errors: dict[str, int] = {}
        for c in clients:
            for code, n in c.errors.items():
                errors[code] = errors.get(code, 0) + n
        latencies = [x for c in clients for x in c.latencies]
        return {**totals, "errors_by_code": errors, "latency_ms": percentiles(latencies),
                "achieved_rps": round(totals["answered"] / sending_s, 1), "duration_s": args.duration,
                "clients": args.clients, **({"inflight": args.inflight} if closed else {"rate": args.rate})}
    finally:
        for c in clients:
            c.close()


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every service benchmark shares: the bundle, the broker, the service's settings, the output."""
    parser.add_argument("--bundle", required=True, help="edge bundle directory")
    parser.add_argument("--broker", default=None, help="use this broker (default: start Mosquitto on 127.0.0.1)")
    parser.add_argument("--threads", type=int, default=0, help="service intra-op threads (0: physical cores)")
    defaults = ServiceConfig.__dataclass_fields__  # the service's own defaults, one place
    parser.add_argument("--max-batch", type=int, default=defaults["max_batch"].default)
    parser.add_argument("--batch-window-ms", type=float, default=defaults["batch_window_ms"].default)
    parser.add_argument("--queue-size", type=int, default=defaults["queue_size"].default)
    parser.add_argument("--workers", type=int, default=defaults["workers"].default)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--no-check", action="store_true", help="report only; do not fail on missed targets")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["roundtrip", "load", "saturate"])
    add_service_arguments(parser)
    parser.add_argument("--requests", type=int, default=2000, help="roundtrip: timed requests")
    parser.add_argument("--warmup", type=int, default=200, help="roundtrip: untimed requests first")
    parser.add_argument("--rate", type=float, default=500.0, help="load: requests per second, all clients together")
    parser.add_argument("--clients", type=int, default=5, help="load/saturate: MQTT connections")
    parser.add_argument("--duration", type=float, default=60.0, help="load/saturate: seconds of sending")
    parser.add_argument("--inflight", type=int, default=16, help="saturate: outstanding requests per client")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to wait for the last replies")
    args = parser.parse_args(argv)

    thing = f"bench-{os.getpid()}"
    topics = Topics.for_thing(thing)
    with tempfile.TemporaryDirectory(prefix="service-bench-") as tmp:
        broker = None if args.broker else Mosquitto(Path(tmp) / "mosquitto").start()
        url = args.broker or broker.url  # type: ignore[union-attr]
        service = Service(args, url, thing, Path(tmp) / "service.log")
        try:
            with Client(url, f"bench-status-{os.getpid()}", [topics.status]) as watcher:
                online = wait_status(watcher, topics.status, "online")
                if args.mode == "roundtrip":
                    result = roundtrip(url, topics, args)
                else:
                    result = drive(url, topics, args, closed=args.mode == "saturate")
                code = service.stop()
                final = wait_status(watcher, topics.status, "offline", 30)
        except BaseException:
            service.stop()
            sys.stderr.write(Path(tmp, "service.log").read_text()[-3000:])
            raise
        finally:
            if broker is not None:
                broker.stop()
    result.update(mode=args.mode, service_exit=code, model=online.get("model"), backend=online.get("backend"),
                  service={"counters": final.get("counters"), "latency_ms": final.get("latency_ms"),
                           "rss_mb": final.get("rss_mb")},
                  settings={"max_batch": args.max_batch, "batch_window_ms": args.batch_window_ms,
                            "threads": args.threads or "physical cores", "queue_size": args.queue_size,
                            "workers": args.workers,
                            "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()})
    failures = []
    if args.mode == "roundtrip" and result["latency_ms"]["p50"] > TARGETS["roundtrip_p50_ms"]:
        failures.append(f"round-trip p50 {result['latency_ms']['p50']} ms > {TARGETS['roundtrip_p50_ms']} ms")
    if args.mode == "load":
        if result["lost"] > TARGETS["load_lost"] or result["duplicates"] or result["errors"]:
            failures.append(f"{result['lost']} lost, {result['duplicates']} duplicated, {result['errors']} errors")
        if result["latency_ms"].get("p99", float("inf")) >= TARGETS["load_p99_ms"]:
            failures.append(f"p99 {result['latency_ms'].get('p99')} ms >= {TARGETS['load_p99_ms']} ms")
    if code != 0:
        failures.append(f"the service exited with {code}")
    result["targets"] = {"passed": not failures, "failures": failures}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if (not failures or args.no_check) else 1


if __name__ == "__main__":
    sys.exit(main())
