"""The pipeline's steps, one function each: typed inputs in, a frozen result with ``to_dict()`` out.

    prepare -> validate -> train -> distill -> compile -> evaluate -> gate -> register -> package

``distill`` (a shallower student taught by the trained model) is skipped when ``distill.layers`` is 0: the trained
model itself is compiled and ships.

Two runners call these functions and nothing else does the work: :class:`cloud.pipeline.LocalPipeline` (local
store, SQLite registry, step caching) and :mod:`cloud.aws.steps` (the SageMaker jobs, on SageMaker's paths).
Every step reads its parameters from :class:`cloud.params.Params`; a runner that needs another value (the
SageMaker training job's thread count) passes ``params.override({...})``. Adding a step is one function here
plus one line in each runner (docs/architecture.md).

Heavy imports (torch, Great Expectations, ONNX Runtime) happen inside the steps that need them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .params import GateParams, Params

if TYPE_CHECKING:
    from .compile import CompileResult
    from .data import PrepareResult
    from .registry.base import Registry
    from .train import TrainResult

__all__ = [
    "across_classes",
    "EvaluateResult",
    "GateResult",
    "PackageResult",
    "RegisterResult",
    "ValidateResult",
    "compile_model",
    "compile_step",
    "distill_step",
    "evaluate_step",
    "gate_result",
    "gate_step",
    "package_step",
    "prepare_step",
    "register_step",
    "registry_metrics",
    "train_step",
    "validate_step",
]


# ------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ValidateResult:
    """The validation passed: where its report and Data Docs are, and how many expectations it checked."""

    dir: Path
    expectations: int
    passed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "passed": self.passed, "expectations": self.expectations}


@dataclass(frozen=True)
class EvaluateResult:
    """``metrics`` is ``metrics.json`` (FP32 and INT8 scores, agreement, batch consistency, reference statistics)."""

    dir: Path
    metrics: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "metrics": dict(self.metrics)}


@dataclass(frozen=True)
class GateResult:
    """The quality gate's verdict on INT8 macro-F1 and the FP32 -> INT8 drop (``problems`` says why it failed)."""

    passed: bool
    int8_macro_f1: float
    fp32_macro_f1: float
    int8_drop: float
    min_macro_f1: float
    max_int8_drop: float
    int8_accuracy: float = 0.0
    min_accuracy: float = 0.0
    agreement: float | None = None
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["problems"] = list(self.problems)
        return d


@dataclass(frozen=True)
class RegisterResult:
    group: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "version": self.version}


@dataclass(frozen=True)
class PackageResult:
    """The edge bundle ``<edge>/<version>/`` and its zip ``<edge>/<version>.zip`` (the Greengrass artifact)."""

    bundle: Path
    zip: Path
    zip_sha256: str
    zip_mb: float
    backends: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "zip": str(self.zip), "zip_sha256": self.zip_sha256,
                "zip_mb": self.zip_mb, "backends": list(self.backends)}


# ------------------------------------------------------------------------------------------- the steps


def prepare_step(data: Path, out: Path, params: Params) -> "PrepareResult":
    """Read SNIPS or a CSV from ``data``; write ``out/raw/`` and ``out/processed/{train,val,test}.csv``."""
    from .data import prepare

    return prepare(data, out, params)


def validate_step(processed: Path, out: Path, params: Params, *, source: str | None = None) -> ValidateResult:
    """Great Expectations on the processed splits; raises :class:`~cloud.errors.ValidationFailed` with a report."""
    from .validate import validate

    result = validate(processed, out, params, source=source)
    return ValidateResult(Path(out), len(result.expectations), result.passed)


def train_step(processed: Path, out: Path, params: Params, *, progress: bool = False,
               teacher: Path | Sequence[Path] | None = None) -> "TrainResult":
    """Fine-tune on ``processed/train.csv`` (and its slot tags), choose the epoch on ``val.csv``; write ``out``.

    ``teacher``: train the ``distill`` section's student of that fine-tuned checkpoint (or the mean of several)."""
    from .data import read_slots, read_split_csv
    from .train import train

    processed = Path(processed)
    return train(read_split_csv(processed / "train.csv"), read_split_csv(processed / "val.csv"), params.labels,
                 Path(out), params.train, progress=progress, slots=read_slots(processed),
                 unseen=params.data.unseen_labels, teacher=teacher, distill=params.distill if teacher else None)


def distill_step(teacher: Path | Sequence[Path], processed: Path, out: Path, params: Params, *,
                 progress: bool = False) -> "TrainResult":
    """The ``distill.layers``-deep student of the fine-tuned ``teacher``, trained on ``processed/train.csv`` with the
    teacher's logits, its epoch chosen on ``val.csv`` like the teacher's; written to ``out``."""
    return train_step(processed, out, params, progress=progress, teacher=teacher)


def compile_model(model_dir: Path, out: Path, params: Params, *, version: str, texts: Sequence[str],
                  work_dir: Path | None = None,
                  train_rows: Sequence[tuple[str, str]] | None = None) -> "CompileResult":
    """The one mapping of params onto :func:`cloud.compile.compile_bundle` (``texts`` calibrate and check INT8;
    ``train_rows`` fit the out-of-scope detector when ``compile.out_of_scope`` asks for one)."""
    from .compile import compile_bundle

    c = params.compile
    known = set(params.labels)
    oos_rows = [r for r in train_rows or () if r[1] in known] if c.out_of_scope == "mahalanobis" else None
    return compile_bundle(model_dir, out, version=version, name=params.model_name, labels=params.labels,
                          max_length=params.train.max_length, calibration_texts=texts, check_texts=texts,
                          quantization=c.quantization, min_agreement=c.min_agreement, opset=c.opset,
                          exporter=c.exporter, work_dir=work_dir, target=c.target, oos_rows=oos_rows or None,
                          oos_flag_rate=c.oos_flag_rate, oos_layer=oos_layer_of(model_dir, c.oos_layer))


def oos_layer_of(model_dir: Path, layer: int) -> int:
    """The layer of ``model_dir`` that stands for ``compile.oos_layer`` (counted in the six-layer model): the model's
    own, or for a distilled student the layer that started from the teacher layer nearest to it (ties: the lower)."""
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text())
    origin = config.get("distilled_from_layers")
    if not origin:
        return layer
    return 1 + min(range(len(origin)), key=lambda i: (abs(origin[i] - layer), origin[i]))


def compile_step(model_dir: Path, processed: Path, out: Path, params: Params, *, version: str,
                 work_dir: Path | None = None) -> "CompileResult":
    """ONNX export, static INT8 calibrated on the validation texts, agreement check, candidate bundle in ``out``.

    The texts are taken across all classes in turn, so the first ``calibration_samples`` of them (the calibration
    set) cover every intent: SNIPS' validation file is grouped by intent, and its first 300 texts hold only 3 of 7.
    """
    from .data import read_split_csv

    texts = across_classes(read_split_csv(Path(processed) / "val.csv"))
    return compile_model(model_dir, out, params, version=version, texts=texts, work_dir=work_dir,
                         train_rows=read_split_csv(Path(processed) / "train.csv"))


def across_classes(rows: Sequence[tuple[str, str]]) -> list[str]:
    """The texts of ``rows`` in round-robin order over their labels (file order within a label).

    >>> across_classes([("a1", "A"), ("a2", "A"), ("b1", "B")])
    ['a1', 'b1', 'a2']
    """
    by_label: dict[str, list[str]] = {}
    for text, label in rows:
        by_label.setdefault(label, []).append(text)
    queues = [iter(v) for _, v in sorted(by_label.items())]
    out: list[str] = []
    while queues:
        alive = []
        for q in queues:
            text = next(q, None)
            if text is not None:
                out.append(text)
                alive.append(q)
        queues = alive
    return out


def evaluate_step(model_dir: Path, bundle: Path, processed: Path, out: Path, params: Params,
                  *, threads: int | None = None, teacher: Path | None = None) -> EvaluateResult:
    """Score the FP32 checkpoint and the INT8 bundle (device path) on ``test.csv``; write ``out/metrics.json``.

    ``teacher``: the model a distilled ``model_dir`` learned from, scored too (``teacher_fp32``)."""
    from .data import read_split_csv
    from .evaluate import evaluate

    processed = Path(processed)
    val = read_split_csv(processed / "val.csv") if (processed / "val.csv").is_file() else []
    metrics = evaluate(model_dir, bundle, read_split_csv(processed / "test.csv"), params.labels, Path(out),
                       val_texts=[t for t, _ in val], bootstrap_samples=params.evaluate.bootstrap_samples,
                       seed=params.evaluate.seed, max_length=params.train.max_length, threads=threads,
                       unseen=params.data.unseen_labels, teacher_dir=teacher)
    return EvaluateResult(Path(out), metrics)


def gate_result(metrics: Mapping[str, Any], gate: GateParams) -> GateResult:
    """The gate's verdict (never raises): INT8 macro-F1 >= ``min_macro_f1``, INT8 accuracy >= ``min_accuracy``,
    FP32 - INT8 macro-F1 <= ``max_int8_drop``.

    The SageMaker job writes it as ``gate.json``; the pipeline's ConditionStep compares the same two figures.
    """
    f1_int8, f1_fp32 = float(metrics["int8"]["macro_f1"]), float(metrics["fp32"]["macro_f1"])
    acc_int8 = float(metrics["int8"]["accuracy"])
    drop = f1_fp32 - f1_int8
    problems = []
    if f1_int8 < gate.min_macro_f1:
        problems.append(f"INT8 macro-F1 {f1_int8:.4f} is below the threshold {gate.min_macro_f1:.4f}")
    if acc_int8 < gate.min_accuracy:
        problems.append(f"INT8 accuracy {acc_int8:.4f} is below the threshold {gate.min_accuracy:.4f}")
    if drop > gate.max_int8_drop:
        problems.append(f"INT8 macro-F1 is {drop:.4f} below FP32 ({f1_fp32:.4f}); "
                        f"at most {gate.max_int8_drop:.4f} allowed")
    return GateResult(not problems, f1_int8, f1_fp32, drop, gate.min_macro_f1, gate.max_int8_drop,
                      int8_accuracy=acc_int8, min_accuracy=gate.min_accuracy, agreement=metrics.get("agreement"),
                      problems=tuple(problems))


def gate_step(metrics: Mapping[str, Any], gate: GateParams) -> GateResult:
    """:func:`gate_result`, raising :class:`~cloud.errors.GateFailed` when the model does not pass."""
    from .errors import GateFailed

    result = gate_result(metrics, gate)
    if not result.passed:
        raise GateFailed("quality gate failed: " + "; ".join(result.problems))
    return result


def registry_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What the registry and the bundle record of ``metrics.json``: FP32/INT8 accuracy, macro-F1, CI, agreement."""
    out: dict[str, Any] = {k: {"accuracy": metrics[k]["accuracy"], "macro_f1": metrics[k]["macro_f1"],
                               "ci95": metrics[k].get("ci95")} for k in ("fp32", "int8", "teacher_fp32")
                           if k in metrics}
    if "agreement" in metrics:
        out["agreement"] = metrics["agreement"]
    return out


def register_step(registry: "Registry", params: Params, *, metrics: Mapping[str, Any], lineage: Mapping[str, Any],
                  artifacts: Mapping[str, str], description: str = "") -> RegisterResult:
    """A new version in ``params.model_package_group`` (PendingManualApproval / Staging)."""
    pkg = registry.register(params.model_package_group, registry_metrics(metrics), dict(lineage), dict(artifacts),
                            description=description)
    return RegisterResult(pkg.group, int(pkg.version))


def package_step(candidate: Path, edge: Path, version: str, *, metrics: Mapping[str, Any] | None = None,
                 lineage: Mapping[str, Any] | None = None, reference: Mapping[str, Any] | None = None,
                 extra_files: Mapping[str, Path] | None = None,
                 extra_backends: Mapping[str, Mapping[str, Any]] | None = None) -> PackageResult:
    """The edge bundle of a registered version: ``edge/<version>/`` and ``edge/<version>.zip``.

    The candidate bundle's files and backends are kept; ``metrics``, ``lineage`` and ``reference`` replace the
    candidate's when given. ``extra_files`` / ``extra_backends`` add a backend made after evaluation (SageMaker
    Neo's ``dlr`` folder, :func:`cloud.aws.neo.package_edge`).
    """
    from edge_runtime.bundle import Bundle, sha256_file, write_bundle, zip_bundle

    cand = Bundle.load(candidate)
    m = cand.manifest
    files = {rel: cand.path_of(rel) for rel in m.files}
    files.update(extra_files or {})
    backends = {k: dict(v) for k, v in m.backends.items()}
    backends.update({k: dict(v) for k, v in (extra_backends or {}).items()})
    bundle = write_bundle(
        Path(edge) / str(version), files=files, name=m.name, version=str(version), labels=list(m.labels),
        max_length=m.max_length, tokenizer=m.tokenizer, backends=backends,
        metrics=dict(metrics if metrics is not None else m.metrics),
        lineage=dict(lineage if lineage is not None else m.lineage),
        reference=dict(reference if reference is not None else m.reference),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), extra=dict(m.extra))
    zip_path = zip_bundle(bundle.root, Path(edge) / f"{version}.zip")
    return PackageResult(bundle.root, zip_path, sha256_file(zip_path), zip_path.stat().st_size / 2**20,
                         tuple(backends))
