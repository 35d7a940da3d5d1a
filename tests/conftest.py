"""Shared fixtures: tiny tokenizers, ONNX models and bundles built here (no downloads, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SNIPS = REPO.parent / "shared" / "data" / "snips"
LABELS = ("AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook", "SearchCreativeWork",
          "SearchScreeningEvent")
WORDS = (
    "add play book rate find search show weather rain snow jazz song album playlist table restaurant "
    "for two four people tonight tomorrow in at the a to my me of movie film cinema schedule stars "
    "book novel five three what will be is it new york city please some music"
).split()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-aws", action="store_true", help="run tests that need real AWS credentials")
    parser.addoption("--run-arm64", action="store_true", help="run tests under QEMU aarch64")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker in ("slow", "aws", "arm64"):
        if config.getoption(f"--run-{marker}"):
            continue
        skip = pytest.mark.skip(reason=f"marked {marker}; run with --run-{marker}")
        for item in items:
            # A marker, not a keyword: keywords also hold directory names (tests/cloud/aws/ is not all "aws").
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)


def write_tiny_tokenizer(path: Path) -> Path:
    """A BERT-style WordPiece tokenizer.json over a small vocabulary (letters give word-piece fallback)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    vocab_list = list(dict.fromkeys(specials + sorted(set(WORDS)) + letters + ["##" + c for c in letters]))
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    # Like the packaged MiniLM file: fixed padding and truncation built in, which the runtime must undo.
    tok.enable_padding(length=128, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(128)
    tok.save(str(path))
    return path


def tiny_weights(vocab_size: int, num_labels: int, dim: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"emb": rng.normal(size=(vocab_size, dim)).astype(np.float32),
            "w": rng.normal(size=(dim, num_labels)).astype(np.float32),
            "b": rng.normal(size=(num_labels,)).astype(np.float32)}


def reference_logits(weights: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What the tiny ONNX model computes: masked mean of embeddings, then a linear layer."""
    m = mask.astype(np.float32)[:, :, None]
    pooled = (weights["emb"][ids] * m).sum(1) / np.maximum(m.sum(1), 1.0)
    return pooled @ weights["w"] + weights["b"]


def write_tiny_onnx(path: Path, weights: dict[str, np.ndarray], with_token_types: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])]
    if with_token_types:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"]))
    num_labels = weights["w"].shape[1]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["h"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
        helper.make_node("Mul", ["h", "m3"], ["hm"]),
        helper.make_node("ReduceSum", ["hm", "axis1"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "axis1"], ["n"], keepdims=0),
        helper.make_node("Max", ["n", "one"], ["n1"]),
        helper.make_node("Div", ["s", "n1"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "w"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(weights["emb"], "emb"), numpy_helper.from_array(weights["w"], "w"),
             numpy_helper.from_array(weights["b"], "b"), numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([1.0], np.float32), "one")]
    graph = helper.make_graph(nodes, "tiny", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_labels])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_tiny_bundle(root: Path, *, labels=LABELS, seed: int = 0, max_length: int = 16, version: str = "1",
                      with_token_types: bool = False, backends: dict | None = None):
    """A real bundle (tokenizer + ONNX model) with known weights; returns (bundle, weights)."""
    from edge_runtime.bundle import write_bundle

    work = root.parent / (root.name + "-src")
    work.mkdir(parents=True, exist_ok=True)
    tok_path = write_tiny_tokenizer(work / "tokenizer.json")
    vocab_size = json.loads(tok_path.read_text())["model"]["vocab"].__len__()
    weights = tiny_weights(vocab_size, len(labels), seed=seed)
    model_path = write_tiny_onnx(work / "model.onnx", weights, with_token_types)
    bundle = write_bundle(
        root, files={"model.onnx": model_path, "tokenizer.json": tok_path}, name="tiny", version=version,
        labels=list(labels), max_length=max_length, tokenizer="tokenizer.json",
        backends=backends or {"onnxruntime": {"file": "model.onnx", "quantization": {"scheme": "none"}},
                              "fake": {"seed": seed}},
        metrics={"accuracy": 0.5}, lineage={"base_model": "tiny"}, reference={"label_distribution": {}},
    )
    return bundle, weights


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory):
    """(bundle, weights) of a read-only tiny bundle shared by the session; copy it before changing it."""
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0].root, dst)
    return dst
