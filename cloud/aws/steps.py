"""What each SageMaker job of the pipeline runs: the local run's step modules, on SageMaker's paths.

``sm_entry.py STEP`` (:mod:`cloud.aws.entry`) calls :func:`run_step`. Every path has the SageMaker default
and an option, so each step also runs on a workstation against local folders (that is how the tests run them):

================  ===========================================================================================
``prepare``       ``cloud.data`` (SNIPS directory or one CSV under ``--data``) then ``cloud.validate`` (GX)
``train``         ``cloud.train`` on ``SM_CHANNEL_TRAIN`` -> ``SM_MODEL_DIR`` (torch threads = the instance's CPUs),
                  with the inference handler in ``SM_MODEL_DIR/code/`` (:func:`cloud.aws.code.write_serving_code`);
                  pipeline parameters arrive as hyperparameters ``set.KEY`` (``--set.KEY VALUE``)
``distill``       :func:`cloud.steps.distill_step`: the ``distill.layers``-deep student of the teacher (the train
                  job's ``model.tar.gz`` in ``SM_CHANNEL_TEACHER``) on ``SM_CHANNEL_TRAIN`` -> ``SM_MODEL_DIR``, with
                  the inference handler like ``train``; only when ``distill.layers`` > 0
``evaluate``      ``cloud.compile`` (ONNX export + static INT8 candidate bundle) then ``cloud.evaluate``; writes
                  ``evaluation/metrics.json`` and ``evaluation/gate.json`` (the pipeline's condition reads both).
                  With ``distill.layers`` > 0 the model is the student and the teacher (``--teacher``) is scored
                  too (``teacher_fp32``)
``compile-edge``  :func:`cloud.aws.neo.package_edge`: the edge bundle of the registered version, with a ``dlr``
                  backend when Neo compiles it; records the bundle in the SageMaker Model Registry
================  ===========================================================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .entry import extract_tar

if TYPE_CHECKING:
    from ..params import Params

__all__ = ["run_step", "STEPS", "resolve_data", "version_from_arn", "hyperparameter_overrides"]

log = logging.getLogger(__name__)
PROC = "/opt/ml/processing"


_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout, or the unpacked source bundle in a job


def _params(given: str | None, overrides: Sequence[str] = ()) -> "Params":
    """The job's parameters: ``--params`` or the bundle's ``pipelines/params.json``, with ``--set KEY=VALUE``
    overrides (the SageMaker pipeline parameters; values are JSON, e.g. ``--set gate.min_macro_f1=0.96``)."""
    from ..params import load_params, parse_overrides

    params = load_params(given or _SOURCE_ROOT / "pipelines" / "params.json")
    values = parse_overrides(overrides)
    return params.override(values) if values else params


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=None, help="params file (default: the source bundle's pipelines/params.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter (the SageMaker pipeline parameters arrive this way)")


def resolve_data(path: Path) -> Path:
    """The prepare step's input: a SNIPS directory as is, else the one CSV file inside the directory."""
    if path.is_file() or (path / "train").is_dir():
        return path
    for snips in sorted(p for p in path.rglob("train") if p.is_dir()):
        return snips.parent
    csvs = sorted(path.rglob("*.csv"))
    if len(csvs) == 1:
        return csvs[0]
    from ..errors import DataError

    raise DataError(f"{path}: expected a SNIPS directory (train/ valid/ test/) or exactly one CSV file, "
                    f"found {len(csvs)} CSV files")


def version_from_arn(arn: str) -> tuple[str, int]:
    """``arn:aws:sagemaker:...:model-package/slm-intents-snips/3`` -> ``("slm-intents-snips", 3)``."""
    tail = arn.split(":model-package/", 1)[-1]
    group, _, version = tail.rpartition("/")
    if not group or not version.isdigit():
        raise ValueError(f"not a versioned model package ARN: {arn}")
    return group, int(version)


def _prepare(argv: Sequence[str]) -> int:
    from ..steps import prepare_step, validate_step

    p = argparse.ArgumentParser(prog="sm_entry.py prepare")
    p.add_argument("--data", type=Path, default=Path(PROC, "input", "data"))
    p.add_argument("--out", type=Path, default=Path(PROC, "output"))
    _common(p)
    a = p.parse_args(argv)
    params = _params(a.params, a.set)
    prepared = prepare_step(resolve_data(a.data), a.out, params)
    print(json.dumps(prepared.to_dict()))
    result = validate_step(a.out / "processed", a.out / "validation", params, source=prepared.source)
    print(json.dumps(result.to_dict()))
    return 0


def _training_args(p: argparse.ArgumentParser) -> None:
    """The options of a training job (train, distill): SageMaker's channel and model paths have the defaults."""
    p.add_argument("--threads", default="auto", help="torch threads: a number, or auto (the instance's CPUs)")
    p.add_argument("--data", type=Path, default=os.environ.get("SM_CHANNEL_TRAIN"))
    p.add_argument("--out", type=Path, default=os.environ.get("SM_MODEL_DIR"))
    _common(p)


def hyperparameter_overrides(rest: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` overrides from the arguments the training toolkit passes for hyperparameters ``set.KEY``
    (:func:`cloud.aws.pipeline.training_hyperparameters`): ``--set.KEY VALUE`` (or ``--set.KEY=VALUE``)."""
    out, i = [], 0
    while i < len(rest):
        arg = rest[i]
        if arg.startswith("--set."):
            key, sep, value = arg[len("--set."):].partition("=")
            if not sep:
                if i + 1 >= len(rest):
                    from ..errors import ParamsError

                    raise ParamsError(f"{arg}: no value follows it")
                value, i = rest[i + 1], i + 1
            out.append(f"{key}={value}")
        i += 1
    return out


def _training_params(a: argparse.Namespace) -> "Params":
    """The training job's parameters (``train.threads`` from ``--threads``), recorded as ``params.json`` beside
    its other outputs (SageMaker uploads ``SM_OUTPUT_DATA_DIR``)."""
    threads = (os.cpu_count() or 1) if a.threads == "auto" else int(a.threads)
    params = _params(a.params, [*a.set, *hyperparameter_overrides(a.rest)]).override({"train.threads": threads})
    record = os.environ.get("SM_OUTPUT_DATA_DIR")
    if record:
        Path(record).mkdir(parents=True, exist_ok=True)
        (Path(record) / "params.json").write_text(json.dumps(params.to_dict(), indent=2) + "\n", encoding="utf-8")
    return params


def _train(argv: Sequence[str]) -> int:
    from ..steps import train_step

    p = argparse.ArgumentParser(prog="sm_entry.py train")
    _training_args(p)
    a, a.rest = p.parse_known_args(argv)  # the training toolkit passes every hyperparameter; ours are above
    if not a.data or not a.out:
        p.error("--data and --out are required (or SM_CHANNEL_TRAIN / SM_MODEL_DIR)")
    params = _training_params(a)
    result = train_step(a.data, a.out, params)
    from .code import write_serving_code

    write_serving_code(a.out, _SOURCE_ROOT)  # model.tar.gz/code/: the endpoint's handler (cloud.inference.handler)
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "history"}))
    return 0


def _distill(argv: Sequence[str]) -> int:
    from ..steps import distill_step

    p = argparse.ArgumentParser(prog="sm_entry.py distill")
    _training_args(p)
    p.add_argument("--teacher", type=Path, default=os.environ.get("SM_CHANNEL_TEACHER"),
                   help="the teacher: the train job's model.tar.gz (or the folder holding it) or a checkpoint folder")
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new private temp directory)")
    a, a.rest = p.parse_known_args(argv)  # the training toolkit passes every hyperparameter; ours are above
    if not a.data or not a.out or not a.teacher:
        p.error("--data, --teacher and --out are required (or SM_CHANNEL_TRAIN / SM_CHANNEL_TEACHER / SM_MODEL_DIR)")
    params = _training_params(a)
    if not params.distill.layers:
        from ..errors import ParamsError

        raise ParamsError("distill.layers is 0: there is no student to distill (the trained model ships)")
    work = a.work or Path(tempfile.mkdtemp(prefix="slm-distill-"))
    teacher = _extract_model(a.teacher, work / "teacher")
    result = distill_step(teacher, a.data, a.out, params)
    from .code import write_serving_code

    write_serving_code(a.out, _SOURCE_ROOT)  # the student's model.tar.gz serves like the teacher's
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "history"}))
    return 0


def _extract_model(model: Path, dest: Path) -> Path:
    """The checkpoint directory: ``model`` itself, or the unpacked ``model.tar.gz`` in it."""
    if (model / "config.json").is_file():
        return model
    tarballs = [model] if model.is_file() else sorted(model.glob("*.tar.gz"))
    if not tarballs:
        from ..errors import CloudError

        raise CloudError(f"{model}: neither a checkpoint directory nor a model.tar.gz")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarballs[0]) as tar:
        extract_tar(tar, dest)
    return dest


def _evaluate(argv: Sequence[str]) -> int:
    from ..steps import compile_step, evaluate_step, gate_result

    p = argparse.ArgumentParser(prog="sm_entry.py evaluate")
    p.add_argument("--model", type=Path, default=Path(PROC, "input", "model"),
                   help="the model that ships: the student with distill.layers > 0, else the trained model")
    p.add_argument("--teacher", type=Path, default=Path(PROC, "input", "teacher"),
                   help="the trained model a student learned from, scored too (distill.layers > 0 only)")
    p.add_argument("--data", type=Path, default=Path(PROC, "input", "processed"))
    p.add_argument("--out", type=Path, default=Path(PROC, "output"))
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new private temp directory)")
    _common(p)
    a = p.parse_args(argv)
    params = _params(a.params, a.set)
    work = a.work or Path(tempfile.mkdtemp(prefix="slm-evaluate-"))
    teacher = None
    if params.distill.layers:
        if not a.teacher.exists():
            from ..errors import CloudError

            raise CloudError(f"distill.layers is {params.distill.layers}: the evaluate job needs the teacher "
                             f"(--teacher, the train job's model artifact) besides the student; {a.teacher} is missing")
        teacher = _extract_model(a.teacher, work / "teacher")
    checkpoint = _extract_model(a.model, work / "checkpoint")
    compile_step(checkpoint, a.data, a.out / "candidate", params, version="candidate", work_dir=a.out / "onnx")
    metrics = evaluate_step(checkpoint, a.out / "candidate", a.data, a.out / "evaluation", params,
                            teacher=teacher).metrics
    # The pipeline's ConditionStep reads int8.macro_f1 (metrics.json) and int8_drop (gate.json)
    gate = gate_result(metrics, params.gate).to_dict()
    (a.out / "evaluation" / "gate.json").write_text(json.dumps(gate, indent=2) + "\n")
    print(json.dumps(gate))
    return 0


def _compile_edge(argv: Sequence[str]) -> int:
    from ..registry import open_registry
    from ..steps import registry_metrics
    from .neo import NeoConfig, package_edge

    p = argparse.ArgumentParser(prog="sm_entry.py compile-edge")
    p.add_argument("--candidate", type=Path, default=Path(PROC, "input", "candidate"))
    p.add_argument("--onnx", type=Path, default=Path(PROC, "input", "onnx"))
    p.add_argument("--evaluation", type=Path, default=Path(PROC, "input", "evaluation"))
    p.add_argument("--out", type=Path, default=Path(PROC, "output", "edge"))
    p.add_argument("--model-package-arn", required=True)
    p.add_argument("--bucket", required=True, help="the store's bucket (Neo's input and output go there)")
    p.add_argument("--store-prefix", default="", help="key prefix above slm-intents/ in the bucket")
    p.add_argument("--role-arn", required=True, help="the role Neo assumes")
    p.add_argument("--region", default=None, help="AWS region (default: the job's AWS_REGION)")
    p.add_argument("--neo", default="true", help="true: try SageMaker Neo; false: ONNX Runtime INT8 only")
    p.add_argument("--neo-timeout", type=float, default=1800.0)
    p.add_argument("--run-id", default="")
    _common(p)
    a = p.parse_args(argv)
    params = _params(a.params, a.set)
    group, version = version_from_arn(a.model_package_arn)
    evaluation = a.evaluation / "metrics.json"
    metrics = json.loads(evaluation.read_text()) if evaluation.is_file() else {}
    reference_file = a.evaluation / "reference.json"
    prefix = "/".join(x for x in (a.store_prefix.strip("/"), params.project) if x)
    fp32 = a.onnx / "model.fp32.onnx"
    neo = NeoConfig(bucket=a.bucket, role_arn=a.role_arn, max_length=params.train.max_length, prefix=prefix,
                    timeout_s=a.neo_timeout) if a.neo.lower() == "true" else None
    from .clients import make_client

    clients = ({"sagemaker": make_client("sagemaker", region=a.region), "s3": make_client("s3", region=a.region)}
               if neo else None)
    bundle, zip_path, result = package_edge(
        a.candidate, a.out, str(version), onnx_path=fp32 if fp32.is_file() else None, neo=neo, clients=clients,
        metrics=registry_metrics(metrics),
        reference=json.loads(reference_file.read_text()) if reference_file.is_file() else {},
        lineage={"run_id": a.run_id, "registry": {"backend": "sagemaker", "group": group, "version": version,
                                                  "arn": a.model_package_arn}})
    edge = f"s3://{a.bucket}/{prefix}/edge/{version}"
    with open_registry("sagemaker", region=a.region) as reg:
        reg.add_artifacts(group, version, {"bundle": edge, "bundle_zip": f"{edge}.zip"})
    print(json.dumps({"bundle": edge, "zip": f"{edge}.zip", "neo": result.to_dict()}))
    return 0


STEPS: dict[str, Callable[[Sequence[str]], int]] = {
    "prepare": _prepare, "train": _train, "distill": _distill, "evaluate": _evaluate, "compile-edge": _compile_edge,
}


def run_step(step: str, argv: Sequence[str], *, source: Path | None = None) -> int:
    """Run one pipeline step inside a SageMaker job; returns the exit code (non-zero fails the job).

    ``source`` is accepted for callers of the older signature; the source root is where this module lies.
    """
    from ..errors import CloudError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if step not in STEPS:
        print(f"unknown step {step!r}; expected one of: {', '.join(STEPS)}")
        return 2
    try:
        return int(STEPS[step](list(argv)))
    except CloudError as exc:
        print(f"error: {exc}")
        if getattr(exc, "report", ""):
            print(exc.report)  # type: ignore[attr-defined]
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cloud.aws.steps STEP [args]``: what ``sm_entry.py`` hands over to once the source is unpacked."""
    from .entry import split_step

    step, rest = split_step(list(sys.argv[1:] if argv is None else argv))
    return run_step(step, rest)


if __name__ == "__main__":
    raise SystemExit(main())
