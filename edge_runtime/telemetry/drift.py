"""Drift signals: the live window against the bundle's reference statistics.

Per signal, population stability index (PSI) and Jensen-Shannon distance (base 2, in [0, 1]); an alert
fires when a configured threshold is crossed and the window holds enough requests to judge.
Usual PSI reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["psi", "js_distance", "DriftThresholds", "DriftAlert", "DriftMonitor"]

_EPS = 1e-4


def _normalise(counts: Sequence[float]) -> np.ndarray:
    p = np.asarray(counts, dtype=np.float64)
    total = p.sum()
    p = p / total if total > 0 else np.full(len(p), 1.0 / max(len(p), 1))
    # Smoothing keeps an empty bin from making PSI infinite.
    p = p + _EPS
    return p / p.sum()


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of ``actual`` against ``expected`` (counts or proportions, same bins)."""
    e, a = _normalise(expected), _normalise(actual)
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2): 0 identical, 1 disjoint."""
    pn, qn = _normalise(p), _normalise(q)
    m = (pn + qn) / 2
    div = 0.5 * np.sum(pn * np.log2(pn / m)) + 0.5 * np.sum(qn * np.log2(qn / m))
    return float(np.sqrt(max(div, 0.0)))


@dataclass(frozen=True)
class DriftThresholds:
    """When a drift alert fires.

    psi: alert when a distribution signal's PSI exceeds this.
    js: alert when a distribution signal's Jensen-Shannon distance exceeds this.
    unknown_token_rate_delta: alert when the window's [UNK] rate exceeds the reference's by this much.
    min_requests: windows with fewer requests are not judged (too noisy).
    """

    psi: float = 0.25
    js: float = 0.3
    unknown_token_rate_delta: float = 0.05
    min_requests: int = 50

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DriftThresholds":
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DriftAlert:
    signal: str
    metric: str
    value: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DriftMonitor:
    """Compares telemetry windows (:meth:`TelemetryWindow.snapshot`) with a bundle's ``reference``."""

    SIGNALS = ("label_distribution", "confidence_histogram", "length_histogram")

    def __init__(self, reference: Mapping[str, Any], thresholds: DriftThresholds = DriftThresholds()) -> None:
        self.reference = reference
        self.thresholds = thresholds

    @property
    def enabled(self) -> bool:
        return bool(self.reference.get("label_distribution"))

    def _pairs(self, window: Mapping[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
        ref = self.reference
        labels = list(ref["label_distribution"])
        return {
            "label_distribution": ([ref["label_distribution"][k] for k in labels],
                                   [window["intents"].get(k, 0) for k in labels]),
            "confidence_histogram": (ref["confidence_histogram"]["counts"], window["confidence_histogram"]["counts"]),
            "length_histogram": (ref["length_histogram"]["counts"], window["length_histogram"]["counts"]),
        }

    def evaluate(self, window: Mapping[str, Any]) -> dict[str, Any]:
        """``{"judged", "signals": {name: {psi, js}}, "alerts": [...]}`` for one window snapshot."""
        if not self.enabled:
            return {"judged": False, "reason": "bundle has no reference statistics", "signals": {}, "alerts": []}
        requests = window["window"]["requests"]
        signals: dict[str, dict[str, float]] = {}
        for name, (expected, actual) in self._pairs(window).items():
            signals[name] = {"psi": round(psi(expected, actual), 4), "js": round(js_distance(expected, actual), 4)}
        unk_delta = window.get("unknown_token_rate", 0.0) - float(self.reference.get("unknown_token_rate", 0.0))
        signals["unknown_token_rate"] = {"delta": round(unk_delta, 4)}
        if requests < self.thresholds.min_requests:
            return {"judged": False, "reason": f"{requests} < {self.thresholds.min_requests} requests",
                    "signals": signals, "alerts": []}
        t = self.thresholds
        alerts = []
        for name in self.SIGNALS:
            if signals[name]["psi"] > t.psi:
                alerts.append(DriftAlert(name, "psi", signals[name]["psi"], t.psi))
            if signals[name]["js"] > t.js:
                alerts.append(DriftAlert(name, "js", signals[name]["js"], t.js))
        if unk_delta > t.unknown_token_rate_delta:
            alerts.append(DriftAlert("unknown_token_rate", "delta", round(unk_delta, 4), t.unknown_token_rate_delta))
        return {"judged": True, "signals": signals, "alerts": [a.to_dict() for a in alerts]}
