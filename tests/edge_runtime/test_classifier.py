"""IntentClassifier on a real (tiny) ONNX bundle: answers equal a NumPy reference, batch-independent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime import BackendError, BundleError, InputError, IntentClassifier, Prediction
from tests.conftest import LABELS, build_tiny_bundle, reference_logits

TEXTS = ["add this song to my playlist", "book a table for two tonight", "will it rain in new york",
         "play some jazz", "rate this novel five stars", "find the movie schedule", "", "жж unknown words"]


@pytest.fixture(scope="module")
def clf(tiny_bundle):
    with IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1) as c:
        yield c


def test_predictions_equal_the_reference_computation(clf, tiny_bundle):
    _, weights = tiny_bundle
    enc = clf.tokenizer.encode(TEXTS)
    logits = reference_logits(weights, enc.input_ids, enc.attention_mask)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for text, p, pred in zip(TEXTS, probs, clf.predict_batch(TEXTS)):
        assert pred.intent == LABELS[int(p.argmax())], text
        assert pred.confidence == pytest.approx(float(p.max()), rel=1e-5)


def test_predict_batch_gives_each_text_the_answer_predict_gives_it(clf):
    single = [clf.predict(t) for t in TEXTS]
    batched = clf.predict_batch(TEXTS)
    assert [p.intent for p in batched] == [p.intent for p in single]
    for a, b in zip(single, batched):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-6)


def test_batches_larger_than_max_batch_are_split(tiny_bundle):
    with IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1, max_batch=3) as c:
        assert [p.intent for p in c.predict_batch(TEXTS)] == [c.predict(t).intent for t in TEXTS]


def test_top_k_is_sorted_and_json_ready(clf):
    pred = clf.predict("play some jazz")
    assert isinstance(pred, Prediction) and len(pred.top) == 3
    scores = [s for _, s in pred.top]
    assert scores == sorted(scores, reverse=True) and pred.top[0] == (pred.intent, pred.confidence)
    data = json.loads(json.dumps(pred.to_dict()))
    assert data["intent"] == pred.intent and len(data["top"]) == 3
    with pytest.raises(AttributeError):
        pred.intent = "x"  # frozen


def test_low_confidence_maps_to_unknown(tiny_bundle):
    with IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1,
                                      threshold=1.01, unknown_intent="none") as c:
        pred = c.predict("play some jazz")
    assert pred.intent == "none" and pred.top[0][0] in LABELS


def test_empty_batch_and_wrong_types(clf):
    assert clf.predict_batch([]) == []
    with pytest.raises(InputError):
        clf.predict_batch("play jazz")
    with pytest.raises(InputError):
        clf.predict(None)  # type: ignore[arg-type]


def test_labels_not_matching_the_model_output_are_refused(tmp_path):
    # Given a bundle whose manifest lists 3 labels for a model with 7 outputs
    bundle, _ = build_tiny_bundle(tmp_path / "b")
    manifest = json.loads((bundle.root / "manifest.json").read_text())
    manifest["labels"] = ["a", "b", "c"]
    (bundle.root / "manifest.json").write_text(json.dumps(manifest))
    # When it is loaded, Then a BundleError names both counts
    with pytest.raises(BundleError, match="outputs 7 scores but the manifest has 3 labels"):
        IntentClassifier.from_bundle(bundle.root, backend="onnxruntime")


def test_use_after_close_raises(tiny_bundle):
    c = IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1)
    c.close()
    with pytest.raises(BackendError, match="closed"):
        c.predict("play jazz")


def test_fake_backend_is_deterministic_and_batch_independent(tiny_bundle):
    with IntentClassifier.from_bundle(tiny_bundle[0].root, backend="fake") as c:
        a = [c.predict(t) for t in TEXTS]
        b = c.predict_batch(TEXTS)
        assert a == b
        assert c.backend.name == "fake"
