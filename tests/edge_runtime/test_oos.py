"""``edge_runtime.oos``: the out-of-scope detector the device runs (fitted by ``cloud.oos``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.errors import ManifestError
from edge_runtime.oos import OutOfScope


def _detector(rng: np.random.Generator) -> tuple[OutOfScope, np.ndarray]:
    from cloud.oos import fit_detector

    centers = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    y = np.repeat([0, 1], 200)
    train = centers[y] + rng.normal(0, 0.5, (400, 3))
    val = centers[np.repeat([0, 1], 100)] + rng.normal(0, 0.5, (200, 3))
    detector, fit = fit_detector(train, y, 2, val, flag_rate=0.01)
    return detector, val


def test_a_vector_far_from_every_class_is_flagged_and_one_near_a_class_is_not():
    rng = np.random.default_rng(0)
    detector, val = _detector(rng)
    # Given the threshold set on validation vectors: about 1% of them lie beyond it
    assert (detector.flags(val).mean()) == pytest.approx(0.01, abs=0.006)
    # Then vectors near a class mean pass and far ones are flagged, whatever their direction
    assert not detector.flags(np.array([[4.1, 0.2, 0.0], [0.1, 3.8, -0.2]])).any()
    assert detector.flags(np.array([[0.0, 0.0, 9.0], [-6.0, -6.0, 0.0], [2.0, 2.0, 4.0]])).all()
    # and the score is the squared Mahalanobis distance to the nearest mean (not the Euclidean one)
    x = np.array([4.0, 0.0, 1.0])
    L = detector.projection.astype(np.float64)
    precision, means = L @ L.T, detector.means.astype(np.float64) @ np.linalg.inv(L)
    expected = min(float((x - m) @ precision @ (x - m)) for m in means)
    assert detector.scores(x[None, :])[0] == pytest.approx(expected, rel=1e-4)
    assert expected > float(np.sum((x - means[0]) ** 2)), "one unit off-axis counts more than its Euclidean 1"


def test_the_bundle_entry_is_checked(tmp_path, tiny_bundle):
    from cloud.oos import save_detector
    from edge_runtime.bundle import Bundle, write_bundle

    detector, _ = _detector(np.random.default_rng(1))
    bundle, _ = tiny_bundle
    m = bundle.manifest
    npz = save_detector(detector, tmp_path / "oos.npz")
    files = {rel: bundle.path_of(rel) for rel in m.files}

    def write(entry, extra_files=None):
        return write_bundle(tmp_path / "b", files={**files, **(extra_files or {})}, name=m.name, version=m.version,
                            labels=m.labels, max_length=m.max_length, tokenizer=m.tokenizer, backends=m.backends,
                            extra={"out_of_scope": entry})

    # a detector with a class mean per label... the tiny bundle has more labels than the 2 fitted here
    with pytest.raises(ManifestError, match="class means for"):
        OutOfScope.from_bundle(write(detector.to_entry("out_of_scope.npz"), {"out_of_scope.npz": npz}))
    with pytest.raises(ManifestError, match="is not listed in files"):
        OutOfScope.from_bundle(write(detector.to_entry("missing.npz")))
    with pytest.raises(ManifestError, match="method 'mahalanobis'"):
        OutOfScope.from_bundle(write({"method": "energy"}))
    assert OutOfScope.from_bundle(Bundle.load(bundle.root)) is None
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["out_of_scope"] == {"method": "energy"}


def _vector_bundles(tmp_path, tiny_bundle):
    """Two bundles of one tiny model whose output is ``[logits | pooled vector]`` with one fitted detector: ``old``
    has the file alone (as written before ``in_graph``), ``new`` also has the score in the graph."""
    import onnx
    from onnx import TensorProto, helper

    from cloud.oos import add_score_to_graph, fit_detector, save_detector
    from edge_runtime.bundle import write_bundle
    from edge_runtime.tokenizer import IntentTokenizer

    bundle, weights = tiny_bundle
    m = bundle.manifest
    k, dim = len(m.labels), weights["emb"].shape[1]
    model = onnx.load(str(bundle.path_of("model.onnx")))
    model.graph.node.append(helper.make_node("Concat", ["logits", "pooled"], ["logits_features"], axis=1))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("logits_features", TensorProto.FLOAT, ["batch", k + dim]))
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(model, str(src / "model.onnx"))
    # fitted on the model's own vectors of a few texts (labels assigned in turn)
    tok = IntentTokenizer(bundle.path_of(m.tokenizer), m.max_length)
    import onnxruntime as ort

    session = ort.InferenceSession(str(src / "model.onnx"), providers=["CPUExecutionProvider"])
    enc = tok.encode(TEXTS * 3)
    vectors = session.run(None, enc.feeds(("input_ids", "attention_mask")))[0][:, k:]
    detector, _ = fit_detector(vectors, [i % k for i in range(len(vectors))], k, vectors, flag_rate=0.2)
    npz = save_detector(detector, src / "out_of_scope.npz")
    files = {"model.onnx": src / "model.onnx", "tokenizer.json": bundle.path_of(m.tokenizer), "out_of_scope.npz": npz}

    def write(name, det, model_file):
        return write_bundle(tmp_path / name, files={**files, "model.onnx": model_file}, name=m.name,
                            version=m.version, labels=m.labels, max_length=m.max_length, tokenizer=m.tokenizer,
                            backends={"onnxruntime": {"file": "model.onnx"}},
                            extra={"out_of_scope": det.to_entry("out_of_scope.npz")})

    old = write("old", detector, src / "model.onnx")
    graph_model = tmp_path / "graph" / "model.onnx"
    graph_model.parent.mkdir()
    onnx.save(model, str(graph_model))
    new = write("new", add_score_to_graph(graph_model, detector, k), graph_model)
    return old, new


TEXTS = ["play some jazz", "book a table for two", "will it rain tomorrow", "add this song to my playlist",
         "rate this book five stars", "", "zzz qqq", "find the movie schedule", "a much longer text about the weather"]


def test_the_score_in_the_graph_agrees_with_the_numpy_path_and_does_not_depend_on_the_batch(tmp_path, tiny_bundle):
    from edge_runtime import IntentClassifier

    # Given the same model and detector, with the score in the graph (new) and in numpy only (old)
    old, new = _vector_bundles(tmp_path, tiny_bundle)
    assert OutOfScope.from_bundle(old).graph is None
    assert OutOfScope.from_bundle(new).graph.to_entry() == {"output": "logits_oos", "backends": ["onnxruntime"]}
    with IntentClassifier.from_bundle(old.root, threads=1) as a, IntentClassifier.from_bundle(new.root, threads=1) as b:
        # Then the old bundle keeps the numpy path and the new one reads [logits | score] from the same run
        assert not a.score_in_graph and b.score_in_graph and b.backend.output_name == "logits_oos"
        k = len(b.labels)
        full = a._outputs(TEXTS)
        graph = b._outputs(TEXTS)
        assert graph.shape == (len(TEXTS), k + 1)
        np.testing.assert_array_equal(graph[:, :k], full[:, :k])
        np.testing.assert_allclose(graph[:, k], a.detector.scores(full[:, k:]), rtol=1e-4, atol=1e-6)
        # And a text's score is the same alone and in any batch
        alone = np.concatenate([b._outputs([t]) for t in TEXTS])
        np.testing.assert_allclose(alone, graph, rtol=1e-6, atol=1e-6)
        # (this FP32 toy sums padded positions in another order, so confidences may differ in the last bits)
        intents = [p.intent for p in b.predict_batch(TEXTS)]
        assert intents == [b.predict(t).intent for t in TEXTS] == [p.intent for p in a.predict_batch(TEXTS)]
        flagged = [p.intent == "unknown" for p in b.predict_batch(TEXTS)]
        assert any(flagged) and not all(flagged), "the detector must decide both ways on these texts"
        assert np.array_equal(np.array(flagged), graph[:, k] > b.detector.threshold)


def test_a_runtime_reading_the_first_output_keeps_the_numpy_path_on_a_new_bundle(tmp_path, tiny_bundle):
    # An older runtime (or a backend not listed in in_graph, such as a Neo/DLR artifact) reads the first output,
    # [logits | features], and the file: the same answers
    from edge_runtime import IntentClassifier
    from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_runtime.tokenizer import IntentTokenizer

    _, new = _vector_bundles(tmp_path, tiny_bundle)
    tok = IntentTokenizer(new.path_of(new.manifest.tokenizer), new.manifest.max_length)
    first = IntentClassifier(new, OnnxRuntimeBackend(new.path_of("model.onnx"), threads=1), tok)
    with first, IntentClassifier.from_bundle(new.root, threads=1) as graph:
        assert not first.score_in_graph and first.detector.graph is not None
        assert first.predict_batch(TEXTS) == graph.predict_batch(TEXTS)  # one batch each: the same logits


def test_the_in_graph_entry_is_checked(tmp_path, tiny_bundle):
    from edge_runtime import IntentClassifier
    from edge_runtime.bundle import Bundle, write_bundle
    from edge_runtime.errors import BackendError

    _, new = _vector_bundles(tmp_path, tiny_bundle)
    m = new.manifest

    def rewrite(in_graph):
        entry = {**m.extra["out_of_scope"], "in_graph": in_graph}
        return write_bundle(tmp_path / "bad", files={rel: new.path_of(rel) for rel in m.files}, name=m.name,
                            version=m.version, labels=m.labels, max_length=m.max_length, tokenizer=m.tokenizer,
                            backends=m.backends, extra={"out_of_scope": entry})

    for bad in ("logits_oos", {"output": "logits_oos"}, {"output": "", "backends": ["onnxruntime"]},
                {"output": "logits_oos", "backends": "onnxruntime"}, {"output": 3, "backends": []}):
        with pytest.raises(ManifestError, match="in_graph must be an object"):
            IntentClassifier.from_bundle(rewrite(bad).root, threads=1)
    # an output the model does not have: the backend says so at load
    with pytest.raises(BackendError, match="has no output 'scores'"):
        IntentClassifier.from_bundle(rewrite({"output": "scores", "backends": ["onnxruntime"]}).root, threads=1)
    # the score in another backend's graph only: onnxruntime takes the first output and the numpy path
    with IntentClassifier.from_bundle(rewrite({"output": "logits_oos", "backends": ["dlr"]}).root, threads=1) as clf:
        assert not clf.score_in_graph and clf.backend.output_name == "logits_features"
        assert clf.predict_batch(TEXTS) == IntentClassifier.from_bundle(Bundle.load(new.root), threads=1).predict_batch(TEXTS)


def test_a_batched_text_at_the_threshold_is_decided_alone(tmp_path, tiny_bundle):
    # The graph's score can differ in its last bits between batch sizes; a text that close to the threshold gets
    # the answer it gets alone, in any batch.
    from edge_runtime import IntentClassifier

    _, new = _vector_bundles(tmp_path, tiny_bundle)
    with IntentClassifier.from_bundle(new.root, threads=1, max_batch=len(TEXTS)) as clf:  # all texts in one run
        k, t = len(clf.labels), clf.detector.threshold
        real = clf.backend.run

        def run(feeds):  # batch 1: just under the threshold; in a batch the same text lands just above it
            out = real(feeds).copy()
            out[:, k] = t * (1 - 1e-7) if len(out) == 1 else t * (1 + 1e-7)
            return out

        clf.backend.run = run
        alone = [clf.predict(text).intent for text in TEXTS]
        assert "unknown" not in alone
        assert [p.intent for p in clf.predict_batch(TEXTS)] == alone
        # far from the threshold the batch's own score decides (no extra runs)
        calls = []
        clf.backend.run = lambda feeds: calls.append(len(feeds["input_ids"])) or _far(real(feeds), k, t)
        assert all(p.intent == "unknown" for p in clf.predict_batch(TEXTS)) and calls == [len(TEXTS)]


def _far(out, k, t):
    out = out.copy()
    out[:, k] = 2 * t
    return out
