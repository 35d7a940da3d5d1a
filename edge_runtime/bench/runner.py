"""Measurements behind ``python -m edge_runtime.bench``; one place for how each figure is taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BackendError
from .utterances import UTTERANCES

__all__ = ["BenchResult", "run_bench", "load_budgets", "check_budget", "default_budgets_path", "peak_rss_mb"]

_BUDGETS_NAME = "budgets.json"


@dataclass
class BenchResult:
    """The bench JSON of ARCHITECTURE.md (``latency_ms``, ``throughput``, ``cold_start_s``, ...)."""

    latency_ms: dict[str, float]
    throughput: dict[str, float]
    cold_start_s: float
    load_s: float
    peak_rss_mb: float
    model: dict[str, Any]
    settings: dict[str, Any]
    budget: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """Metric name -> value, with the names budgets use."""
        out = {f"latency_{k}_ms": v for k, v in self.latency_ms.items()}
        out.update({f"throughput_{k}": v for k, v in self.throughput.items()})
        out.update(cold_start_s=self.cold_start_s, load_s=self.load_s, peak_rss_mb=self.peak_rss_mb)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms, "throughput": self.throughput, "cold_start_s": self.cold_start_s,
            "load_s": self.load_s, "peak_rss_mb": self.peak_rss_mb, "model": self.model,
            "settings": self.settings, "budget": self.budget,
        }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB.

    Linux's ``VmHWM`` belongs to this process image; ``ru_maxrss`` would not do, since Linux carries it across
    ``execve`` (a bench started by a 1 GB parent would report 1 GB).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def default_budgets_path() -> Path:
    """``bench/budgets.json`` of the checkout, or the copy shipped inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / _BUDGETS_NAME, here.parents[1] / "bench" / _BUDGETS_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {_BUDGETS_NAME} next to {here} or in the checkout's bench/")


def load_budgets(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    data = json.loads(Path(path or default_budgets_path()).read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def check_budget(metrics: dict[str, float], profile: str, budgets: dict[str, Any]) -> dict[str, Any]:
    """Compare flat metrics with a profile; ``violations`` lists each limit not met."""
    if profile not in budgets:
        raise KeyError(f"unknown profile {profile!r}; known: {sorted(budgets)}")
    spec = budgets[profile]
    violations = []
    for key, limit in spec.get("max", {}).items():
        if key in metrics and metrics[key] > limit:
            violations.append({"metric": key, "value": round(metrics[key], 4), "limit": limit, "kind": "max"})
    for key, limit in spec.get("min", {}).items():
        if key in metrics and metrics[key] < limit:
            violations.append({"metric": key, "value": round(metrics[key], 4), "limit": limit, "kind": "min"})
    return {"profile": profile, "passed": not violations, "violations": violations}


_COLD_START = """
import sys, time
t0 = time.perf_counter()
from edge_runtime import IntentClassifier
clf = IntentClassifier.from_bundle(sys.argv[1], backend=sys.argv[2], threads=int(sys.argv[3]) or None)
clf.predict(sys.argv[4])
print("FIRST_PREDICTION", time.perf_counter() - t0, flush=True)
"""


def measure_cold_start(bundle: str, backend: str, threads: int | None, runs: int = 3) -> float:
    """Median wall time from spawning a fresh interpreter to its first prediction."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(  # nosec B603 # this interpreter running our own snippet, no shell
            [sys.executable, "-c", _COLD_START, str(bundle), backend, str(threads or 0), UTTERANCES[0]],
            capture_output=True, text=True, check=False,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0 or "FIRST_PREDICTION" not in proc.stdout:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BackendError(f"the cold-start process failed (exit {proc.returncode}): {last[-300:]}")
        times.append(elapsed)
    return float(np.median(times))


def _percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {
        "p50": round(float(np.percentile(ms, 50)), 4),
        "p95": round(float(np.percentile(ms, 95)), 4),
        "p99": round(float(np.percentile(ms, 99)), 4),
        "mean": round(float(ms.mean()), 4),
    }


def run_bench(bundle: str | os.PathLike[str], *, backend: str = "auto", threads: int | None = None,
              iterations: int = 500, warmup: int = 50, batches: int = 30, cold_runs: int = 3,
              utterances: Sequence[str] = UTTERANCES) -> BenchResult:
    """Measure one bundle in this process (and cold start in fresh ones)."""
    from ..bundle import Bundle
    from ..classifier import IntentClassifier

    bundle = str(bundle)
    Bundle.load(bundle, verify=False)  # a missing or malformed bundle is one clear error, before any process starts
    cold = measure_cold_start(bundle, backend, threads, cold_runs) if cold_runs else float("nan")
    t0 = time.perf_counter()
    clf = IntentClassifier.from_bundle(bundle, backend=backend, threads=threads)
    load_s = time.perf_counter() - t0
    with clf:
        n = len(utterances)
        for i in range(warmup):
            clf.predict(utterances[i % n])
        samples = []
        for i in range(iterations):
            text = utterances[i % n]
            t = time.perf_counter()
            clf.predict(text)
            samples.append(time.perf_counter() - t)
        throughput = {}
        for size in (8, 32):
            batch_list = [[utterances[(b * size + j) % n] for j in range(size)] for b in range(batches)]
            clf.predict_batch(batch_list[0])
            t = time.perf_counter()
            for batch in batch_list:
                clf.predict_batch(batch)
            throughput[f"batch{size}"] = round(size * batches / (time.perf_counter() - t), 2)
        model = {"name": clf.name, "version": clf.version, "backend": clf.backend.name,
                 "quantization": (clf.bundle.backend_entry(clf.backend.name) or {}).get("quantization"),
                 "architecture": clf.bundle.manifest.extra.get("architecture")}
        settings = {"threads": getattr(clf.backend, "threads", threads), "iterations": iterations,
                    "warmup": warmup, "batches": batches, "utterances": n,
                    "mean_words": round(float(np.mean([len(u.split()) for u in utterances])), 2),
                    "python": sys.version.split()[0], "machine": os.uname().machine}
    return BenchResult(
        latency_ms=_percentiles(samples), throughput=throughput, cold_start_s=round(cold, 4),
        load_s=round(load_s, 4), peak_rss_mb=round(peak_rss_mb(), 1), model=model, settings=settings,
    )
