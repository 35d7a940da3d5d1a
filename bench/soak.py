"""Soak benchmark: sustained load through a real broker, watching the service's memory and latency over time.

Starts a Mosquitto on a free 127.0.0.1 port (or uses ``--broker``), runs ``python -m edge_runtime serve`` as its
own process, sends ``--rate`` requests/s from ``--clients`` MQTT connections for ``--duration`` seconds, samples
the service's RSS every second, and checks, after ``--warmup`` seconds:

- RSS growth (highest RSS after warm-up minus RSS at the end of warm-up) <= ``--rss-limit-mb`` (5 MB),
- p99 latency of the first ``--window`` seconds after warm-up vs the last ``--window`` seconds: within
  ``--p99-tolerance`` (20 %), relative to the first,
- zero lost (every request answered exactly once, no error replies).

    # by hand: at least 10 minutes
    python bench/soak.py --bundle /tmp/x/edge --duration 600 --rate 100 --json bench/results/soak.json
    # CI: a short run (tests/reliability/test_soak.py)
    python bench/soak.py --bundle B --duration 12 --warmup 3 --window 4 --rate 50

Exit status 1 when a target is missed (``--no-check`` reports only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service_load import LoadClient, Service, add_service_arguments, percentiles, wait_status  # noqa: E402

from edge_runtime.service.protocol import Topics  # noqa: E402
from tests.edge_runtime.service.broker import Client, Mosquitto  # noqa: E402


class SoakClient(LoadClient):
    """A :class:`LoadClient` that keeps when each reply arrived, for per-window percentiles."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.samples: list[tuple[float, float]] = []
        super().__init__(*args, **kwargs)

    def _record(self, sent: float, latency_ms: float) -> None:
        super()._record(sent, latency_ms)
        self.samples.append((sent, latency_ms))


class RssSampler:
    """Samples a process' RSS (MB) every ``interval`` seconds on a thread."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), self.proc.memory_info().rss / 2**20))
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def analyse(samples: list[tuple[float, float]], rss: list[tuple[float, float]], start: float, args: argparse.Namespace
            ) -> dict[str, Any]:
    """Windows, RSS growth and the target checks from the raw samples (times are perf_counter seconds)."""
    warm_end = start + args.warmup
    end = start + args.duration
    first = [lat for t, lat in samples if warm_end <= t < warm_end + args.window]
    last = [lat for t, lat in samples if end - args.window <= t < end]
    per_minute = []
    t = start
    while t < end:
        chunk = [lat for s, lat in samples if t <= s < min(t + 60, end)]
        if chunk:
            per_minute.append({"from_s": round(t - start), "n": len(chunk), "p50": percentiles(chunk)["p50"],
                               "p99": percentiles(chunk)["p99"]})
        t += 60
    at_warm = [m for s, m in rss if warm_end - 2 <= s <= warm_end + 1] or [m for s, m in rss if s <= warm_end][-1:]
    after = [m for s, m in rss if s > warm_end]
    rss_warm = sum(at_warm) / len(at_warm) if at_warm else float("nan")
    growth = (max(after) - rss_warm) if after and at_warm else float("nan")
    p_first = percentiles(first).get("p99", float("nan"))
    p_last = percentiles(last).get("p99", float("nan"))
    change = (p_last - p_first) / p_first if first and last and p_first > 0 else float("nan")
    return {
        "rss_mb": {"start": round(rss[0][1], 1) if rss else None, "after_warmup": round(rss_warm, 1),
                   "max_after_warmup": round(max(after), 1) if after else None,
                   "end": round(rss[-1][1], 1) if rss else None, "growth_after_warmup": round(growth, 2),
                   "samples": len(rss)},
        "p99_ms": {"first_window": p_first, "last_window": p_last, "change": round(change, 3),
                   "window_s": args.window},
        "per_minute": per_minute,
        # RSS every 10 s (MB), to tell a plateau (allocator, caches filling) from a steady leak
        "rss_series_mb": [[round(s - start), round(m, 1)] for i, (s, m) in enumerate(rss) if i % 10 == 0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_service_arguments(parser)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of sustained load (default 600)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before memory and latency are judged")
    parser.add_argument("--window", type=float, default=60.0, help="seconds in the first and last p99 windows")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second, all clients together")
    parser.add_argument("--clients", type=int, default=4, help="MQTT connections")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds to wait for the last replies")
    parser.add_argument("--rss-limit-mb", type=float, default=5.0, help="most RSS growth after warm-up")
    parser.add_argument("--p99-tolerance", type=float, default=0.20, help="largest relative p99 change, last vs first")
    args = parser.parse_args(argv)
    if args.warmup + 2 * args.window > args.duration:
        parser.error("--duration must cover --warmup plus two --window (the first and last windows must not overlap)")

    thing = f"soak-{os.getpid()}"
    topics = Topics.for_thing(thing)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        broker = None if args.broker else Mosquitto(Path(tmp) / "mosquitto").start()
        url = args.broker or broker.url  # type: ignore[union-attr]
        service = Service(args, url, thing, Path(tmp) / "service.log")
        clients: list[SoakClient] = []
        try:
            with Client(url, f"soak-status-{os.getpid()}", [topics.status]) as watcher:
                online = wait_status(watcher, topics.status, "online")
                clients = [SoakClient(url, topics, i) for i in range(args.clients)]
                with RssSampler(service.proc.pid) as sampler:
                    start = time.perf_counter() + 0.2
                    threads = [threading.Thread(target=c.run_open, args=(args.rate / args.clients, args.duration,
                                                                         start)) for c in clients]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    deadline = time.monotonic() + args.grace
                    while time.monotonic() < deadline and any(c.summary()["lost"] for c in clients):
                        time.sleep(0.05)
                totals = {k: sum(c.summary()[k] for c in clients)
                          for k in ("sent", "answered", "lost", "duplicates", "errors")}
                samples = sorted(s for c in clients for s in c.samples)
                code = service.stop()
                final = wait_status(watcher, topics.status, "offline", 30)
        except BaseException:
            service.stop()
            sys.stderr.write(Path(tmp, "service.log").read_text()[-3000:])
            raise
        finally:
            for c in clients:
                c.close()
            if broker is not None:
                broker.stop()
    result: dict[str, Any] = {
        "mode": "soak", **totals, "latency_ms": percentiles([lat for _, lat in samples]),
        **analyse(samples, sampler.samples, start, args), "service_exit": code, "model": online.get("model"),
        "backend": online.get("backend"), "service": {"counters": final.get("counters"), "rss_mb": final.get("rss_mb")},
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "rate": args.rate, "clients": args.clients,
                     "max_batch": args.max_batch, "threads": args.threads or "physical cores",
                     "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    failures = []
    if totals["lost"] or totals["duplicates"] or totals["errors"]:
        failures.append(f"{totals['lost']} lost, {totals['duplicates']} duplicated, {totals['errors']} errors")
    growth = result["rss_mb"]["growth_after_warmup"]
    if not growth <= args.rss_limit_mb:  # also catches NaN
        failures.append(f"RSS grew {growth} MB after warm-up (limit {args.rss_limit_mb} MB)")
    change = result["p99_ms"]["change"]
    if not abs(change) <= args.p99_tolerance:
        failures.append(f"p99 changed {change:+.0%} from the first to the last window (limit {args.p99_tolerance:.0%})")
    if code != 0:
        failures.append(f"the service exited with {code}")
    result["targets"] = {"passed": not failures, "failures": failures, "rss_limit_mb": args.rss_limit_mb,
                         "p99_tolerance": args.p99_tolerance}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if (not failures or args.no_check) else 1


if __name__ == "__main__":
    sys.exit(main())
