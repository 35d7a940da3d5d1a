"""The statistics the device reports and the bundle's reference carries: one definition of every bin.

The cloud side computes the reference with :func:`reference_stats` on validation texts at build time; the
device aggregates the same quantities over a telemetry window with :class:`TelemetryWindow`, so the two
are comparable bin for bin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from ..classifier import IntentClassifier, Prediction

__all__ = ["CONFIDENCE_BINS", "LENGTH_BINS", "LOW_CONFIDENCE", "TelemetryWindow", "reference_stats", "histogram"]

CONFIDENCE_BINS: tuple[float, ...] = tuple(round(x / 10, 1) for x in range(11))
#: token counts (special tokens included)
LENGTH_BINS: tuple[int, ...] = (0, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32, 48, 64, 128, 512)
LOW_CONFIDENCE = 0.5


def histogram(values: Sequence[float], bins: Sequence[float]) -> list[int]:
    """Counts per bin; values beyond the last edge go to the last bin (so nothing is silently lost)."""
    clipped = np.clip(np.asarray(values, dtype=np.float64), bins[0], bins[-1])
    return np.histogram(clipped, bins=bins)[0].astype(int).tolist()


def reference_stats(clf: "IntentClassifier", texts: Sequence[str], batch_size: int = 256) -> dict[str, Any]:
    """Label distribution, confidence and length histograms and unknown-token rate of ``clf`` on ``texts``."""
    confidences: list[float] = []
    lengths: list[int] = []
    unknown: list[float] = []
    counts = {label: 0 for label in clf.labels}
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        enc = clf.tokenizer.encode(chunk)
        lengths.extend(enc.lengths.tolist())
        unknown.extend(clf.tokenizer.unknown_rate(enc).tolist())
        for p in clf.predict_batch(chunk):
            counts[p.top[0][0]] += 1
            confidences.append(p.confidence)
    n = max(len(confidences), 1)
    return {
        "n": len(confidences),
        "label_distribution": {k: v / n for k, v in counts.items()},
        "confidence_histogram": {"bins": list(CONFIDENCE_BINS), "counts": histogram(confidences, CONFIDENCE_BINS)},
        "length_histogram": {"bins": list(LENGTH_BINS), "counts": histogram(lengths, LENGTH_BINS), "unit": "tokens"},
        "unknown_token_rate": float(np.mean(unknown)) if unknown else 0.0,
        "low_confidence_rate": float(np.mean(np.asarray(confidences) < LOW_CONFIDENCE)) if confidences else 0.0,
        "mean_confidence": float(np.mean(confidences)) if confidences else 0.0,
    }


@dataclass
class TelemetryWindow:
    """Aggregates per-request records until :meth:`snapshot` closes the window."""

    labels: tuple[str, ...]
    started: float = field(default_factory=time.time)
    intents: dict[str, int] = field(default_factory=dict)
    confidences: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    unknown_rates: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, prediction: "Prediction", latency_ms: float, length: int, unknown_rate: float) -> None:
        label = prediction.top[0][0]
        self.intents[label] = self.intents.get(label, 0) + 1
        self.confidences.append(prediction.confidence)
        self.latencies_ms.append(latency_ms)
        self.lengths.append(length)
        self.unknown_rates.append(unknown_rate)

    def add_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    @property
    def count(self) -> int:
        return len(self.confidences)

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """The window as the telemetry message body; ``extra`` adds fields (model, rss, drift ...)."""
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        n = self.count
        return {
            "window": {"start": self.started, "end": time.time(), "requests": n,
                       "errors": dict(self.errors), "error_count": sum(self.errors.values())},
            "intents": {label: self.intents.get(label, 0) for label in self.labels},
            "confidence_histogram": {"bins": list(CONFIDENCE_BINS), "counts": histogram(self.confidences, CONFIDENCE_BINS)},
            "length_histogram": {"bins": list(LENGTH_BINS), "counts": histogram(self.lengths, LENGTH_BINS)},
            "low_confidence_rate": float(np.mean(np.asarray(self.confidences) < LOW_CONFIDENCE)) if n else 0.0,
            "unknown_token_rate": float(np.mean(self.unknown_rates)) if n else 0.0,
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95))} if n else {},
            **extra,
        }
