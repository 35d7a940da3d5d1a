"""How long ONNX Runtime's intra-op workers should spin, side by side in one process.

Two measurements on one bundle, every setting interleaved round by round (this VM's speed drifts):
  latency     batch-1 ``IntentClassifier.predict`` p50 with one caller, per spin value
  throughput  texts/s of ``predict_batch`` at ``--batch`` from one caller and from two callers at once
              (the service's ``--workers 2``), per spin value

``--hog F`` runs a process that keeps F of one core busy meanwhile, standing in for a broker and its clients.
The defaults of ``edge_runtime.backends.onnxruntime`` (``SPIN_US`` for one caller, ``SHARED_SPIN_US`` for
several) were chosen with this script.

    python bench/spin_compare.py --bundle .store/slm-intents/edge/1 [--spins 5,20,50,200] [--hog 0.75] [--json F]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _hog(duty: float, stop: "multiprocessing.synchronize.Event") -> None:  # type: ignore[name-defined]
    period = 0.01
    while not stop.is_set():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < duty * period:
            pass
        time.sleep((1.0 - duty) * period)


def _classifier(bundle, spin_us: int, threads: int):  # type: ignore[no-untyped-def]
    from edge_runtime import IntentClassifier
    from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_runtime.tokenizer import IntentTokenizer

    entry = bundle.backend_entry("onnxruntime")
    backend = OnnxRuntimeBackend(bundle.path_of(entry["file"]), threads=threads, spin_us=spin_us)
    tokenizer = IntentTokenizer(bundle.path_of(bundle.manifest.tokenizer), bundle.manifest.max_length)
    return IntentClassifier(bundle, backend, tokenizer)


def _texts_per_s(clf, batch: list[str], callers: int, seconds: float) -> float:  # type: ignore[no-untyped-def]
    counts = [0] * callers
    end = time.perf_counter() + seconds

    def call(i: int) -> None:
        while time.perf_counter() < end:
            clf.predict_batch(batch)
            counts[i] += len(batch)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--spins", default="5,20,50,200", help="spin durations in microseconds, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=6, help="throughput: texts per call (the service's batches "
                                                             "at 500 requests/s hold about 6)")
    parser.add_argument("--seconds", type=float, default=2.0, help="throughput: seconds per setting and round")
    parser.add_argument("--hog", type=float, default=0.0, help="keep this fraction of one core busy meanwhile")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from edge_runtime.bench import UTTERANCES
    from edge_runtime.bundle import Bundle

    bundle = Bundle.load(args.bundle)
    spins = [int(s) for s in args.spins.split(",")]
    clfs = {spin: _classifier(bundle, spin, args.threads) for spin in spins}
    batch = list(UTTERANCES[: args.batch])
    stop = multiprocessing.Event()
    hog = None
    if args.hog > 0:
        hog = multiprocessing.Process(target=_hog, args=(args.hog, stop), daemon=True)
        hog.start()
    latency: dict[int, list[float]] = {spin: [] for spin in spins}
    rates: dict[tuple[int, int], list[float]] = {(spin, n): [] for spin in spins for n in (1, 2)}
    try:
        for clf in clfs.values():
            for text in UTTERANCES:
                clf.predict(text)
        for _ in range(args.rounds):
            for spin, clf in clfs.items():
                for text in UTTERANCES:
                    t0 = time.perf_counter()
                    clf.predict(text)
                    latency[spin].append((time.perf_counter() - t0) * 1000.0)
        for _ in range(max(1, args.rounds // 5)):
            for spin, clf in clfs.items():
                for callers in (1, 2):
                    rates[(spin, callers)].append(_texts_per_s(clf, batch, callers, args.seconds))
    finally:
        stop.set()
        if hog is not None:
            hog.join(5)
        for clf in clfs.values():
            clf.close()

    result = {"bundle": args.bundle, "threads": args.threads, "batch": args.batch, "hog": args.hog, "spins": {}}
    print(f"threads={args.threads}  batch={args.batch}  hog={args.hog}")
    print(f"{'spin us':>8} {'b1 p50 ms':>10} {'b1 p90 ms':>10} {'1 caller /s':>12} {'2 callers /s':>13}")
    for spin in spins:
        row = {"latency_p50_ms": round(float(np.percentile(latency[spin], 50)), 3),
               "latency_p90_ms": round(float(np.percentile(latency[spin], 90)), 3),
               "one_caller_per_s": round(float(np.median(rates[(spin, 1)])), 1),
               "two_callers_per_s": round(float(np.median(rates[(spin, 2)])), 1)}
        result["spins"][str(spin)] = row
        print(f"{spin:>8} {row['latency_p50_ms']:>10.3f} {row['latency_p90_ms']:>10.3f} "
              f"{row['one_caller_per_s']:>12.0f} {row['two_callers_per_s']:>13.0f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
