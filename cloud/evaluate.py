"""Evaluate step: score the FP32 checkpoint and the INT8 bundle (through the device path) on the test set.

Writes ``metrics.json`` (accuracy, macro-F1, per-class P/R/F1, bootstrap 95% intervals for both models,
their agreement, and whether batching changes any answer), ``confusion_matrix.png`` and ``report.md``.
Also measures the reference statistics drift detection compares against, on the validation set.

    python -m cloud.evaluate --model DIR --bundle DIR --data PROCESSED_DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import CloudError
from .params import GateParams

__all__ = ["evaluate", "check_gate", "main"]


def evaluate(model_dir: Path, bundle_dir: Path, test_rows: Sequence[tuple[str, str]], labels: Sequence[str],
             out_dir: Path, *, val_texts: Sequence[str] = (), bootstrap_samples: int = 1000, seed: int = 0,
             max_length: int = 40, threads: int | None = None, unseen: str = "stop",
             teacher_dir: Path | None = None) -> dict[str, Any]:
    """Score both models, write the evaluation artefacts, return the metrics dict (also ``metrics.json``).

    ``teacher_dir``: the model a distilled ``model_dir`` learned from; scored too (``teacher_fp32``, and
    ``teacher_agreement`` with the INT8 bundle).

    ``unseen``: ``score`` keeps test rows whose label is not in ``labels`` and counts them as errors (each such
    label is a class of its own that is never predicted, as published benchmarks score them); ``stop`` refuses.
    """
    from edge_runtime import IntentClassifier
    from edge_runtime.telemetry import reference_stats

    from .metrics import classification_metrics
    from .modeling import load_classifier
    from .train import predict_logits, tokenize

    started = time.perf_counter()
    model_labels = list(labels)
    unknown = sorted({y for _, y in test_rows} - set(model_labels))
    if unknown and unseen != "score":
        raise CloudError(f"test labels {unknown} are not in the label list")
    labels = [*model_labels, *unknown]
    label_index = {label: i for i, label in enumerate(labels)}
    texts = [t for t, _ in test_rows]
    y_true = np.array([label_index[y] for _, y in test_rows])

    ids = tokenize(texts, Path(model_dir) / "tokenizer.json", max_length)
    fp32_pred = predict_logits(load_classifier(model_dir), ids).argmax(1)
    teacher_pred = predict_logits(load_classifier(teacher_dir), ids).argmax(1) if teacher_dir else None
    with IntentClassifier.from_bundle(bundle_dir, backend="onnxruntime", threads=threads) as clf:
        int8_preds = clf.predict_batch(texts)
        int8_pred = np.array([label_index[p.top[0][0]] for p in int8_preds])
        single = [clf.predict(t) for t in texts]
        batch_consistent = sum(a == b for a, b in zip(single, int8_preds))
        reference = reference_stats(clf, val_texts) if val_texts else {}
        detector = clf.detector
    # the answers with the bundle's out-of-scope decision: a text answered "unknown" counts as an error here
    answered_unknown = np.array([p.intent == clf.unknown_intent for p in int8_preds], dtype=bool)

    metrics: dict[str, Any] = {
        "labels": model_labels,
        "test_rows": len(texts),
        "unseen_labels": {lab: int((y_true == label_index[lab]).sum()) for lab in unknown},
        "fp32": classification_metrics(y_true, fp32_pred, labels, bootstrap_samples=bootstrap_samples, seed=seed),
        "int8": classification_metrics(y_true, int8_pred, labels, bootstrap_samples=bootstrap_samples, seed=seed),
        "agreement": float((fp32_pred == int8_pred).mean()),
        **({"teacher_fp32": classification_metrics(y_true, teacher_pred, labels, bootstrap_samples=bootstrap_samples,
                                                   seed=seed),
            "teacher_agreement": float((teacher_pred == int8_pred).mean())} if teacher_pred is not None else {}),
        "batch_consistency": {"identical": batch_consistent, "total": len(texts),
                              "rate": batch_consistent / max(len(texts), 1)},
        # The gate and the accuracy targets read "int8" (the model's best label); this is what the device answers
        # with the out-of-scope decision on (an in-scope text it calls unknown is an error).
        "out_of_scope": {
            "enabled": detector is not None, "threshold": detector.threshold if detector is not None else None,
            "test_unknown_rate": float(answered_unknown.mean()) if len(texts) else 0.0,
            "int8_accuracy_with_decision": float(((int8_pred == y_true) & ~answered_unknown).mean()) if len(texts)
            else 0.0,
        },
        "int8_errors": [{"text": texts[i], "true": labels[y_true[i]], "predicted": labels[int8_pred[i]],
                         "confidence": round(int8_preds[i].confidence, 4)}
                        for i in np.flatnonzero(int8_pred != y_true)[:25]],
        "seconds": round(time.perf_counter() - started, 2),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if reference:
        (out_dir / "reference.json").write_text(json.dumps(reference, indent=2) + "\n")
    _plot_confusion(np.array(metrics["int8"]["confusion_matrix"]), labels, out_dir / "confusion_matrix.png",
                    f"INT8 bundle, test set (n={len(texts)})")
    (out_dir / "report.md").write_text(render_report(metrics))
    metrics["reference"] = reference
    return metrics


def _plot_confusion(cm: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=110)
    ax.imshow(np.log1p(cm), cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_report(metrics: Mapping[str, Any]) -> str:
    """A short Markdown report a person reads: headline numbers, per-class table, the errors."""
    fp, q = metrics["fp32"], metrics["int8"]

    def ci(m: Mapping[str, Any], key: str) -> str:
        lo, hi = m.get("ci95", {}).get(key, [float("nan")] * 2)
        return f"{m[key]:.2%} [{lo:.2%}, {hi:.2%}]"

    lines = [
        "# Evaluation report", "",
        f"Test set: {metrics['test_rows']} utterances. Intervals are bootstrap 95%.", "",
        "| model | accuracy | macro-F1 |", "|---|---|---|",
        *([f"| teacher FP32 (the model the student learned from) | {ci(metrics['teacher_fp32'], 'accuracy')} | "
           f"{ci(metrics['teacher_fp32'], 'macro_f1')} |"] if "teacher_fp32" in metrics else []),
        f"| FP32 (PyTorch checkpoint) | {ci(fp, 'accuracy')} | {ci(fp, 'macro_f1')} |",
        f"| INT8 bundle (edge_runtime, device path) | {ci(q, 'accuracy')} | {ci(q, 'macro_f1')} |", "",
        f"INT8 agrees with FP32 on {metrics['agreement']:.2%} of the test set. Batched and one-by-one INT8 "
        f"answers are identical for {metrics['batch_consistency']['identical']}/{metrics['batch_consistency']['total']} texts.",
    ]
    oos = metrics.get("out_of_scope") or {}
    if oos.get("enabled"):
        lines += ["", f"With the bundle's out-of-scope decision on (the device's default), {oos['test_unknown_rate']:.2%} "
                      f"of the in-scope test texts are answered `unknown`, and the INT8 accuracy is "
                      f"{oos['int8_accuracy_with_decision']:.2%} (the figures above and the gate are without it)."]
    if metrics.get("unseen_labels"):
        lines += ["", "Test labels not in the label list, scored as errors: "
                      + ", ".join(f"{k} ({v} rows)" for k, v in metrics["unseen_labels"].items()) + "."]
    lines += [
        "", "## Per class (INT8)", "", "| intent | precision | recall | F1 | support |", "|---|---|---|---|---|",
    ]
    for label, m in q["per_class"].items():
        lines.append(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", "", f"## INT8 errors ({len(metrics['int8_errors'])} shown)", ""]
    lines += [f"- \"{e['text']}\": {e['true']} -> {e['predicted']} ({e['confidence']:.2f})" for e in metrics["int8_errors"]]
    return "\n".join(lines) + "\n"


def check_gate(metrics: Mapping[str, Any], gate: GateParams) -> dict[str, Any]:
    """Raise :class:`~cloud.errors.GateFailed` unless INT8 macro-F1 >= ``min_macro_f1`` and FP32 - INT8 <= ``max_int8_drop``.

    The gate itself is :func:`cloud.steps.gate_result`; this is its raising form, as a dict.
    """
    from .steps import gate_step

    return gate_step(metrics, gate).to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    from .params import load_params
    from .steps import evaluate_step, gate_step

    parser = argparse.ArgumentParser(prog="python -m cloud.evaluate", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default=None, help="params file (default: pipelines/params.json)")
    parser.add_argument("--model", type=Path, required=True, help="fine-tuned checkpoint directory")
    parser.add_argument("--bundle", type=Path, required=True, help="INT8 edge bundle directory")
    parser.add_argument("--data", type=Path, required=True, help="processed directory with test.csv (and val.csv)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gate", action="store_true", help="exit 1 when the quality gate fails")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        metrics = evaluate_step(args.model, args.bundle, args.data, args.out, params).metrics
        if args.gate:
            gate_step(metrics, params.gate)
    except CloudError as exc:
        print(f"error: {exc}")
        return 1
    print(json.dumps({k: metrics[k]["macro_f1"] for k in ("fp32", "int8")} | {"agreement": metrics["agreement"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
