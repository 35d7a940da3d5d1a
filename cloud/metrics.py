"""Classification metrics without scikit-learn: accuracy, macro-F1, per-class P/R/F1, bootstrap intervals."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["confusion", "classification_metrics", "bootstrap_ci", "macro_f1"]


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n: int) -> np.ndarray:
    """Rows are the true class, columns the predicted one."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n: int) -> float:
    """Mean F1 over the classes present in ``y_true`` or ``y_pred``."""
    cm = confusion(y_true, y_pred, n)
    present = (cm.sum(0) + cm.sum(1)) > 0
    return float(_prf(cm)[2][present].mean()) if present.any() else 0.0


def bootstrap_ci(y_true: Sequence[int], y_pred: Sequence[int], n: int, *, samples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of accuracy and macro-F1 (resampling test items with replacement)."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    rng = np.random.default_rng(seed)
    accs, f1s = [], []
    for _ in range(samples):
        idx = rng.integers(0, len(yt), len(yt))
        accs.append(float((yt[idx] == yp[idx]).mean()))
        f1s.append(macro_f1(yt[idx], yp[idx], n))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {"accuracy": [float(np.percentile(accs, lo)), float(np.percentile(accs, hi))],
            "macro_f1": [float(np.percentile(f1s, lo)), float(np.percentile(f1s, hi))]}


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str], *,
                           bootstrap_samples: int = 0, seed: int = 0) -> dict[str, Any]:
    """``accuracy``, ``macro_f1``, ``per_class`` {label: precision/recall/f1/support}, ``confusion_matrix``, ``ci95``."""
    n = len(labels)
    cm = confusion(y_true, y_pred, n)
    precision, recall, f1 = _prf(cm)
    out: dict[str, Any] = {
        "n": int(cm.sum()),
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "macro_f1": macro_f1(y_true, y_pred, n),
        "per_class": {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                              "support": int(cm[i].sum())} for i, label in enumerate(labels)},
        "confusion_matrix": cm.tolist(),
    }
    if bootstrap_samples:
        out["ci95"] = bootstrap_ci(y_true, y_pred, n, samples=bootstrap_samples, seed=seed)
    return out
