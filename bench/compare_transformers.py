"""Side-by-side: the edge runtime (INT8 ONNX Runtime) vs what a user would pick instead, in one run.

Contenders, same model (packaged MiniLM-L6 + the same seeded head), same utterances, same thread count:
  - transformers ``pipeline("text-classification")`` in PyTorch (FP32),
  - ONNX Runtime on the FP32 export with the same tokenizer path,
  - ``edge_runtime.IntentClassifier`` on the static-INT8 bundle.

All three are loaded at once and timed in turns, round by round (each round: every utterance through each
contender), so a drift of the machine's speed during the run touches all of them alike.

    python bench/compare_transformers.py --threads 2 --json bench/results/compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from cloud.compile import build_base_bundle, onnx_logits
    from cloud.params import load_params
    from edge_runtime import IntentClassifier
    from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_runtime.bench import UTTERANCES
    from edge_runtime.tokenizer import IntentTokenizer

    torch.set_num_threads(args.threads)
    labels = load_params().labels
    texts = list(UTTERANCES)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        res = build_base_bundle(Path(tmp) / "bundle", labels, checkpoint_dir=ckpt)
        tok = AutoTokenizer.from_pretrained(ckpt)
        model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
        pipe = pipeline("text-classification", model=model, tokenizer=tok, device="cpu", top_k=None)

        fp32_path = Path(tmp) / "fp32.onnx"
        from cloud.compile import export_onnx
        export_onnx(AutoModelForSequenceClassification.from_pretrained(ckpt, attn_implementation="eager"), fp32_path)
        backend = OnnxRuntimeBackend(fp32_path, threads=args.threads)
        itok = IntentTokenizer(ckpt / "tokenizer.json", 40)
        run = lambda b: backend.run(itok.encode(b).feeds(backend.input_names))  # noqa: E731

        with IntentClassifier.from_bundle(res.bundle_dir, threads=args.threads) as clf, torch.inference_mode():
            results = interleaved({
                "transformers pipeline (PyTorch FP32)": (pipe, lambda b: pipe(b, batch_size=32)),
                "onnxruntime FP32 (same tokenizer)": (lambda t: run([t]), run),
                "edge_runtime INT8 static (this project)": (clf.predict, clf.predict_batch),
            }, texts, args.rounds)
            agree = float((np.argmax(onnx_logits(fp32_path, ckpt / "tokenizer.json", 40, texts), 1)
                           == np.array([labels.index(p.intent) for p in clf.predict_batch(texts)])).mean())

    base = results["transformers pipeline (PyTorch FP32)"]["latency_ms"]["p50"]
    print(f"{'contender':<42}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'b32 /s':>10}{'speed-up':>10}")
    for name, r in results.items():
        lat = r["latency_ms"]
        r["speedup_p50_vs_transformers"] = base / lat["p50"]
        print(f"{name:<42}{lat['p50']:>9.3f}{lat['p95']:>9.3f}{lat['p99']:>9.3f}{r['batch32_per_s']:>10.1f}"
              f"{r['speedup_p50_vs_transformers']:>9.1f}x")
    print(f"INT8 vs FP32 top-1 agreement on the utterances (untrained head): {agree:.2%}")
    out = {"threads": args.threads, "utterances": len(texts), "rounds": args.rounds, "results": results,
           "int8_fp32_agreement": agree,
           "machine": os.uname().machine}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
