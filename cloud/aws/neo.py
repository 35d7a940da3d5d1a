"""SageMaker Neo for the edge bundle: compile the ONNX model for ``linux_arm64``, fetch it as the ``dlr`` backend.

SageMaker Pipelines has no compilation step type, so the pipeline's ``CompileEdge`` processing step calls
:func:`package_edge`, which runs one Neo job (``create_compilation_job`` -> poll ``describe_compilation_job``
-> download ``ModelArtifacts.S3ModelArtifacts``) and writes the edge bundle. Neo documents its edge targets
for older frameworks and mostly vision models, so a transformer may not compile; then the bundle ships the
ONNX Runtime INT8 model alone, the step still succeeds, and the manifest's ``lineage.neo`` says why::

    WARNING cloud.aws.neo: SageMaker Neo did not compile the model for LINUX/ARM64 (job slm-neo-...: FAILED:
    ...); the edge bundle ships the ONNX Runtime INT8 model only (backend "onnxruntime").

By hand, for a bundle you already have (``--bundle`` is rewritten with a ``dlr`` backend when Neo succeeds)::

    python -m cloud.aws.neo --bundle .store/slm-intents/edge/3 --onnx model.fp32.onnx \\
        --bucket my-bucket --role-arn arn:aws:iam::123456789012:role/slm-intents-sagemaker --region eu-west-1
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .entry import extract_tar
from .errors import AwsCallFailed, AwsError, NeoCompileFailed

__all__ = ["NeoTarget", "NeoConfig", "NeoResult", "compile_with_neo", "neo_input", "package_edge", "main"]

log = logging.getLogger(__name__)
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the names cloud.compile exports
DLR_DIR = "dlr"


@dataclass(frozen=True)
class NeoTarget:
    """Neo's ``OutputConfig.TargetPlatform``. ``NeoTarget.linux_arm64()`` is the project's device target."""

    os: str = "LINUX"
    arch: str = "ARM64"
    accelerator: str | None = None

    @classmethod
    def linux_arm64(cls) -> "NeoTarget":
        return cls()

    def to_request(self) -> dict[str, str]:
        out = {"Os": self.os, "Arch": self.arch}
        if self.accelerator:
            out["Accelerator"] = self.accelerator
        return out

    def __str__(self) -> str:
        return f"{self.os}/{self.arch}" + (f"/{self.accelerator}" if self.accelerator else "")


@dataclass(frozen=True)
class NeoConfig:
    """One Neo compilation.

    bucket: where the input model is uploaded and Neo writes its output (``<prefix>/neo/<job>/``).
    role_arn: the role Neo assumes to read and write them (the SageMaker execution role).
    target: the device platform.
    max_length: the sequence length the model is compiled for (Neo needs fixed input shapes: ``[1, max_length]``).
    input_names: the ONNX graph's inputs.
    prefix: key prefix of the store (``slm-intents``).
    timeout_s: how long to wait for the job before stopping it; poll_s: how often to ask.
    """

    bucket: str
    role_arn: str
    target: NeoTarget = field(default_factory=NeoTarget.linux_arm64)
    max_length: int = 40
    input_names: tuple[str, ...] = ONNX_INPUTS
    prefix: str = "slm-intents"
    timeout_s: float = 1800.0
    poll_s: float = 15.0

    def data_input_config(self) -> str:
        return json.dumps({name: [1, self.max_length] for name in self.input_names})


@dataclass(frozen=True)
class NeoResult:
    """What became of the Neo step: ``compiled`` (``files`` is the artifact folder), ``failed`` or ``skipped``."""

    status: str
    target: str
    job_name: str = ""
    reason: str = ""
    artifact_uri: str = ""
    files: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "target": self.target, "job_name": self.job_name, "reason": self.reason,
                "artifact_uri": self.artifact_uri}


def neo_input(onnx_path: Path) -> bytes:
    """Neo's ``model.tar.gz``: one self-contained ``.onnx`` file under the model's name.

    Neo takes ONNX as "one model file (.onnx)" (docs/aws.md, "SageMaker Neo"), while ``cloud.compile`` keeps the
    INT8 model's weights beside it in ``model.int8.onnx.data``; a tar of the graph alone holds no weights. So
    the model is loaded with its external data and written back whole. Raises :class:`NeoCompileFailed`
    (before anything is uploaded) when a weights file is missing or the model cannot be read.
    """
    import onnx

    onnx_path = Path(onnx_path)
    try:
        model = onnx.load(str(onnx_path))  # reads every external-data file the tensors name, beside the model
        body = model.SerializeToString()
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:  # a missing .data file is a ValidationError
        raise NeoCompileFailed(f"cannot read {onnx_path} with its external weights: {exc}") from None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(onnx_path.name)
        info.size, info.mode = len(body), 0o644
        tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def _job_name(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return "slm-neo-" + now.strftime("%Y%m%d-%H%M%S-%f")[:-3]  # <= 63 characters, unique per millisecond


def compile_with_neo(onnx_path: Path, work_dir: Path, config: NeoConfig, *, sagemaker: Any, s3: Any,
                     job_name: str | None = None, sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> NeoResult:
    """Run one Neo job on ``onnx_path`` (its external weights inlined); return the result with the artifact
    unpacked in ``work_dir/dlr``.

    Raises :class:`NeoCompileFailed` when the job cannot be created, fails, stops or times out.
    """
    from .clients import call

    name = job_name or _job_name()
    key = f"{config.prefix}/neo/{name}"
    body = neo_input(onnx_path)  # before anything is uploaded: a model without its weights cannot compile
    try:
        call(s3.put_object, Bucket=config.bucket, Key=f"{key}/input/model.tar.gz",
             Body=body)
        call(sagemaker.create_compilation_job,
             CompilationJobName=name, RoleArn=config.role_arn,
             InputConfig={"S3Uri": f"s3://{config.bucket}/{key}/input/model.tar.gz",
                          "DataInputConfig": config.data_input_config(), "Framework": "ONNX"},
             OutputConfig={"S3OutputLocation": f"s3://{config.bucket}/{key}/output",
                           "TargetPlatform": config.target.to_request()},
             StoppingCondition={"MaxRuntimeInSeconds": int(max(60, config.timeout_s))})
    except AwsCallFailed as exc:
        raise NeoCompileFailed(f"job {name} could not be created: {exc}") from None

    started = clock()
    while True:
        try:
            desc = call(sagemaker.describe_compilation_job, CompilationJobName=name)
        except AwsCallFailed as exc:
            raise NeoCompileFailed(f"job {name}: {exc}") from None
        status = desc.get("CompilationJobStatus", "")
        if status == "COMPLETED":
            break
        if status in ("FAILED", "STOPPED"):
            raise NeoCompileFailed(f"job {name}: {status}: {desc.get('FailureReason', 'no reason given')}")
        if clock() - started > config.timeout_s:
            try:
                call(sagemaker.stop_compilation_job, CompilationJobName=name)
            except AwsCallFailed as exc:
                log.warning("could not stop Neo job %s: %s", name, exc)
            raise NeoCompileFailed(f"job {name}: still {status or 'pending'} after {config.timeout_s:.0f}s; stopped it")
        sleep(config.poll_s)

    artifact = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
    if not artifact.startswith("s3://"):
        raise NeoCompileFailed(f"job {name}: COMPLETED without an artifact URI")
    bucket, _, akey = artifact[len("s3://"):].partition("/")
    try:
        body = call(s3.get_object, Bucket=bucket, Key=akey)["Body"].read()
    except AwsCallFailed as exc:
        raise NeoCompileFailed(f"job {name}: cannot fetch {artifact}: {exc}") from None
    out = Path(work_dir) / DLR_DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            extract_tar(tar, out)
    except (tarfile.TarError, OSError) as exc:
        raise NeoCompileFailed(f"job {name}: {artifact} is not a readable tar.gz: {exc}") from None
    if not any(p.is_file() for p in out.rglob("*")):
        raise NeoCompileFailed(f"job {name}: {artifact} is empty")
    return NeoResult("compiled", str(config.target), job_name=name, artifact_uri=artifact, files=out)


def _try_neo(onnx_path: Path | None, work: Path, config: NeoConfig | None, clients: Mapping[str, Any] | None,
             **kw: Any) -> NeoResult:
    target = str(config.target) if config else str(NeoTarget.linux_arm64())
    if config is None or onnx_path is None:
        return NeoResult("skipped", target, reason="Neo was not requested" if config is None else "no ONNX model")
    try:
        if clients is None:
            from .clients import make_client

            clients = {"sagemaker": make_client("sagemaker"), "s3": make_client("s3")}
        return compile_with_neo(onnx_path, work, config, sagemaker=clients["sagemaker"], s3=clients["s3"], **kw)
    except (NeoCompileFailed, AwsError) as exc:
        log.warning('SageMaker Neo did not compile the model for %s (%s); the edge bundle ships the ONNX '
                    'Runtime INT8 model only (backend "onnxruntime").', target, exc)
        return NeoResult("failed", target, reason=str(exc))


def package_edge(candidate_dir: Path, out_dir: Path, version: str, *, onnx_path: Path | None = None,
                 neo: NeoConfig | None = None, clients: Mapping[str, Any] | None = None,
                 metrics: Mapping[str, Any] | None = None, lineage: Mapping[str, Any] | None = None,
                 reference: Mapping[str, Any] | None = None, **neo_kw: Any) -> tuple[Any, Path, NeoResult]:
    """Write ``out_dir/<version>/`` (bundle) and ``out_dir/<version>.zip`` from the candidate bundle.

    With ``neo`` the ONNX model (``onnx_path``, default the bundle's INT8 model) is compiled by SageMaker Neo
    and added as the ``dlr`` backend; if Neo fails the bundle has the ``onnxruntime`` backend only. The bundle
    itself is written by :func:`cloud.steps.package_step`, as in the local pipeline.
    Returns ``(bundle, zip_path, neo_result)``.
    """
    from edge_runtime.bundle import Bundle

    from ..steps import package_step

    cand = Bundle.load(candidate_dir)
    m = cand.manifest
    with tempfile.TemporaryDirectory(prefix="neo-") as tmp:
        source = onnx_path or cand.path_of(m.backends["onnxruntime"]["file"])
        result = _try_neo(Path(source), Path(tmp), neo, clients, **neo_kw)
        files: dict[str, Path] = {}
        backends: dict[str, dict[str, Any]] = {}
        if result.status == "compiled" and result.files is not None:
            for path in sorted(p for p in result.files.rglob("*") if p.is_file()):
                files[f"{DLR_DIR}/{path.relative_to(result.files).as_posix()}"] = path
            backends[DLR_DIR] = {"dir": DLR_DIR, "compiler": "sagemaker-neo", "target": result.target,
                                 "compilation_job": result.job_name, "source_model": Path(source).name,
                                 "input_shapes": {n: [1, neo.max_length] for n in neo.input_names} if neo else {}}
        packaged = package_step(
            candidate_dir, Path(out_dir), str(version), metrics=metrics,
            lineage={**dict(lineage if lineage is not None else m.lineage), "neo": result.to_dict()},
            reference=reference, extra_files=files, extra_backends=backends)
    return Bundle.load(packaged.bundle), packaged.zip, result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.aws.neo",
                                     description="Compile a bundle's ONNX model with SageMaker Neo and add it as "
                                                 "the bundle's dlr backend (the bundle is kept as is if Neo fails).")
    parser.add_argument("--bundle", type=Path, required=True, help="edge bundle directory (rewritten in place)")
    parser.add_argument("--onnx", type=Path, help="ONNX model to compile (default: the bundle's INT8 model)")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--role-arn", required=True, help="role Neo assumes (the SageMaker execution role)")
    parser.add_argument("--region", default=None)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the job")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from edge_runtime.bundle import Bundle

    from .clients import make_client, make_session

    try:
        session = make_session(args.region)
        clients = {"sagemaker": make_client("sagemaker", region=args.region, session=session),
                   "s3": make_client("s3", region=args.region, session=session)}
        bundle = Bundle.load(args.bundle)
        config = NeoConfig(bucket=args.bucket, role_arn=args.role_arn, max_length=bundle.manifest.max_length,
                           timeout_s=args.timeout)
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / "bundle"
            shutil.copytree(args.bundle, staged)
            new, zip_path, result = package_edge(staged, Path(tmp) / "out", bundle.manifest.version,
                                                 onnx_path=args.onnx, neo=config, clients=clients)
            shutil.rmtree(args.bundle)
            shutil.copytree(new.root, args.bundle)
            shutil.copyfile(zip_path, Path(str(args.bundle).rstrip("/") + ".zip"))
    except AwsError as exc:
        print(f"error: {exc}")
        return 1
    print(json.dumps({"bundle": str(args.bundle), "neo": result.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
