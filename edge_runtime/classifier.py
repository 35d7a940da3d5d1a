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
#: Most texts in one model run; a longer list is run in chunks of this size. ONNX Runtime's arena grows to the largest
#: run's activations and keeps them, so the chunk bounds peak RAM, and padding every text to the longest of 8 wastes
#: less than padding to the longest of 32 (``bench/max_batch.py``: docs/results.md).
MAX_BATCH = 8


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

    ``threshold`` maps answers whose confidence is below it to ``unknown_intent``. A bundle with an out-of-scope
    detector (:mod:`edge_runtime.oos`; its manifest's ``out_of_scope``) also answers ``unknown_intent`` for a
    text far from every intent it was trained on; ``out_of_scope=False`` turns that decision off.
    A text gets the same answer from :meth:`predict` and :meth:`predict_batch`: with a statically quantized
    (or FP32) model nothing depends on what else shares the batch; a bundle whose quantization says
    ``batch_independent: false`` (dynamic INT8: activation scales come from the whole batch) is run one text
    at a time.
    """

    def __init__(self, bundle: Bundle, backend: Backend, tokenizer: IntentTokenizer, *,
                 threshold: float | None = None, unknown_intent: str = UNKNOWN_INTENT, top_k: int = 3,
                 max_batch: int = MAX_BATCH, out_of_scope: bool = True) -> None:
        from .oos import OutOfScope

        self.bundle = bundle
        self.backend = backend
        self.tokenizer = tokenizer
        self.labels = tuple(bundle.manifest.labels)
        # The model's one output is [logits | sentence vector] when the bundle has a detector, else the logits.
        self.detector = OutOfScope.from_bundle(bundle)
        self.out_of_scope = out_of_scope and self.detector is not None
        # With the score in this backend's graph (manifest ``out_of_scope.in_graph``) the backend returns
        # [logits | score] instead, and the decision is one comparison; otherwise the numpy path scores the vector.
        graph = self.detector.graph if self.detector is not None else None
        self.score_in_graph = (graph is not None and backend.name in graph.backends
                               and getattr(backend, "output_name", None) == graph.output)
        vector = 0 if self.detector is None else 1 if self.score_in_graph else self.detector.features
        self._width = len(self.labels) + vector
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
            outputs = self._outputs(texts[start:start + self.max_batch])
            k = len(self.labels)
            flags = None
            if self.out_of_scope:
                flags = self._flags(outputs)
                if self.score_in_graph and len(outputs) > 1:
                    # The graph's score of a text can differ in its last bits between batch sizes (a matrix
                    # product rounds differently for one row): a text within that margin of the threshold is
                    # decided alone, so its answer never depends on its batch.
                    chunk = texts[start:start + self.max_batch]
                    close = np.abs(outputs[:, k] - self.detector.threshold) <= _SCORE_MARGIN * max(  # type: ignore[union-attr]
                        abs(self.detector.threshold), 1.0)  # type: ignore[union-attr]
                    for i in np.flatnonzero(close):
                        flags[i] = self._flags(self._outputs([chunk[i]]))[0]
            out.extend(self._decode(_softmax(outputs[:, :k]), flags))
        return out

    def _flags(self, outputs: np.ndarray) -> np.ndarray:
        k = len(self.labels)
        if self.score_in_graph:
            return outputs[:, k] > self.detector.threshold  # type: ignore[union-attr]
        return self.detector.flags(outputs[:, k:])  # type: ignore[union-attr]

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax over the labels, shape ``[len(texts), len(labels)]`` (one model call)."""
        return _softmax(self._outputs(texts)[:, : len(self.labels)])

    def _outputs(self, texts: Sequence[str]) -> np.ndarray:
        """The model's raw output rows: the logits, then the sentence vector (or its score, when the graph computes
        it) when the bundle has a detector."""
        if not texts:
            return np.zeros((0, self._width), dtype=np.float32)
        if not self.batch_independent and len(texts) > 1:
            return np.concatenate([self._outputs([t]) for t in texts])
        enc = self.tokenizer.encode(texts)
        outputs = np.asarray(self.backend.run(enc.feeds(self.backend.input_names)), dtype=np.float32)
        # A NaN or Inf score has no probability and no JSON form: an error for this batch (and at load, and at a
        # reload's warm-up), never an answer.
        finite = np.isfinite(outputs)
        if not finite.all():
            bad = int((~finite.reshape(len(outputs), -1).all(axis=1)).sum()) if outputs.ndim >= 1 and len(outputs) else 0
            raise BackendError(f"the model gave non-finite scores (NaN or Inf) for {bad} of {len(texts)} text(s)")
        return outputs

    def _decode(self, probs: np.ndarray, out_of_scope: np.ndarray | None = None) -> list[Prediction]:
        order = np.argsort(-probs, axis=1, kind="stable")[:, : self.top_k].tolist()
        labels, threshold = self.labels, self.threshold
        flags = out_of_scope.tolist() if out_of_scope is not None else None
        results = []
        # Python lists, not numpy scalars: indexing a numpy row costs about 100 ns a value, tolist() once less
        for i, (row, idx) in enumerate(zip(probs.tolist(), order)):
            top = tuple((labels[j], row[j]) for j in idx)
            intent, conf = top[0]
            if (threshold is not None and conf < threshold) or (flags is not None and flags[i]):
                intent = self.unknown_intent
            results.append(Prediction(intent, conf, top))
        return results

    def _check_output_size(self) -> None:
        # One tiny run at load: catches a label list that does not match the model, a model whose scores are not
        # finite, and warms the session.
        try:
            outputs = self._outputs([""])
        except EdgeRuntimeError:
            self.close()
            raise
        vector = self._width - len(self.labels)
        if outputs.shape != (1, self._width):
            self.close()
            expected = f"{len(self.labels)} labels" + (
                " and an out-of-scope score" if self.score_in_graph else f" and a {vector}-wide sentence vector"
                if vector else "")
            raise BundleError(
                f"bundle {self.bundle.root}: the model outputs {outputs.shape[-1]} scores but the manifest has "
                f"{expected}"
            )

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "IntentClassifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Relative margin around the out-of-scope threshold inside which a batched text is decided alone (the graph's
#: score differs by up to about 5e-7 relative between batch sizes).
_SCORE_MARGIN = 1e-5


def _softmax(logits: np.ndarray) -> np.ndarray:
    # the subtraction makes a new contiguous array (a column slice of the model output is fine as it is)
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted
