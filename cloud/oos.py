"""Fitting the out-of-scope detector the device runs (:mod:`edge_runtime.oos`), on training and validation data only.

Class means and one shared covariance of the sentence vectors of the training texts (as the INT8 model computes
them, so the device's vectors are what was fitted), then the threshold: the squared distance above which
``flag_rate`` of the in-scope validation texts lie. No out-of-scope text is used: the threshold is set by how
many in-scope texts it may cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import CompileError

__all__ = ["FILE", "fit_detector", "save_detector", "add_score_to_graph", "graph_score_difference"]

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


def add_score_to_graph(model_path: Path, detector: "OutOfScope", classes: int, *,  # noqa: F821
                       weights_file: str | None = None, output: str | None = None) -> "OutOfScope":  # noqa: F821
    """Append the detector's score to the ONNX model at ``model_path`` (rewritten in place) as a second output.

    FP32 nodes after the (quantized) graph: the first output ``[logits | features]`` is sliced, the features are
    projected (``MatMul`` by ``L``), ``|z - m|^2`` is taken for every projected class mean (``Sub``,
    ``ReduceSumSquare``), then ``ReduceMin``: the score :meth:`edge_runtime.oos.OutOfScope.scores` computes; the
    new output ``output`` is ``[logits | score]``. The first output is left as it is. ``weights_file``: the external
    data file beside the model (rewritten; None keeps the weights inside the graph). Returns the detector with its
    :class:`~edge_runtime.oos.GraphScore` (backend ``onnxruntime``) set.
    """
    import dataclasses

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_runtime.oos import GRAPH_OUTPUT, GraphScore

    output = output or GRAPH_OUTPUT
    model = onnx.load(str(model_path))  # external weights are read into memory
    graph = model.graph
    source = graph.output[0]
    features = detector.features
    if output in {o.name for o in graph.output}:
        raise CompileError(f"{model_path} already has an output {output!r}")
    dims = source.type.tensor_type.shape.dim
    if len(dims) != 2 or (dims[1].HasField("dim_value") and dims[1].dim_value != classes + features):
        raise CompileError(f"{model_path}: output {source.name!r} is not [batch, {classes} logits + {features} features]")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    means = np.asarray(detector.means, dtype=np.float32)

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, f"oos/{name}"))
        return f"oos/{name}"

    def node(op: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        graph.node.append(helper.make_node(op, list(inputs), [f"oos/{name}"], name=f"oos/{name}", **attrs))
        return f"oos/{name}"

    def reduce(op: str, x: str, name: str, axis: int, keepdims: int) -> str:  # axes became an input in opset 18
        if opset >= 18:
            return node(op, [x, const(f"{name}_axes", np.array([axis], np.int64))], name, keepdims=keepdims)
        return node(op, [x], name, axes=[axis], keepdims=keepdims)

    axis, zero = const("axis", np.array([1], np.int64)), const("zero", np.array([0], np.int64))
    k, end = const("k", np.array([classes], np.int64)), const("end", np.array([classes + features], np.int64))
    x = node("Slice", [source.name, k, end, axis], "features")
    z = node("MatMul", [x, const("projection", np.asarray(detector.projection, dtype=np.float32))], "projected")
    # |z - m|^2 taken directly ([batch, classes, features], a few thousand floats per text): the expansion
    # |z|^2 - 2 z.m + |m|^2 loses digits to cancellation (measured: 1e-4 relative here against 2e-5 in numpy)
    diff = node("Sub", [node("Unsqueeze", [z, axis], "projected_3d"), const("means", means)], "diff")
    score = reduce("ReduceMin", reduce("ReduceSumSquare", diff, "distances", 2, 0), "score", 1, 1)
    logits = node("Slice", [source.name, zero, k, axis], "logits")
    graph.node.append(helper.make_node("Concat", [logits, score], [output], name="oos/concat", axis=1))
    batch = onnx.TensorShapeProto.Dimension()
    batch.CopyFrom(dims[0])
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, classes + 1])
    out.type.tensor_type.shape.dim[0].CopyFrom(batch)
    graph.output.append(out)
    onnx.checker.check_model(model)
    if weights_file:
        data = Path(model_path).parent / weights_file
        data.unlink(missing_ok=True)  # onnx appends to an existing data file
        onnx.save_model(model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=weights_file, size_threshold=1024)
    else:
        onnx.save_model(model, str(model_path))
    return dataclasses.replace(detector, graph=GraphScore(output, ("onnxruntime",)))


def graph_score_difference(model_path: Path, detector: "OutOfScope", classes: int,  # noqa: F821
                           feeds: Sequence[Mapping[str, np.ndarray]]) -> float:
    """The largest relative difference between the model's in-graph score and the numpy path's score of the
    features the same run gives (``max |a - b| / max(|b|, 1)`` over ``feeds``; the logits, which must be equal, count
    too)."""
    import onnxruntime as ort

    if detector.graph is None:
        raise CompileError("the detector has no in-graph score to compare")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [session.get_outputs()[0].name, detector.graph.output]
    wanted = [i.name for i in session.get_inputs()]
    worst = 0.0
    for feed in feeds:
        full, graph = session.run(names, {n: feed[n] for n in wanted})
        expected = detector.scores(full[:, classes:])
        logits = float(np.abs(graph[:, :classes] - full[:, :classes]).max(initial=0.0))  # the same tensor: 0
        score = float((np.abs(graph[:, classes] - expected) / np.maximum(np.abs(expected), 1.0)).max(initial=0.0))
        worst = max(worst, logits, score)
    return worst
