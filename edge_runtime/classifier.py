"""IntentClassifier: text in, intent out, on the device path (tokenizer + backend + softmax)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .backends import Backend, BackendName, load_backend
from .bundle import Bundle
from .errors import BackendError, BundleError, EdgeRuntimeError, InputError
from .tokenizer import IntentTokenizer

__all__ = ["IntentClassifier", "Prediction"]

UNKNOWN_INTENT = "unknown"


@dataclass(frozen=True)
class Prediction:
    """One text's answer. ``top`` holds ``(label, probability)`` pairs, best first."""

    intent: str
    confidence: float
    top: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "confidence": round(self.confidence, 6),
            "top": [{"intent": label, "confidence": round(p, 6)} for label, p in self.top],
        }


class IntentClassifier:
    """Classify utterances with an edge bundle.

    Example::

        with IntentClassifier.from_bundle("edge/3") as clf:
            clf.predict("play some jazz").intent   # 'PlayMusic'

    ``threshold`` maps answers whose confidence is below it to ``unknown_intent``.
    A text gets the same answer from :meth:`predict` and :meth:`predict_batch`: with a statically quantized
    (or FP32) model nothing depends on what else shares the batch; a bundle whose quantization says
    ``batch_independent: false`` (dynamic INT8: activation scales come from the whole batch) is run one text
    at a time.
    """

    def __init__(self, bundle: Bundle, backend: Backend, tokenizer: IntentTokenizer, *,
                 threshold: float | None = None, unknown_intent: str = UNKNOWN_INTENT, top_k: int = 3,
                 max_batch: int = 64) -> None:
        self.bundle = bundle
        self.backend = backend
        self.tokenizer = tokenizer
        self.labels = tuple(bundle.manifest.labels)
        self.threshold = threshold
        self.unknown_intent = unknown_intent
        self.top_k = max(1, min(top_k, len(self.labels)))
        self.max_batch = max_batch
        quantization = (bundle.backend_entry(backend.name) or {}).get("quantization") or {}
        self.batch_independent = bool(quantization.get("batch_independent", True))
        self._check_output_size()

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str] | Bundle, *, backend: str | BackendName = BackendName.AUTO,
                    threads: int | None = None, providers: Sequence[str] | None = None, callers: int = 1,
                    verify: bool = True, **kwargs: Any) -> "IntentClassifier":
        """Load (and verify) a bundle directory and its model; ``callers``: how many threads will call it at once."""
        bundle = path if isinstance(path, Bundle) else Bundle.load(path, verify=verify)
        tokenizer = IntentTokenizer(bundle.path_of(bundle.manifest.tokenizer), bundle.manifest.max_length)
        model = load_backend(bundle, backend, threads=threads, providers=providers, callers=callers)
        try:
            return cls(bundle, model, tokenizer, **kwargs)
        except BaseException:
            model.close()
            raise

    @property
    def name(self) -> str:
        return self.bundle.manifest.name

    @property
    def version(self) -> str:
        return self.bundle.manifest.version

    def predict(self, text: str) -> Prediction:
        return self.predict_batch([text])[0]

    def predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify several texts in one model call (split into chunks of ``max_batch``)."""
        if isinstance(texts, str):
            raise InputError("predict_batch() takes a list of texts; use predict() for one text")
        out: list[Prediction] = []
        for start in range(0, len(texts), self.max_batch):
            out.extend(self._decode(self.probabilities(texts[start:start + self.max_batch])))
        return out

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax over the labels, shape ``[len(texts), len(labels)]`` (one model call)."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if not self.batch_independent and len(texts) > 1:
            return np.concatenate([self.probabilities([t]) for t in texts])
        enc = self.tokenizer.encode(texts)
        logits = np.asarray(self.backend.run(enc.feeds(self.backend.input_names)), dtype=np.float32)
        # A NaN or Inf score has no probability and no JSON form: an error for this batch (and at load, and at a
        # reload's warm-up), never an answer.
        finite = np.isfinite(logits)
        if not finite.all():
            bad = int((~finite.reshape(len(logits), -1).all(axis=1)).sum()) if logits.ndim >= 1 and len(logits) else 0
            raise BackendError(f"the model gave non-finite scores (NaN or Inf) for {bad} of {len(texts)} text(s)")
        return _softmax(logits)

    def _decode(self, probs: np.ndarray) -> list[Prediction]:
        order = np.argsort(-probs, axis=1, kind="stable")[:, : self.top_k]
        results = []
        for row, idx in zip(probs, order):
            top = tuple((self.labels[i], float(row[i])) for i in idx)
            intent, conf = top[0]
            if self.threshold is not None and conf < self.threshold:
                intent = self.unknown_intent
            results.append(Prediction(intent, conf, top))
        return results

    def _check_output_size(self) -> None:
        # One tiny run at load: catches a label list that does not match the model, a model whose scores are not
        # finite, and warms the session.
        try:
            probs = self.probabilities([""])
        except EdgeRuntimeError:
            self.close()
            raise
        if probs.shape != (1, len(self.labels)):
            self.close()
            raise BundleError(
                f"bundle {self.bundle.root}: the model outputs {probs.shape[-1]} scores but the manifest has "
                f"{len(self.labels)} labels"
            )

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "IntentClassifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted
