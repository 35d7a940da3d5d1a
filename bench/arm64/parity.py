"""Parity of the arm64 answers with the x86 ones: same intent for every text, logits with cosine >= 0.9999.

A text that fails either is a mismatch, and every mismatch is listed. By default one mismatch fails the check;
``max_rate`` admits a stated share of them (see docs/arm64.md: static INT8 is not bit-portable across ISAs,
a last-ulp FP32 difference can flip one uint8 rounding step, and on ~2% of SNIPS texts that step cascades).

Example::

    report = compare(texts, x86, arm, cpu="cortex-a72")
    if not report.passed:
        print(report.format())     # lists every differing text
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["MIN_COSINE", "Mismatch", "ParityReport", "compare", "cosine"]

#: INT8 kernels on another ISA may round differently in the last place; anything beyond that is a bug.
MIN_COSINE = 0.9999


@dataclass(frozen=True)
class Mismatch:
    """One text whose arm64 answer differs from the x86 one (intent, or logits below the cosine bound)."""

    index: int
    text: str
    x86_intent: str
    arm64_intent: str
    cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "x86_intent": self.x86_intent,
                "arm64_intent": self.arm64_intent, "cosine": round(self.cosine, 6)}


@dataclass(frozen=True)
class ParityReport:
    cpu: str
    checked: int
    min_cosine: float
    max_abs_diff: float
    mismatches: tuple[Mismatch, ...] = field(default_factory=tuple)
    threshold: float = MIN_COSINE
    #: share of the checked texts allowed to mismatch (0: none)
    max_rate: float = 0.0

    @property
    def allowed(self) -> int:
        return math.floor(self.max_rate * self.checked + 1e-9)

    @property
    def intent_flips(self) -> int:
        return sum(m.x86_intent != m.arm64_intent for m in self.mismatches)

    @property
    def passed(self) -> bool:
        return self.checked > 0 and len(self.mismatches) <= self.allowed

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "checked": self.checked, "passed": self.passed, "threshold": self.threshold,
                "max_mismatch_rate": self.max_rate, "mismatch_count": len(self.mismatches),
                "intent_flips": self.intent_flips, "min_cosine": round(self.min_cosine, 7),
                "max_abs_diff": float(f"{self.max_abs_diff:.3g}"), "mismatches": [m.to_dict() for m in self.mismatches]}

    def format(self) -> str:
        allowance = f", {self.allowed} allowed" if self.max_rate else ""
        head = (f"parity {'ok' if self.passed else 'FAILED'} under {self.cpu}: {self.checked} texts, "
                f"{len(self.mismatches)} differ ({self.intent_flips} in intent{allowance}; "
                f"min cosine {self.min_cosine:.7f}, max |diff| {self.max_abs_diff:.3g})")
        if not self.mismatches:
            return head
        width = min(60, max(len(repr(m.text)) for m in self.mismatches))
        lines = [head, f"  {'text':<{width}}  {'x86 intent':<22}{'arm64 intent':<22}cosine"]
        for m in self.mismatches:
            lines.append(f"  {repr(m.text):<{width}}  {m.x86_intent:<22}{m.arm64_intent:<22}{m.cosine:.7f}")
        return "\n".join(lines)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors; two zero vectors agree (1.0), one zero vector does not (0.0)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(texts: Sequence[str], x86: Mapping[str, Any], arm64: Mapping[str, Any], *, cpu: str,
            threshold: float = MIN_COSINE, max_rate: float = 0.0) -> ParityReport:
    """Compare the texts both sides answered (``intents``/``logits`` lists aligned with ``texts``; ``None``
    marks a text a side did not run). A text the arm64 side ran but x86 did not is an error."""
    if not 0.0 <= max_rate < 1.0:
        raise ValueError(f"max_rate must be in [0, 1), got {max_rate}")
    checked, min_cos, max_diff, mismatches = 0, 1.0, 0.0, []
    for i, text in enumerate(texts):
        a_logits = arm64["logits"][i]
        if a_logits is None:
            continue
        x_logits = x86["logits"][i]
        if x_logits is None:
            raise ValueError(f"text {i} ({text!r}) has an arm64 answer but no x86 reference")
        a, x = np.asarray(a_logits, dtype=np.float64), np.asarray(x_logits, dtype=np.float64)
        if a.shape != x.shape:
            raise ValueError(f"text {i}: arm64 logits have shape {a.shape}, x86 logits {x.shape}")
        checked += 1
        c = cosine(x, a)
        min_cos = min(min_cos, c)
        max_diff = max(max_diff, float(np.max(np.abs(a - x))) if a.size else 0.0)
        x_intent, a_intent = x86["intents"][i], arm64["intents"][i]
        if x_intent != a_intent or not c >= threshold:
            mismatches.append(Mismatch(i, text, str(x_intent), str(a_intent), c))
    return ParityReport(cpu=cpu, checked=checked, min_cosine=min_cos if checked else float("nan"),
                        max_abs_diff=max_diff, mismatches=tuple(mismatches), threshold=threshold,
                        max_rate=max_rate)
