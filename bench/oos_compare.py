"""Out-of-scope detectors side by side on one fine-tuned checkpoint (FP32, PyTorch).

    python bench/oos_compare.py --model .store/slm-intents/models/RUN/checkpoint \
        --processed .store/slm-intents/processed --oos ../shared/data/banking77/test.csv \
        --oos-select ../shared/data/banking77/train.csv

Every detector turns a text into an out-of-scope score; its threshold is fixed on the in-scope *validation* texts
alone, by one rule chosen before any out-of-scope text was looked at: the score above which 0.1% of them lie
(under the 0.3-point budget for the in-scope accuracy drop, with room for the test set's noise). A detector and its
settings are chosen on ``--oos-select`` (out-of-scope texts disjoint from ``--oos``); ``--oos`` is only reported.
Detectors:

- ``msp``: 1 - the top softmax probability; ``msp_t``: the same after temperature scaling (fitted on validation);
- ``energy``: -logsumexp(logits);
- ``maha_<vector>``: the squared Mahalanobis distance of a sentence vector to the nearest class mean, with one
  covariance shared by the classes (0.1% of its mean variance added to the diagonal), fitted on the training texts
  (Podolskiy et al., AAAI 2021, "Revisiting Mahalanobis Distance for Transformer-Based Out-of-Domain Detection").
  Vectors: ``pooled`` (what the classifier reads), the last layer's ``cls`` and ``mean``, and ``mean<i>_l2``: the
  L2-normalized mean of layer ``i``'s hidden states (earlier layers keep more of what the fine-tuning on the
  in-scope intents discards).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RIDGE = 1e-3
FLAG_RATE = 0.001  # the share of in-scope validation texts a threshold may flag (under the 0.3-point budget)


def features(model_dir: Path, texts: list[str], max_length: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits and sentence vectors of ``texts``: ``pooled`` (what the classifier reads), and for every layer ``i``
    ``cls<i>`` (the [CLS] hidden state) and ``mean<i>`` (the masked mean of the hidden states; layer 0 is the
    embeddings)."""
    import torch

    from cloud.modeling import load_classifier
    from cloud.train import _collate, tokenize

    model = load_classifier(model_dir)
    ids = tokenize(texts, model_dir / "tokenizer.json", max_length)
    out: dict[str, list[np.ndarray]] = {}
    order = np.argsort([len(x) for x in ids], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(ids), 128):
            rows = order[start:start + 128]
            x, m = _collate(ids, rows)
            enc = model.bert(input_ids=x, attention_mask=m, token_type_ids=torch.zeros_like(x),
                             output_hidden_states=True)
            mask = m.unsqueeze(-1).float()
            last_mean = (enc.last_hidden_state * mask).sum(1) / mask.sum(1)
            pooled = enc.pooler_output if getattr(enc, "pooler_output", None) is not None else last_mean
            batch = {"logits": model.classifier(pooled), "pooled": pooled}
            for i, h in enumerate(enc.hidden_states):
                batch[f"cls{i}"] = h[:, 0]
                batch[f"mean{i}"] = (h * mask).sum(1) / mask.sum(1)
            for k, v in batch.items():
                out.setdefault(k, []).append(v.numpy())
    inverse = np.argsort(order, kind="stable")
    arrays = {k: np.concatenate(v)[inverse] for k, v in out.items()}
    return arrays.pop("logits"), arrays


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    losses = [-np.log(_softmax(logits / t)[np.arange(len(y)), y] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(losses))])


def fit_mahalanobis(vectors: np.ndarray, y: np.ndarray, classes: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Class means and the inverse of the shared covariance, with ``ridge`` x its mean variance on the diagonal."""
    means = np.stack([vectors[y == k].mean(0) for k in range(classes)])
    centered = vectors - means[y]
    cov = centered.T @ centered / len(vectors)
    cov = cov + ridge * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    return means, np.linalg.inv(cov)


def _norm(vectors: np.ndarray, normalized: bool) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if normalized else vectors


def mahalanobis(vectors: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = vectors[:, None, :] - means[None, :, :]
    return np.einsum("nkd,de,nke->nk", d, precision, d).min(1)


def read_rows(path: Path, text_column: str, label_column: str | None) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [(" ".join(r[text_column].split()), r[label_column] if label_column else "") for r in csv.DictReader(fh)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="fine-tuned checkpoint directory")
    parser.add_argument("--processed", type=Path, required=True, help="processed/ with train.csv, val.csv, test.csv")
    parser.add_argument("--oos", type=Path, required=True, help="CSV of out-of-scope texts")
    parser.add_argument("--oos-column", default="text")
    parser.add_argument("--oos-select", type=Path, default=None,
                        help="a second, disjoint out-of-scope set to choose a detector on (the --oos set is only "
                             "reported)")
    parser.add_argument("--max-length", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    labels = json.loads((args.model / "config.json").read_text())["id2label"]
    labels = [labels[str(i)] for i in range(len(labels))]
    index = {lab: i for i, lab in enumerate(labels)}
    split = {s: read_rows(args.processed / f"{s}.csv", "text", "intent") for s in ("train", "val", "test")}
    oos = [t for t, _ in read_rows(args.oos, args.oos_column, None)]
    out = {s: features(args.model, [t for t, _ in rows], args.max_length) for s, rows in split.items()}
    out["oos"] = features(args.model, oos, args.max_length)
    select = (features(args.model, [t for t, _ in read_rows(args.oos_select, args.oos_column, None)], args.max_length)
              if args.oos_select else None)
    y = {s: np.array([index[lab] for _, lab in rows]) for s, rows in split.items()}

    temperature = fit_temperature(out["val"][0], y["val"])
    detectors = {
        "msp": lambda z, v: 1 - _softmax(z).max(1),
        "msp_t": lambda z, v: 1 - _softmax(z / temperature).max(1),
        "energy": lambda z, v: -np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) - z.max(1),
    }
    layers = sorted(int(k[4:]) for k in out["train"][1] if k.startswith("mean"))
    candidates = [("pooled", False), (f"cls{layers[-1]}", False), (f"mean{layers[-1]}", False)]
    candidates += [(f"mean{i}", True) for i in layers if i > 0]  # L2-normalized means of every layer
    for vector, normalized in candidates:
        means, precision = fit_mahalanobis(_norm(out["train"][1][vector], normalized), y["train"], len(labels), RIDGE)
        name = f"maha_{vector}" + ("_l2" if normalized else "")
        detectors[name] = (lambda z, v, m=means, p=precision, k=vector, n=normalized: mahalanobis(_norm(v[k], n), m, p))
    test_pred = out["test"][0].argmax(1)
    base_acc = float((test_pred == y["test"]).mean())
    rows = {}
    print(f"in-scope test accuracy without a decision: {base_acc:.2%} ({len(y['test'])} texts); "
          f"{len(oos)} out-of-scope texts; temperature {temperature:.3f}")
    print(f"{'detector':<22} {'threshold':>12} {'val flagged':>12} {'test acc':>9} {'drop pts':>9} {'OOS unknown':>12}"
          + ("  OOS-select unknown" if select is not None else ""))
    for name, score in detectors.items():
        val_s = score(*out["val"])
        threshold = float(np.quantile(val_s, 1 - FLAG_RATE))
        test_flag = score(*out["test"]) > threshold
        acc = float(((test_pred == y["test"]) & ~test_flag).mean())
        oos_flag = float((score(*out["oos"]) > threshold).mean())
        rows[name] = {"threshold": threshold, "val_flagged": float((val_s > threshold).mean()),
                      "test_accuracy": acc, "drop_points": 100 * (base_acc - acc), "oos_unknown": oos_flag}
        extra = ""
        if select is not None:
            rows[name]["select_unknown"] = float((score(*select) > threshold).mean())
            extra = f"  {rows[name]['select_unknown']:>18.2%}"
        print(f"{name:<22} {threshold:>12.4f} {rows[name]['val_flagged']:>12.2%} {acc:>9.2%} "
              f"{rows[name]['drop_points']:>9.2f} {oos_flag:>12.2%}" + extra)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(args.model), "oos": str(args.oos), "base_accuracy": base_acc,
                                         "temperature": temperature, "detectors": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
