"""Out-of-scope detection on the device: "none of these intents" for a text far from every training class.

The bundle's model outputs the intent logits followed by the sentence vector its last layer reads (one output,
``[logits | features]``, so every backend returns it unchanged). The detector is the Mahalanobis distance of that
vector to the nearest class mean, with one covariance shared by the classes (Podolskiy et al., AAAI 2021), fitted by
the compile step on the INT8 model's vectors of the training texts; its threshold was chosen on the validation
texts alone. The file holds the projection ``L`` (``L @ L.T`` is the inverse covariance) and the projected class
means, so a text costs one matrix-vector product: ``min_k |x @ L - m_k|^2``.

Manifest entry (contract 1, ``out_of_scope``)::

    {"method": "mahalanobis", "file": "out_of_scope.npz", "threshold": 412.7, "features": 384, ...,
     "in_graph": {"output": "logits_oos", "backends": ["onnxruntime"]}}

With ``in_graph`` (written by the compile step since this field exists) the score is also computed inside the
listed backends' model: FP32 nodes appended after quantization (``MatMul`` by ``L``, the distances to the projected
means, ``ReduceMin``) give a second output, ``output``, which is ``[logits | score]`` (one score column). The
runtime fetches that output instead of ``[logits | features]`` and only compares the score to the threshold: the
same ``InferenceSession.run`` gives both, and no projection runs in numpy. The first output stays
``[logits | features]``, so an older runtime (which reads the first output and the file) runs the same bundle, and a
backend not listed (a Neo/DLR artifact, compiled from the FP32 export without these nodes) takes the file's path.
A bundle without ``in_graph`` (written before it) always takes the file's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .errors import ManifestError

if TYPE_CHECKING:
    from .bundle import Bundle

__all__ = ["OutOfScope", "GraphScore", "MANIFEST_KEY", "GRAPH_OUTPUT", "graph_output"]

MANIFEST_KEY = "out_of_scope"
#: The name the compile step gives the model output ``[logits | score]``.
GRAPH_OUTPUT = "logits_oos"


@dataclass(frozen=True)
class GraphScore:
    """Where the model itself computes the score: its output ``output`` is ``[logits | score]`` for ``backends``."""

    output: str
    backends: tuple[str, ...]

    def to_entry(self) -> dict[str, Any]:
        return {"output": self.output, "backends": list(self.backends)}


def _graph_score(entry: Mapping[str, Any], root: object) -> GraphScore | None:
    value = entry.get("in_graph")
    if value is None:
        return None
    output = value.get("output") if isinstance(value, Mapping) else None
    backends = value.get("backends") if isinstance(value, Mapping) else None
    if (not isinstance(output, str) or not output or not isinstance(backends, list)
            or not all(isinstance(b, str) and b for b in backends)):
        raise ManifestError(f"bundle {root}: {MANIFEST_KEY}.in_graph must be an object with an 'output' name and a "
                            f"'backends' list of backend names, got {value!r}")
    return GraphScore(output, tuple(backends))


def graph_output(bundle: "Bundle", backend: str) -> str | None:
    """The model output that holds ``[logits | score]`` for ``backend``, or None (no detector, or the score is not
    in that backend's graph)."""
    entry = bundle.manifest.extra.get(MANIFEST_KEY)
    if not isinstance(entry, Mapping):
        return None  # no detector; a malformed entry is reported by OutOfScope.from_bundle
    graph = _graph_score(entry, bundle.root)
    return graph.output if graph is not None and backend in graph.backends else None


@dataclass(frozen=True)
class OutOfScope:
    """The fitted detector: ``scores(features)`` per text, ``flags(features)`` where a score passes the threshold."""

    projection: np.ndarray  # [features, features]
    means: np.ndarray  # [classes, features], already projected
    threshold: float
    graph: GraphScore | None = None  # the manifest's ``in_graph``: backends whose model computes the score itself

    @property
    def features(self) -> int:
        return int(self.projection.shape[0])

    @classmethod
    def from_bundle(cls, bundle: "Bundle") -> "OutOfScope | None":
        """The bundle's detector, or None when its manifest has none."""
        entry = bundle.manifest.extra.get(MANIFEST_KEY)
        if entry is None:
            return None
        if not isinstance(entry, Mapping) or entry.get("method") != "mahalanobis":
            raise ManifestError(f"bundle {bundle.root}: {MANIFEST_KEY} must be an object with method 'mahalanobis'")
        try:
            rel, threshold = str(entry["file"]), float(entry["threshold"])
        except (KeyError, TypeError, ValueError):
            raise ManifestError(f"bundle {bundle.root}: {MANIFEST_KEY} needs a file and a numeric threshold") from None
        if rel not in bundle.manifest.files:
            raise ManifestError(f"bundle {bundle.root}: {MANIFEST_KEY} file {rel!r} is not listed in files")
        try:
            with np.load(bundle.path_of(rel), allow_pickle=False) as data:
                projection = np.asarray(data["projection"], dtype=np.float32)
                means = np.asarray(data["means"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ManifestError(f"bundle {bundle.root}: cannot read {rel}: {exc}") from None
        d = projection.shape[0]
        if projection.shape != (d, d) or means.ndim != 2 or means.shape[1] != d or not np.isfinite(threshold):
            raise ManifestError(f"bundle {bundle.root}: {rel} has projection {projection.shape} and means "
                                f"{means.shape}; expected [d, d] and [classes, d] with a finite threshold")
        if len(bundle.manifest.labels) != means.shape[0]:
            raise ManifestError(f"bundle {bundle.root}: {rel} has {means.shape[0]} class means for "
                                f"{len(bundle.manifest.labels)} labels")
        return cls(projection, means, threshold, _graph_score(entry, bundle.root))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row to the nearest class mean."""
        # einsum, not @: matmul hands these small products to BLAS threads, which woke beside ONNX Runtime's on two
        # cores and made a 32-text batch 70% slower; einsum's own loop costs 1 ms there (docs/results.md).
        z = np.einsum("nd,de->ne", np.asarray(features, dtype=np.float32), self.projection)
        # |z - m|^2 taken directly for every class ([n, classes, d]: a few thousand floats a text), as the in-graph
        # score does; the expansion |z|^2 - 2 z.m + |m|^2 lost digits to cancellation where |z|^2 is far larger
        # than the distance (1% of the score on a small model: |z|^2 3e5 for a distance of 8)
        diff = z[:, None, :] - self.means[None, :, :]
        return np.einsum("nkd,nkd->nk", diff, diff).min(1, initial=np.inf)

    def flags(self, features: np.ndarray) -> np.ndarray:
        return self.scores(features) > self.threshold

    def to_entry(self, file: str, **info: Any) -> dict[str, Any]:
        """The manifest entry for this detector stored at ``file``."""
        entry = {"method": "mahalanobis", "file": file, "threshold": float(self.threshold), "features": self.features,
                 **info}
        if self.graph is not None:
            entry["in_graph"] = self.graph.to_entry()
        return entry
