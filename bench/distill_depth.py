"""Students of 1, 2, 3 and 4 layers distilled from one teacher: accuracy against batch-1 latency, in one table and plot.

    python bench/distill_depth.py --run bench/results/snips-ema/slm-intents --depths 1 2 3 4 \
        --out bench/results/depth/snips [--teacher CKPT] [--teachers CKPT ...] [--params F] [--set K=V]
    python bench/distill_depth.py ... --time            # then: the edge bench of every bundle, in turns
    python bench/distill_depth.py ... --report docs/depth.png

``--run`` is a store's project folder after a pipeline run (``processed/``, ``models/<run>/checkpoint`` = the
teacher, ``edge/<version>`` = the teacher's bundle when the run shipped the teacher). Each depth is distilled with
the params' ``distill`` section (``cloud.steps.distill_step``), compiled (static INT8, out-of-scope detector) and
evaluated on the test split like the pipeline does; a depth whose ``metrics.json`` exists is not redone. ``--time``
runs ``python -m edge_runtime.bench`` on the teacher's bundle and every student's, round by round, so a drift of the
machine touches all alike; ``--report`` prints the Markdown table and writes the PNG (accuracy against p50).
The epoch and every setting are chosen on validation; test is only reported.
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


def _teacher(run: Path) -> Path:
    runs = sorted(p for p in (run / "models").glob("*/checkpoint") if (p / "config.json").is_file())
    if not runs:
        raise SystemExit(f"{run}/models/*/checkpoint: no trained model")
    return runs[-1]


def distil(run: Path, out: Path, params, depth: int, teachers: list[Path]) -> dict:
    from cloud.steps import compile_step, distill_step, evaluate_step

    d = out / f"L{depth}"
    if (d / "evaluation" / "metrics.json").is_file():
        return json.loads((d / "result.json").read_text())
    p = params.override({"distill.layers": depth})
    processed = run / "processed"
    trained = distill_step(teachers if len(teachers) > 1 else teachers[0], processed, d / "student", p)
    compiled = compile_step(trained.model_dir, processed, d / "bundle", p, version=f"student-L{depth}",
                            work_dir=d / "onnx")
    metrics = evaluate_step(trained.model_dir, compiled.bundle_dir, processed, d / "evaluation", p,
                            teacher=teachers[0]).metrics
    result = {"depth": depth, "bundle": str(compiled.bundle_dir), "train_seconds": round(trained.seconds, 1),
              "best_epoch": trained.best_epoch, "val_macro_f1": trained.best_val_macro_f1,
              "fp32": _scores(metrics["fp32"]), "int8": _scores(metrics["int8"]),
              "teacher_fp32": _scores(metrics["teacher_fp32"]), "agreement": metrics["agreement"],
              "batch_consistency": metrics["batch_consistency"]["rate"],
              "out_of_scope": metrics.get("out_of_scope"),
              "bundle_mb": round(_size(compiled.bundle_dir) / 2**20, 2)}
    (d / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _scores(m: dict) -> dict:
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def _size(bundle: Path) -> int:
    return sum(p.stat().st_size for p in Path(bundle).rglob("*") if p.is_file())


def time_bundles(bundles: dict[str, str], rounds: int, threads: int) -> dict[str, dict]:
    """``python -m edge_runtime.bench`` on each bundle, round by round; the median of each figure over the rounds."""
    runs: dict[str, list[dict]] = {name: [] for name in bundles}
    for r in range(rounds):
        for name, bundle in bundles.items():
            out = Path(bundle).parent / f"bench-{name}-{r}.json"
            subprocess.run([sys.executable, "-m", "edge_runtime.bench", "--bundle", bundle, "--json", str(out),
                            "--threads", str(threads)], check=False, capture_output=True, text=True)
            if out.is_file():
                runs[name].append(json.loads(out.read_text()))
            print(f"round {r + 1}/{rounds} {name}: " + (
                f"p50 {runs[name][-1]['latency_ms']['p50']:.3f} ms" if out.is_file() else "FAILED"), flush=True)
    timed = {}
    for name, results in runs.items():
        if results:
            timed[name] = {
                "p50_ms": statistics.median(x["latency_ms"]["p50"] for x in results),
                "p99_ms": statistics.median(x["latency_ms"]["p99"] for x in results),
                "batch32_per_s": statistics.median(x["throughput"]["batch32"] for x in results),
                "cold_start_s": statistics.median(x["cold_start_s"] for x in results),
                "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in results),
                "p50_runs": [x["latency_ms"]["p50"] for x in results]}
    return timed


def report(table: dict, png: Path | None) -> str:
    def pct(x):
        return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"

    rows = table["rows"]
    timed = table.get("timing", {})
    lines = ["| model | layers | SNIPS-style test INT8 acc / macro-F1 | FP32 acc | agreement | p50 ms | batch 32 /s | "
             "cold start s | peak RSS MB | bundle MB | train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    teacher = rows[0]["teacher_fp32"] if rows else None
    t = timed.get("teacher", {})
    if teacher:
        int8 = table.get("teacher_int8") or {}
        lines.append(f"| teacher | {table.get('teacher_layers', 6)} | {pct(int8.get('accuracy'))} / "
                     f"{pct(int8.get('macro_f1'))} | {pct(teacher['accuracy'])} | - | {t.get('p50_ms', '-')} | "
                     f"{t.get('batch32_per_s', '-')} | {t.get('cold_start_s', '-')} | {t.get('peak_rss_mb', '-')} | "
                     f"{table.get('teacher_bundle_mb', '-')} | - |")
    for r in rows:
        s = timed.get(f"L{r['depth']}", {})
        lines.append(f"| student | {r['depth']} | {pct(r['int8']['accuracy'])} / {pct(r['int8']['macro_f1'])} | "
                     f"{pct(r['fp32']['accuracy'])} | {pct(r['agreement'])} | {s.get('p50_ms', '-')} | "
                     f"{s.get('batch32_per_s', '-')} | {s.get('cold_start_s', '-')} | {s.get('peak_rss_mb', '-')} | "
                     f"{r['bundle_mb']} | {r['train_seconds']} |")
    if png and timed:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [timed[f"L{r['depth']}"]["p50_ms"] for r in rows if f"L{r['depth']}" in timed]
        ys = [100 * r["int8"]["accuracy"] for r in rows if f"L{r['depth']}" in timed]
        ax.plot(xs, ys, "o-", label="students (INT8)")
        for r in rows:
            if f"L{r['depth']}" in timed:
                ax.annotate(f"{r['depth']} layers", (timed[f"L{r['depth']}"]["p50_ms"], 100 * r["int8"]["accuracy"]),
                            textcoords="offset points", xytext=(5, -10), fontsize=8)
        if "teacher" in timed and table.get("teacher_int8"):
            ax.plot([timed["teacher"]["p50_ms"]], [100 * table["teacher_int8"]["accuracy"]], "s", color="C3",
                    label="teacher, 6 layers (INT8)")
        ax.set_xlabel("batch-1 p50 latency, ms (python -m edge_runtime.bench)")
        ax.set_ylabel("test accuracy, %")
        ax.set_title(f"{table.get('data', '')} - {table.get('cpu', '')}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=110)
        plt.close(fig)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="<store>/slm-intents of a pipeline run (the teacher)")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="the teacher checkpoint (default: the newest models/*/checkpoint of --run)")
    parser.add_argument("--teachers", type=Path, nargs="*", default=[],
                        help="more teacher checkpoints (other seeds): the students learn the teachers' mean logits")
    parser.add_argument("--teacher-bundle", type=Path, default=None,
                        help="the teacher's INT8 bundle, timed as the reference (default: the newest edge/<n> of --run)")
    parser.add_argument("--params", default=None, help="params file (default: pipelines/params.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="parameter override")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--time", action="store_true", help="run the edge bench on every bundle, in turns")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", type=Path, default=None, help="write the plot here (PNG)")
    parser.add_argument("--teacher-int8", type=float, default=None,
                        help="the teacher's INT8 test accuracy, when its bundle's manifest has none (a bundle made by "
                             "python -m cloud.compile): read it off the pipeline run's metrics.json")
    args = parser.parse_args(argv)

    from cloud.params import load_params, parse_overrides

    params = load_params(args.params)
    if args.set:
        params = params.override(parse_overrides(args.set))
    teachers = [args.teacher or _teacher(args.run)] + list(args.teachers)
    args.out.mkdir(parents=True, exist_ok=True)
    table_file = args.out / "table.json"
    table = json.loads(table_file.read_text()) if table_file.is_file() else {}
    print(f"teachers {[str(t) for t in teachers]}; depths {args.depths}; CPU {cpu_model()}", flush=True)
    rows = []
    for depth in args.depths:
        r = distil(args.run, args.out, params, depth, teachers)
        print(f"L{depth}: INT8 {r['int8']['accuracy']:.2%} / F1 {r['int8']['macro_f1']:.2%}, FP32 "
              f"{r['fp32']['accuracy']:.2%}, agreement {r['agreement']:.2%}, teacher {r['teacher_fp32']['accuracy']:.2%}, "
              f"train {r['train_seconds']} s", flush=True)
        rows.append(r)
    teacher_bundles = ([args.teacher_bundle / "manifest.json"] if args.teacher_bundle else
                       sorted((args.run / "edge").glob("[0-9]*/manifest.json"), key=lambda p: int(p.parent.name)))
    table.update({"data": str(args.run), "cpu": cpu_model(), "teachers": [str(t) for t in teachers],
                  "overrides": args.set, "rows": rows})
    if teacher_bundles:
        tb = teacher_bundles[-1].parent
        table["teacher_bundle"], table["teacher_bundle_mb"] = str(tb), round(_size(tb) / 2**20, 2)
        m = json.loads((tb / "manifest.json").read_text()).get("metrics", {})
        table["teacher_int8"] = m.get("int8") or table.get("teacher_int8")
    if args.teacher_int8 is not None:
        table["teacher_int8"] = {"accuracy": args.teacher_int8}
    if args.time:
        bundles = ({"teacher": table["teacher_bundle"]} if "teacher_bundle" in table else {}) | {
            f"L{r['depth']}": r["bundle"] for r in rows}
        table["timing"] = time_bundles(bundles, args.rounds, args.threads)
        table["timing_cpu"] = cpu_model()
    table_file.write_text(json.dumps(table, indent=2) + "\n")
    print(report(table, args.report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
