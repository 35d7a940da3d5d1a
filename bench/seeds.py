"""The recipe across training seeds: the whole pipeline once per seed, one table of the results.

    python bench/seeds.py --data ../shared/data/snips --seeds 7 13 21 [--params F] [--set train.ema_decay=0.998]
        [--store bench/results/seeds/NAME] [--json bench/results/seeds/NAME.json]

Each seed is a full local run (prepare, validate, train, compile, evaluate, gate, register, package) in one store,
so prepare and validate run once and later seeds reuse them; a seed whose inputs are unchanged is served from the
step cache. The table gives, per seed, the epoch chosen on validation, validation accuracy and macro-F1 of that
epoch, and the test figures of FP32 and INT8 (the device path), their agreement and the training time; then the
mean, min and max over the seeds. The epoch and recipe are chosen on validation; test is only reported. With a
distilled student (``distill.layers`` > 0) the row is the student's (the model that ships), with its teacher's FP32
test accuracy in the last column.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_seed(params, data: Path, store, seed: int) -> dict[str, object]:
    from cloud.errors import CloudError
    from cloud.pipeline import LocalPipeline

    p = params.override({"train.seed": seed})
    pipeline = LocalPipeline(p, data, store, progress=False, out=lambda line: print(f"  seed {seed} {line}", flush=True))
    try:
        summary = pipeline.run()
    except CloudError as exc:  # a seed below the gate is a result too: its metrics are still in the summary
        summary = pipeline.fail(exc)
    steps = {s["name"]: s for s in summary["steps"]}
    # with a distilled student, the epoch and the test figures are the student's; the teacher's FP32 is beside them
    train = (steps.get("distill") or {}).get("outputs") or steps["train"]["outputs"]
    best = next((h for h in train.get("history", []) if h["epoch"] == train.get("best_epoch")), {})
    m = summary["metrics"] or {}
    return {"seed": seed, "status": summary["status"], "error": summary.get("error"),
            "best_epoch": train.get("best_epoch"), "epochs_run": len(train.get("history", [])),
            "val_accuracy": best.get("val_accuracy"), "val_macro_f1": best.get("val_macro_f1"),
            "fp32": m.get("fp32"), "int8": m.get("int8"), "agreement": m.get("agreement"),
            "teacher_fp32": m.get("teacher_fp32"),
            "train_seconds": round(float(train.get("seconds", 0.0)), 1),
            "train_status": steps["train"]["status"], "bundle": summary.get("bundle")}


def spread(rows: list[dict], pick) -> dict[str, float]:
    values = [pick(r) for r in rows if pick(r) is not None]
    if not values:
        return {}
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="any input cloud.pipeline accepts")
    parser.add_argument("--params", default=None, help="params file (default: pipelines/params.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="parameter override")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 13, 21])
    parser.add_argument("--store", type=Path, default=REPO / "bench" / "results" / "seeds" / "default")
    parser.add_argument("--json", type=Path, default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)

    from cloud.params import load_params, parse_overrides
    from cloud.store import Store

    params = load_params(args.params).override(parse_overrides(args.set)) if args.set else load_params(args.params)
    store = Store.at(str(args.store))
    print(f"{len(args.seeds)} seeds on {args.data}, store {args.store}, overrides {args.set or 'none'}; "
          f"CPU {cpu_model()}", flush=True)
    rows = [run_seed(params, args.data, store, seed) for seed in args.seeds]
    head = f"{'seed':>5} {'epoch':>5} {'val acc':>8} {'val F1':>7} {'FP32 acc':>9} {'INT8 acc':>9} {'INT8 F1':>8} " \
           f"{'agree':>7} {'train s':>8} {'teacher':>8}"
    print("\n" + head)

    def pct(x):
        return f"{100 * x:.2f}" if isinstance(x, (int, float)) else "-"

    for r in rows:
        fp32, int8 = r["fp32"] or {}, r["int8"] or {}
        print(f"{r['seed']:>5} {r['best_epoch']!s:>5} {pct(r['val_accuracy']):>8} {pct(r['val_macro_f1']):>7} "
              f"{pct(fp32.get('accuracy')):>9} {pct(int8.get('accuracy')):>9} {pct(int8.get('macro_f1')):>8} "
              f"{pct(r['agreement']):>7} {r['train_seconds']:>8} {pct((r['teacher_fp32'] or {}).get('accuracy')):>8}")
    summary = {name: spread(rows, pick) for name, pick in {
        "int8_accuracy": lambda r: (r["int8"] or {}).get("accuracy"),
        "int8_macro_f1": lambda r: (r["int8"] or {}).get("macro_f1"),
        "fp32_accuracy": lambda r: (r["fp32"] or {}).get("accuracy"),
        "agreement": lambda r: r["agreement"],
        "val_accuracy": lambda r: r["val_accuracy"]}.items()}
    for name, s in summary.items():
        if s:
            print(f"{name}: mean {pct(s['mean'])}, min {pct(s['min'])}, max {pct(s['max'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": str(args.data), "overrides": args.set, "cpu": cpu_model(),
                                         "params": params.to_dict(), "seeds": rows, "summary": summary},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
