"""Fitting the out-of-scope detector the device runs (:mod:`edge_runtime.oos`), on training and validation data only.

Class means and one shared covariance of the sentence vectors of the training texts (as the INT8 model computes
them, so the device's vectors are what was fitted), then the threshold: the squared distance above which
``flag_rate`` of the in-scope validation texts lie. No out-of-scope text is used: the threshold is set by how
many in-scope texts it may cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["FILE", "fit_detector", "save_detector"]

FILE = "out_of_scope.npz"
#: Ridge added to the covariance's diagonal, relative to its mean variance: keeps the inverse finite when the
#: vectors span fewer dimensions than they have (few training texts, saturated tanh units).
_RIDGE = 1e-3


def fit_detector(train_features: np.ndarray, train_labels: Sequence[int], classes: int,
                 val_features: np.ndarray, flag_rate: float) -> tuple["OutOfScope", dict[str, float]]:  # noqa: F821
    """The fitted detector and what its fit measured (validation flag rate, classes without training rows)."""
    from edge_runtime.oos import OutOfScope

    x = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels)
    present = np.array([np.any(y == k) for k in range(classes)])
    overall = x.mean(0)
    # a class with no training row gets the overall mean: it can still be answered, and is no out-of-scope anchor
    means = np.stack([x[y == k].mean(0) if present[k] else overall for k in range(classes)])
    centered = x - means[y]
    cov = centered.T @ centered / max(len(x) - 1, 1)
    cov += _RIDGE * float(np.trace(cov)) / cov.shape[0] * np.eye(cov.shape[0])
    precision = np.linalg.inv(cov)
    precision = (precision + precision.T) / 2
    projection = np.linalg.cholesky(precision)  # precision = L @ L.T, so |(x - m) @ L|^2 is the distance
    detector = OutOfScope(projection.astype(np.float32), (means @ projection).astype(np.float32), float("inf"))
    val_scores = detector.scores(val_features)
    threshold = float(np.quantile(val_scores, 1.0 - flag_rate)) if len(val_scores) else float("inf")
    detector = OutOfScope(detector.projection, detector.means, threshold)
    return detector, {"val_flag_rate": float((val_scores > threshold).mean()) if len(val_scores) else 0.0,
                      "val_texts": int(len(val_scores)), "train_texts": int(len(x)),
                      "classes_without_train_rows": int((~present).sum())}


def save_detector(detector: "OutOfScope", path: Path) -> Path:  # noqa: F821
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, projection=detector.projection, means=detector.means)
    return path
