"""The classifier's run size (``IntentClassifier(max_batch=N)``): peak RAM and throughput of one bundle, per N.

    python bench/max_batch.py --bundle DIR [--sizes 4 8 16 32 64] [--rounds 3] [--json F]

``predict_batch`` runs a list of texts in chunks of ``max_batch``. ONNX Runtime's arena grows to the largest run's
activations and keeps them, so the chunk size bounds the process's peak RSS; a run pads its texts to the longest one,
so a smaller chunk pads less. Each size runs in a fresh process (peak RSS is per process) doing what
``python -m edge_runtime.bench`` does: ``--calls`` single predictions, then 30 lists of 8, 32 and 64 texts
(:data:`edge_runtime.bench.UTTERANCES`); it reports the process's peak RSS (``VmHWM``) and texts per second for each
list length. The sizes take turns round by round, so a drift of the machine touches all alike; the table gives the
median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from bench.seeds import cpu_model  # noqa: E402

LISTS = (8, 32, 64)

_CHILD = """
import json, sys, time
from edge_runtime import IntentClassifier
from edge_runtime.bench.runner import peak_rss_mb
from edge_runtime.bench.utterances import UTTERANCES as U
bundle, size, threads, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lengths = json.loads(sys.argv[5])
n = len(U)
with IntentClassifier.from_bundle(bundle, backend="onnxruntime", threads=threads, max_batch=size) as clf:
    for i in range(calls):
        clf.predict(U[i % n])
    out = {}
    for length in lengths:
        lists = [[U[(b * length + j) % n] for j in range(length)] for b in range(30)]
        clf.predict_batch(lists[0])
        t = time.perf_counter()
        for texts in lists:
            clf.predict_batch(texts)
        out[length] = length * len(lists) / (time.perf_counter() - t)
print(json.dumps({"peak_rss_mb": peak_rss_mb(), "per_s": out}))
"""


def measure(bundle: Path, size: int, threads: int, calls: int) -> dict:
    argv = [sys.executable, "-c", _CHILD, str(bundle), str(size), str(threads), str(calls), json.dumps(LISTS)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)  # nosec B603
    if proc.returncode != 0:
        raise SystemExit(f"max_batch {size}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=500, help="single predictions before the lists (as the bench)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    runs: dict[int, list[dict]] = {s: [] for s in args.sizes}
    for r in range(args.rounds):
        for size in args.sizes:
            runs[size].append(measure(args.bundle, size, args.threads, args.calls))
            print(f"round {r + 1} max_batch {size}: {runs[size][-1]}", flush=True)
    rows = []
    for size, results in runs.items():
        rows.append({"max_batch": size,
                     "peak_rss_mb": round(statistics.median(x["peak_rss_mb"] for x in results), 1),
                     **{f"per_s_list{n}": round(statistics.median(x["per_s"][str(n)] for x in results))
                        for n in LISTS}})
    print(f"\n{args.bundle}, {args.threads} threads, {args.rounds} rounds (median), CPU {cpu_model()}")
    print("| max_batch | peak RSS MB | " + " | ".join(f"lists of {n} /s" for n in LISTS) + " |")
    print("|---|---|" + "---|" * len(LISTS))
    for row in rows:
        print(f"| {row['max_batch']} | {row['peak_rss_mb']} | "
              + " | ".join(f"{row[f'per_s_list{n}']:,}" for n in LISTS) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bundle": str(args.bundle), "cpu": cpu_model(), "rows": rows,
                                         "runs": {str(k): v for k, v in runs.items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
