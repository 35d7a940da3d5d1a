"""Export, static INT8 quantization and the bundle the compile step writes (on a tiny BERT)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cloud.compile import QuantizationConfig, compile_bundle, export_onnx, onnx_logits  # noqa: E402
from edge_runtime import Bundle, IntentClassifier  # noqa: E402
from tests.conftest import LABELS  # noqa: E402

TEXTS = ["add song 12 to my playlist", "book a table for four people tonight", "will it rain in new york",
         "play jazz", "rate this book five stars", "find the movie called 7", "show the movie schedule at cinema 3",
         "", "a much longer utterance about the weather in the city of new york tomorrow please", "жж"]


@pytest.fixture(scope="module")
def classifier_checkpoint(tiny_base_model, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("ckpt")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_base_model, num_labels=len(LABELS))
    model.save_pretrained(out)
    shutil.copyfile(tiny_base_model / "tokenizer.json", out / "tokenizer.json")
    return out


def test_exported_onnx_matches_pytorch_on_a_padded_batch(classifier_checkpoint, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from cloud.train import predict_logits, tokenize

    model = AutoModelForSequenceClassification.from_pretrained(classifier_checkpoint, attn_implementation="eager")
    path = export_onnx(model, tmp_path / "m.onnx")
    onnx_out = onnx_logits(path, classifier_checkpoint / "tokenizer.json", 24, TEXTS, batch_size=len(TEXTS), threads=1)
    torch_out = predict_logits(model, tokenize(TEXTS, classifier_checkpoint / "tokenizer.json", 24))
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-4)


@pytest.mark.parametrize("fmt, expected_ops", [
    ("QOperator", {"QAttention", "MatMulIntegerToFloat", "QuantizeLinear", "SkipLayerNormalization"}),
    ("QDQ", {"QuantizeLinear", "DequantizeLinear", "MatMul"}),
])
def test_static_int8_bundle_is_batch_independent_and_close_to_fp32(classifier_checkpoint, tmp_path, fmt, expected_ops):
    # Given a bundle compiled with static scales in either format
    res = compile_bundle(classifier_checkpoint, tmp_path / "edge" / "1", version="1", name="tiny", labels=LABELS,
                         max_length=24, calibration_texts=TEXTS * 3, check_texts=TEXTS,
                         quantization=QuantizationConfig(format=fmt), min_agreement=0.0, work_dir=tmp_path / "w")
    # Then it is a valid bundle with an INT8 model much smaller than FP32, and a zip beside it
    bundle = Bundle.load(res.bundle_dir)
    q = bundle.manifest.backends["onnxruntime"]["quantization"]
    assert q["scheme"] == "static" and q["batch_independent"] is True
    assert res.bundle_zip.is_file() and res.int8_bytes < res.fp32_bytes
    import onnx

    ops = {n.op_type for n in onnx.load(str(res.bundle_dir / "model.int8.onnx")).graph.node}
    assert expected_ops <= ops, ops
    assert "DynamicQuantizeLinear" not in ops, "no activation scale may be computed per batch"
    # And When texts are classified one by one and as one padded batch, every answer is identical
    with IntentClassifier.from_bundle(res.bundle_dir, threads=1) as clf:
        single = [clf.predict(t) for t in TEXTS]
        batched = clf.predict_batch(TEXTS)
        assert single == batched
        probs = clf.probabilities(TEXTS)
    fp32 = onnx_logits(res.fp32_onnx, classifier_checkpoint / "tokenizer.json", 24, TEXTS)
    fp32_probs = np.exp(fp32) / np.exp(fp32).sum(1, keepdims=True)
    assert np.abs(probs - fp32_probs).max() < 0.05


def test_a_dynamic_int8_bundle_is_run_one_text_at_a_time(classifier_checkpoint, tmp_path):
    # Given a dynamically quantized bundle (activation scales depend on the whole batch)
    res = compile_bundle(classifier_checkpoint, tmp_path / "b", version="1", name="tiny", labels=LABELS, max_length=24,
                         calibration_texts=[], check_texts=TEXTS, quantization=QuantizationConfig(scheme="dynamic"),
                         min_agreement=0.0, work_dir=tmp_path / "w")
    manifest = json.loads((res.bundle_dir / "manifest.json").read_text())
    assert manifest["backends"]["onnxruntime"]["quantization"]["batch_independent"] is False
    # Then the classifier runs texts alone, so batching still changes no answer
    with IntentClassifier.from_bundle(res.bundle_dir, threads=1) as clf:
        assert clf.batch_independent is False
        assert clf.predict_batch(TEXTS) == [clf.predict(t) for t in TEXTS]


def test_low_agreement_stops_the_compile(classifier_checkpoint, tmp_path):
    from cloud.errors import CompileError

    with pytest.raises(CompileError, match="INT8 agrees with FP32"):
        compile_bundle(classifier_checkpoint, tmp_path / "b", version="1", name="tiny", labels=LABELS, max_length=24,
                       calibration_texts=TEXTS, check_texts=TEXTS, quantization=QuantizationConfig.arm64(),
                       min_agreement=1.01, work_dir=tmp_path / "w")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("config, message", [
    (QuantizationConfig(format="QOperator", calibration_method="Entropy"), "calibrates with MinMax"),
    (QuantizationConfig(format="QLinear"), "unknown quantization format 'QLinear'"),
])
def test_an_unsupported_quantization_setting_is_refused(classifier_checkpoint, tmp_path, config, message):
    from cloud.errors import CompileError

    with pytest.raises(CompileError, match=message):
        compile_bundle(classifier_checkpoint, tmp_path / "b", version="1", name="tiny", labels=LABELS, max_length=24,
                       calibration_texts=TEXTS, check_texts=TEXTS, quantization=config, work_dir=tmp_path / "w")
    assert not (tmp_path / "b").exists()


def test_label_count_mismatch_is_refused(classifier_checkpoint, tmp_path):
    from cloud.errors import CompileError

    with pytest.raises(CompileError, match="7 outputs"):
        compile_bundle(classifier_checkpoint, tmp_path / "b", version="1", name="tiny", labels=["a", "b"], max_length=24,
                       calibration_texts=TEXTS, check_texts=TEXTS, quantization=QuantizationConfig.arm64())


def test_mean_pooling_head_trains_exports_and_matches_pytorch(tiny_base_model, tmp_path):
    # Given a mean-pooling classifier saved and reloaded
    from cloud.modeling import build_classifier, load_classifier
    from cloud.train import predict_logits, tokenize

    torch.manual_seed(0)
    model = build_classifier(tiny_base_model, LABELS, "mean")
    model.save_pretrained(tmp_path / "ckpt")
    shutil.copyfile(tiny_base_model / "tokenizer.json", tmp_path / "ckpt" / "tokenizer.json")
    reloaded = load_classifier(tmp_path / "ckpt", eager=True)
    assert type(reloaded).__name__ == "BertMeanPoolForSequenceClassification"
    # When exported, Then ONNX gives PyTorch's logits on a padded batch, and padding does not change a text's logits
    path = export_onnx(reloaded, tmp_path / "m.onnx")
    tok = tmp_path / "ckpt" / "tokenizer.json"
    onnx_out = onnx_logits(path, tok, 24, TEXTS, batch_size=len(TEXTS), threads=1)
    np.testing.assert_allclose(onnx_out, predict_logits(reloaded, tokenize(TEXTS, tok, 24)), atol=1e-4)
    alone = np.concatenate([onnx_logits(path, tok, 24, [t], threads=1) for t in TEXTS])
    np.testing.assert_allclose(onnx_out, alone, atol=1e-5)


def test_the_bundle_carries_an_out_of_scope_detector_fitted_on_training_rows(classifier_checkpoint, tmp_path):
    # Given training rows for the detector and validation texts for its threshold
    from edge_runtime import IntentClassifier

    rows = [(t, LABELS[i % len(LABELS)]) for i, t in enumerate(TEXTS * 4)]
    res = compile_bundle(classifier_checkpoint, tmp_path / "b", version="1", name="tiny", labels=LABELS, max_length=24,
                         calibration_texts=TEXTS, check_texts=TEXTS * 2, quantization=QuantizationConfig.arm64(),
                         min_agreement=0.0, work_dir=tmp_path / "w", oos_rows=rows, oos_flag_rate=0.1, oos_layer=2)
    # Then the manifest names the detector's file (listed and hashed) and a threshold set on the validation texts
    bundle = Bundle.load(res.bundle_dir)
    entry = bundle.manifest.extra["out_of_scope"]
    assert entry["method"] == "mahalanobis" and entry["file"] in bundle.manifest.files and entry["layer"] == 2
    assert entry["train_texts"] == len(rows) and entry["val_texts"] == len(TEXTS) * 2
    assert entry["val_flag_rate"] <= 0.1 + 1e-9 and np.isfinite(entry["threshold"])
    # and the device reads logits and sentence vector from the one output; the decision changes only the intent
    with IntentClassifier.from_bundle(bundle.root, threads=1) as on, \
            IntentClassifier.from_bundle(bundle.root, threads=1, out_of_scope=False) as off:
        assert on.detector is not None and on.detector.features == 32
        a, b = on.predict_batch(TEXTS * 2), off.predict_batch(TEXTS * 2)
        assert [p.top for p in a] == [p.top for p in b]
        flagged = [x.intent == "unknown" for x in a]
        assert sum(flagged) <= 1 + 0.1 * len(a) and not any(x.intent == "unknown" for x in b)
        assert on.probabilities(TEXTS).shape == (len(TEXTS), len(LABELS))
    # and the INT8 model computes the score itself (a second output, checked against the numpy path at compile);
    # its first output is still [logits | vector] for a runtime that reads the file
    assert entry["in_graph"] == {"output": "logits_oos", "backends": ["onnxruntime"]}
    assert 0.0 <= entry["graph_score_max_rel_diff"] <= 1e-4
    import onnxruntime as ort

    from edge_runtime.oos import OutOfScope
    from edge_runtime.tokenizer import IntentTokenizer

    detector = OutOfScope.from_bundle(bundle)
    session = ort.InferenceSession(str(bundle.path_of("model.int8.onnx")), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["logits_features", "logits_oos"]
    tok = IntentTokenizer(bundle.path_of("tokenizer.json"), 24)
    feeds = tok.encode(TEXTS).feeds([i.name for i in session.get_inputs()])
    full, graph = session.run(names, feeds)
    k = len(LABELS)
    np.testing.assert_allclose(graph[:, k], detector.scores(full[:, k:]), rtol=1e-4)
    alone = np.concatenate([session.run(["logits_oos"], tok.encode([t]).feeds(list(feeds)))[0] for t in TEXTS])
    # static INT8: the logits do not depend on the batch; the FP32 score's MatMul may round differently for one row
    # than for ten (measured: 5e-7 relative), far inside the agreement with the numpy path
    np.testing.assert_array_equal(alone[:, :k], graph[:, :k])
    np.testing.assert_allclose(alone[:, k], graph[:, k], rtol=1e-6)
    with IntentClassifier.from_bundle(bundle.root, threads=1) as clf:
        assert clf.score_in_graph
        assert clf.predict_batch(TEXTS) == [clf.predict(t) for t in TEXTS] == a[:len(TEXTS)]


def test_the_out_of_scope_layer_must_exist(classifier_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="layer must be 1..2, got 3"):
        compile_bundle(classifier_checkpoint, tmp_path / "b", version="1", name="tiny", labels=LABELS, max_length=24,
                       calibration_texts=TEXTS, check_texts=TEXTS, quantization=QuantizationConfig.arm64(),
                       work_dir=tmp_path / "w", oos_rows=[(t, LABELS[0]) for t in TEXTS], oos_layer=3)
