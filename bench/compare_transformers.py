"""Side-by-side: the edge runtime (INT8 ONNX Runtime) vs what a user would pick instead, in one run.

Contenders, same model (packaged MiniLM-L6 + the same seeded head), same utterances, same thread count:
  - transformers ``pipeline("text-classification")`` in PyTorch (FP32),
  - ONNX Runtime on the FP32 export with the same tokenizer path,
  - ``edge_runtime.IntentClassifier`` on the static-INT8 bundle.

All three are loaded at once and timed in turns, round by round (each round: every utterance through each
contender), so a drift of the machine's speed during the run touches all of them alike.

    python bench/compare_transformers.py --threads 2 --json bench/results/compare.json
    python bench/compare_transformers.py --teacher RUN/checkpoint --teacher-bundle edge/1 \
        --student RUN/student --student-bundle edge/2      # trained models, and the distilled student too
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.seeds import cpu_model  # noqa: E402


def latency_ms(fn, texts, iterations, warmup=30):
    """p50/p95/p99 in ms of ``fn(text)`` cycling over ``texts`` (shared by the bench scripts)."""
    for i in range(warmup):
        fn(texts[i % len(texts)])
    samples = []
    for i in range(iterations):
        t = time.perf_counter()
        fn(texts[i % len(texts)])
        samples.append(time.perf_counter() - t)
    ms = np.asarray(samples) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "p99": float(np.percentile(ms, 99))}


def _throughput(fn_batch, texts, size=32, batches=10):
    batch = [texts[i % len(texts)] for i in range(size)]
    fn_batch(batch)
    t = time.perf_counter()
    for _ in range(batches):
        fn_batch(batch)
    return size * batches / (time.perf_counter() - t)


def interleaved(contenders, texts, rounds, batch_rounds=3):
    """``{name: {"latency_ms": {p50, p95, p99}, "batch32_per_s"}}`` for ``{name: (predict_one, predict_batch)}``,
    timed in turns: each round sends every text through each contender (batch 32: the median of the rounds)."""
    samples = {name: [] for name in contenders}
    for one, _ in contenders.values():
        for text in texts:
            one(text)
    for _ in range(rounds):
        for name, (one, _) in contenders.items():
            for text in texts:
                t = time.perf_counter()
                one(text)
                samples[name].append(time.perf_counter() - t)
    rates = {name: [] for name in contenders}
    for _ in range(batch_rounds):
        for name, (_, many) in contenders.items():
            rates[name].append(_throughput(many, texts, batches=5))
    out = {}
    for name in contenders:
        ms = np.asarray(samples[name]) * 1e3
        out[name] = {"latency_ms": {q: float(np.percentile(ms, int(q[1:]))) for q in ("p50", "p95", "p99")},
                     "batch32_per_s": float(np.median(rates[name]))}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="timed passes over the utterances per contender")
    parser.add_argument("--json", default=None)
    parser.add_argument("--teacher", type=Path, default=None,
                        help="a trained six-layer checkpoint (models/<run>/checkpoint) instead of the packaged "
                             "MiniLM-L6 with an untrained head; with --teacher-bundle, its INT8 bundle")
    parser.add_argument("--teacher-bundle", type=Path, default=None)
    parser.add_argument("--student", type=Path, default=None,
                        help="a distilled student checkpoint (models/<run>/student): also timed in the transformers "
                             "pipeline, so the engine's gain and the model's show apart; with --student-bundle")
    parser.add_argument("--student-bundle", type=Path, default=None)
    args = parser.parse_args(argv)
    if bool(args.teacher) != bool(args.teacher_bundle) or bool(args.student) != bool(args.student_bundle):
        parser.error("--teacher needs --teacher-bundle and --student needs --student-bundle")

    import torch
    from transformers import AutoTokenizer, pipeline

    from cloud.compile import build_base_bundle, onnx_logits
    from cloud.params import load_params
    from edge_runtime import IntentClassifier
    from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_runtime.bench import UTTERANCES
    from edge_runtime.tokenizer import IntentTokenizer

    torch.set_num_threads(args.threads)
    labels = load_params().labels
    texts = list(UTTERANCES)
    def transformers_pipeline(checkpoint: Path):
        from cloud.modeling import load_classifier

        tok = AutoTokenizer.from_pretrained(checkpoint)
        return pipeline("text-classification", model=load_classifier(checkpoint), tokenizer=tok, device="cpu",
                        top_k=None)

    with tempfile.TemporaryDirectory() as tmp:
        if args.teacher:
            ckpt, bundle_dir = args.teacher, args.teacher_bundle
            labels = list(json.loads((bundle_dir / "manifest.json").read_text())["labels"])
        else:
            ckpt = Path(tmp) / "ckpt"
            bundle_dir = build_base_bundle(Path(tmp) / "bundle", labels, checkpoint_dir=ckpt).bundle_dir
        pipe = transformers_pipeline(ckpt)

        fp32_path = Path(tmp) / "fp32.onnx"
        from cloud.compile import export_onnx
        from cloud.modeling import load_classifier
        export_onnx(load_classifier(ckpt, eager=True), fp32_path)
        backend = OnnxRuntimeBackend(fp32_path, threads=args.threads)
        itok = IntentTokenizer(ckpt / "tokenizer.json", 40)
        run = lambda b: backend.run(itok.encode(b).feeds(backend.input_names))  # noqa: E731

        contenders = {}
        with contextlib.ExitStack() as stack, torch.inference_mode():
            clf = stack.enter_context(IntentClassifier.from_bundle(bundle_dir, threads=args.threads))
            contenders = {
                "transformers pipeline (PyTorch FP32)": (pipe, lambda b: pipe(b, batch_size=32)),
                "onnxruntime FP32 (same tokenizer)": (lambda t: run([t]), run),
                "edge_runtime INT8 static (this project)": (clf.predict, clf.predict_batch),
            }
            if args.student:
                spipe = transformers_pipeline(args.student)
                sclf = stack.enter_context(IntentClassifier.from_bundle(args.student_bundle, threads=args.threads))
                layers = json.loads((args.student / "config.json").read_text())["num_hidden_layers"]
                contenders[f"transformers pipeline, {layers}-layer student"] = (spipe, lambda b: spipe(b, batch_size=32))
                contenders[f"edge_runtime INT8, {layers}-layer student"] = (sclf.predict, sclf.predict_batch)
            results = interleaved(contenders, texts, args.rounds)
            agree = float((np.argmax(onnx_logits(fp32_path, ckpt / "tokenizer.json", 40, texts), 1)
                           == np.array([labels.index(p.intent) for p in clf.predict_batch(texts)])).mean())

    base = results["transformers pipeline (PyTorch FP32)"]["latency_ms"]["p50"]
    print(f"{'contender':<42}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'b32 /s':>10}{'speed-up':>10}")
    for name, r in results.items():
        lat = r["latency_ms"]
        r["speedup_p50_vs_transformers"] = base / lat["p50"]
        print(f"{name:<42}{lat['p50']:>9.3f}{lat['p95']:>9.3f}{lat['p99']:>9.3f}{r['batch32_per_s']:>10.1f}"
              f"{r['speedup_p50_vs_transformers']:>9.1f}x")
    print(f"INT8 vs FP32 top-1 agreement on the utterances{'' if args.teacher else ' (untrained head)'}: {agree:.2%}")
    out = {"threads": args.threads, "utterances": len(texts), "rounds": args.rounds, "results": results,
           "teacher": str(args.teacher or "packaged MiniLM-L6, untrained head"), "student": str(args.student),
           "cpu": cpu_model(),
           "int8_fp32_agreement": agree,
           "machine": os.uname().machine}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
