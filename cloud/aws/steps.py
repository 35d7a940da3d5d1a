"""What each SageMaker job of the pipeline runs: the local run's step modules, on SageMaker's paths.

``sm_entry.py STEP`` (:mod:`cloud.aws.entry`) calls :func:`run_step`. Every path has the SageMaker default
and an option, so each step also runs on a workstation against local folders (that is how the tests run them):

================  ===========================================================================================
``prepare``       ``cloud.data`` (SNIPS directory or one CSV under ``--data``) then ``cloud.validate`` (GX)
``train``         ``cloud.train`` on ``SM_CHANNEL_TRAIN`` -> ``SM_MODEL_DIR`` (torch threads = the instance's CPUs)
``evaluate``      ``cloud.compile`` (ONNX export + static INT8 candidate bundle) then ``cloud.evaluate``; writes
                  ``evaluation/metrics.json`` and ``evaluation/gate.json`` (the pipeline's condition reads both)
``compile-edge``  :func:`cloud.aws.neo.package_edge`: the edge bundle of the registered version, with a ``dlr``
                  backend when Neo compiles it; records the bundle in the SageMaker Model Registry
================  ===========================================================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from .entry import extract_tar

__all__ = ["run_step", "STEPS", "resolve_data", "version_from_arn"]

log = logging.getLogger(__name__)
PROC = "/opt/ml/processing"


def _params_path(source: Path | None, given: str | None) -> str:
    if given:
        return given
    return str((source or Path(__file__).resolve().parents[2]) / "pipelines" / "params.json")


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


def _prepare(argv: Sequence[str], source: Path | None) -> int:
    from .. import data, validate

    p = argparse.ArgumentParser(prog="sm_entry.py prepare")
    p.add_argument("--data", type=Path, default=Path(PROC, "input", "data"))
    p.add_argument("--out", type=Path, default=Path(PROC, "output"))
    p.add_argument("--params", default=None)
    a = p.parse_args(argv)
    params = _params_path(source, a.params)
    rc = data.main(["--data", str(resolve_data(a.data)), "--out", str(a.out), "--params", params])
    if rc:
        return rc
    return validate.main(["--processed", str(a.out / "processed"), "--out", str(a.out / "validation"),
                          "--params", params])


def _train(argv: Sequence[str], source: Path | None) -> int:
    from .. import train

    p = argparse.ArgumentParser(prog="sm_entry.py train")
    p.add_argument("--params", default=None)
    p.add_argument("--threads", default="auto", help="torch threads: a number, or auto (the instance's CPUs)")
    a, _ = p.parse_known_args(argv)  # the training toolkit passes every hyperparameter; ours are above
    params_file = Path(_params_path(source, a.params))
    raw = json.loads(params_file.read_text(encoding="utf-8"))
    raw["train"]["threads"] = os.cpu_count() or 1 if a.threads == "auto" else int(a.threads)
    # SageMaker always sets SM_OUTPUT_DATA_DIR; elsewhere a private directory, not a fixed name in shared /tmp
    tuned = Path(os.environ.get("SM_OUTPUT_DATA_DIR") or tempfile.mkdtemp(prefix="slm-train-")) / "params.json"
    tuned.parent.mkdir(parents=True, exist_ok=True)
    tuned.write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return train.main(["--params", str(tuned)])


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


def _evaluate(argv: Sequence[str], source: Path | None) -> int:
    from .. import compile as compile_step
    from .. import evaluate
    from ..data import read_split_csv
    from ..errors import CloudError
    from ..params import load_params

    p = argparse.ArgumentParser(prog="sm_entry.py evaluate")
    p.add_argument("--model", type=Path, default=Path(PROC, "input", "model"))
    p.add_argument("--data", type=Path, default=Path(PROC, "input", "processed"))
    p.add_argument("--out", type=Path, default=Path(PROC, "output"))
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new private temp directory)")
    p.add_argument("--params", default=None)
    a = p.parse_args(argv)
    params_file = _params_path(source, a.params)
    params = load_params(params_file)
    try:
        work = a.work or Path(tempfile.mkdtemp(prefix="slm-evaluate-"))
        checkpoint = _extract_model(a.model, work / "checkpoint")
        val_texts = [t for t, _ in read_split_csv(a.data / "val.csv")]
        compile_step.compile_bundle(
            checkpoint, a.out / "candidate", version="candidate", name=params.model_name, labels=params.labels,
            max_length=params.train["max_length"], calibration_texts=val_texts, check_texts=val_texts,
            quantization=compile_step.QuantizationConfig.from_params(params.compile["quantization"]),
            min_agreement=params.compile["min_agreement"], opset=params.compile["opset"],
            work_dir=a.out / "onnx", target=params.compile["target"])
    except CloudError as exc:
        print(f"error: {exc}")
        return 1
    rc = evaluate.main(["--model", str(checkpoint), "--bundle", str(a.out / "candidate"), "--data", str(a.data),
                        "--out", str(a.out / "evaluation"), "--params", params_file])
    if rc:
        return rc
    metrics = json.loads((a.out / "evaluation" / "metrics.json").read_text())
    gate = {"int8_macro_f1": metrics["int8"]["macro_f1"], "fp32_macro_f1": metrics["fp32"]["macro_f1"],
            "int8_drop": metrics["fp32"]["macro_f1"] - metrics["int8"]["macro_f1"],
            "agreement": metrics["agreement"], "defaults": dict(params.gate)}
    (a.out / "evaluation" / "gate.json").write_text(json.dumps(gate, indent=2) + "\n")
    print(json.dumps(gate))
    return 0


def _compile_edge(argv: Sequence[str], source: Path | None) -> int:
    from ..errors import CloudError
    from ..params import load_params
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
    p.add_argument("--params", default=None)
    a = p.parse_args(argv)
    params = load_params(_params_path(source, a.params))
    group, version = version_from_arn(a.model_package_arn)
    evaluation = a.evaluation / "metrics.json"
    metrics = json.loads(evaluation.read_text()) if evaluation.is_file() else {}
    summary = {k: {"accuracy": metrics[k]["accuracy"], "macro_f1": metrics[k]["macro_f1"]}
               for k in ("fp32", "int8") if k in metrics}
    if "agreement" in metrics:
        summary["agreement"] = metrics["agreement"]
    reference_file = a.evaluation / "reference.json"
    prefix = "/".join(x for x in (a.store_prefix.strip("/"), params.project) if x)
    fp32 = a.onnx / "model.fp32.onnx"
    neo = NeoConfig(bucket=a.bucket, role_arn=a.role_arn, max_length=params.train["max_length"], prefix=prefix,
                    timeout_s=a.neo_timeout) if a.neo.lower() == "true" else None
    from .clients import make_client

    clients = ({"sagemaker": make_client("sagemaker", region=a.region), "s3": make_client("s3", region=a.region)}
               if neo else None)
    try:
        bundle, zip_path, result = package_edge(
            a.candidate, a.out, str(version), onnx_path=fp32 if fp32.is_file() else None, neo=neo, clients=clients,
            metrics=summary, reference=json.loads(reference_file.read_text()) if reference_file.is_file() else {},
            lineage={"run_id": a.run_id, "registry": {"backend": "sagemaker", "group": group, "version": version,
                                                      "arn": a.model_package_arn}})
    except CloudError as exc:
        print(f"error: {exc}")
        return 1
    edge = f"s3://{a.bucket}/{prefix}/edge/{version}"
    from ..registry import open_registry

    with open_registry("sagemaker", region=a.region) as reg:
        reg.add_artifacts(group, version, {"bundle": edge, "bundle_zip": f"{edge}.zip"})
    print(json.dumps({"bundle": edge, "zip": f"{edge}.zip", "neo": result.to_dict()}))
    return 0


STEPS: dict[str, Callable[[Sequence[str], Path | None], int]] = {
    "prepare": _prepare, "train": _train, "evaluate": _evaluate, "compile-edge": _compile_edge,
}


def run_step(step: str, argv: Sequence[str], *, source: Path | None = None) -> int:
    """Run one pipeline step inside a SageMaker job; returns the exit code (non-zero fails the job)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if step not in STEPS:
        print(f"unknown step {step!r}; expected one of: {', '.join(STEPS)}")
        return 2
    return int(STEPS[step](list(argv), source))
