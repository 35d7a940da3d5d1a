"""What the service's micro-batcher adds to a lone request, per number of workers, side by side in one process.

Batch-1 latency of ``IntentClassifier.predict`` called directly and through a
:class:`~edge_runtime.service.batcher.MicroBatcher` with 1 and with 2 workers (submit -> reply callback), one
request at a time, every contender interleaved round by round (this VM's speed drifts). The classifier is loaded
as the service loads it for two workers (``callers=2``), so the three differ only in the batcher.

    python bench/batcher_overhead.py --bundle .store/slm-intents/edge/1 [--rounds 20] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from edge_runtime import IntentClassifier
    from edge_runtime.bench import UTTERANCES
    from edge_runtime.service.batcher import MicroBatcher
    from edge_runtime.service.config import ServiceConfig

    defaults = ServiceConfig.__dataclass_fields__  # the service's own batching defaults
    clf = IntentClassifier.from_bundle(args.bundle, threads=args.threads, callers=2)
    batchers = {workers: MicroBatcher(clf.predict_batch, queue_size=64, max_batch=defaults["max_batch"].default,
                                      window_s=defaults["batch_window_ms"].default / 1000.0, workers=workers).start()
                for workers in (1, 2)}

    def through(batcher: MicroBatcher, text: str) -> None:
        answered = threading.Event()
        batcher.submit([text], lambda predictions, error: answered.set())
        answered.wait(10)

    contenders = {"direct": clf.predict, "1 worker": lambda t: through(batchers[1], t),
                  "2 workers": lambda t: through(batchers[2], t)}
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for call in contenders.values():
            for text in UTTERANCES:
                call(text)
        for _ in range(args.rounds):
            for name, call in contenders.items():
                for text in UTTERANCES * 3:
                    t0 = time.perf_counter()
                    call(text)
                    samples[name].append((time.perf_counter() - t0) * 1000.0)
    finally:
        for batcher in batchers.values():
            batcher.close(5)
        clf.close()

    result = {"bundle": args.bundle, "threads": args.threads, "contenders": {}}
    print(f"{'batch 1':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for name, values in samples.items():
        row = {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}
        result["contenders"][name] = row
        print(f"{name:>10} {row['p50']:>8.3f} {row['p90']:>8.3f} {row['p99']:>8.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
