"""Which INT8 recipe to ship: latency, throughput, size and accuracy of each, side by side in one run.

Variants (same checkpoint, same calibration texts, same utterances, same threads):
  static-fused         BERT fusions + integer operators, calibrated scales (QOperator; the default, batch-independent)
  static-qdq           static QDQ, per-channel, TorchScript export          (batch-independent)
  static-qdq-dynamo    static QDQ, per-channel, torch.export (dynamo) export (batch-independent)
  dynamic-fused        BERT fusions + dynamic INT8 (QAttention); texts run one at a time

    python bench/quantization_compare.py [--model CHECKPOINT] [--data ../shared/data/snips] [--json F]

Without ``--model`` the packaged MiniLM-L6 with an untrained head is used (speed only; accuracy needs a
fine-tuned checkpoint, e.g. .store/slm-intents/models/<run>/checkpoint).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare_transformers import latency_ms  # noqa: E402  (this script's folder is on sys.path)

VARIANTS = {
    "static-fused": ({"scheme": "static", "format": "QOperator"}, "torchscript"),
    "static-qdq": ({"scheme": "static", "format": "QDQ"}, "torchscript"),
    "static-qdq-dynamo": ({"scheme": "static", "format": "QDQ"}, "dynamo"),
    "dynamic-fused": ({"scheme": "dynamic"}, "torchscript"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "snips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from cloud.compile import QuantizationConfig, compile_bundle, save_base_checkpoint
    from cloud.params import load_params
    from edge_runtime import IntentClassifier
    from edge_runtime.bench import UTTERANCES

    params = load_params()
    labels = params.labels
    test = val = []
    if (args.data / "test" / "seq.in").is_file():
        test = list(zip((args.data / "test" / "seq.in").read_text().splitlines(),
                        (args.data / "test" / "label").read_text().splitlines()))
        val = (args.data / "valid" / "seq.in").read_text().splitlines()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.model or save_base_checkpoint(Path(tmp) / "base", labels)
        calibration = val[:300] or list(UTTERANCES)
        for name in args.variants.split(","):
            q, exporter = VARIANTS[name]
            t0 = time.perf_counter()
            res = compile_bundle(ckpt, Path(tmp) / name, version=name, name=name, labels=labels,
                                 max_length=params.train.max_length, calibration_texts=calibration,
                                 check_texts=[], quantization=QuantizationConfig(**q), exporter=exporter,
                                 min_agreement=0.0, work_dir=Path(tmp) / f"work-{name}")
            build_s = time.perf_counter() - t0
            with IntentClassifier.from_bundle(res.bundle_dir, threads=args.threads) as clf:
                row = {"p50_ms": latency_ms(clf.predict, list(UTTERANCES), 400)["p50"], "int8_mb": res.int8_bytes / 2**20,
                       "build_s": build_s}
                batch = list(UTTERANCES)
                clf.predict_batch(batch)
                t = time.perf_counter()
                for _ in range(10):
                    clf.predict_batch(batch)
                row["batch32_per_s"] = 320 / (time.perf_counter() - t)
                if test and args.model:
                    preds = clf.predict_batch([t for t, _ in test])
                    row["test_accuracy"] = float(np.mean([p.intent == y for p, (_, y) in zip(preds, test)]))
            results[name] = row
    print(f"{'variant':<20}{'p50 ms':>9}{'b32 /s':>9}{'MB':>7}{'test acc':>10}")
    for name, r in results.items():
        acc = f"{r['test_accuracy']:.2%}" if "test_accuracy" in r else "-"
        print(f"{name:<20}{r['p50_ms']:>9.3f}{r['batch32_per_s']:>9.0f}{r['int8_mb']:>7.1f}{acc:>10}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"threads": args.threads, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
