"""A deterministic fake backend for tests: no model file, no native library.

Logits are a fixed function of the real (unpadded) tokens of each row, so a text gets the same answer
whatever else shares its batch - the property the real backends must have too.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import BackendError

__all__ = ["FakeBackend"]


class FakeBackend:
    name = "fake"
    input_names = ("input_ids", "attention_mask")

    def __init__(self, num_labels: int, seed: int = 0) -> None:
        self.num_labels = num_labels
        self.seed = seed
        self.calls = 0
        self._closed = False

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        if self._closed:
            raise BackendError("backend is closed")
        self.calls += 1
        ids = feeds["input_ids"].astype(np.uint64)
        mask = feeds["attention_mask"].astype(np.float64)
        labels = np.arange(self.num_labels, dtype=np.uint64)
        # A multiplicative hash of (token, label) gives each token a fixed vote per label.
        h = (ids[:, :, None] * np.uint64(2654435761) + labels * np.uint64(40503) + np.uint64(self.seed)) % np.uint64(1009)
        votes = (h.astype(np.float64) / 1009.0 - 0.5) * mask[:, :, None]
        return (votes.sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0) * 8.0).astype(np.float32)

    def close(self) -> None:
        self._closed = True
