"""A SageMaker endpoint serving a registered version's FP32 model (the cloud reference of ``cloud.shadow``).

    python -m cloud.endpoint deploy --version 7 --role-arn arn:aws:iam::123456789012:role/slm-intents-sagemaker
    python -m cloud.endpoint status --version 7
    python -m cloud.endpoint delete --version 7

``deploy`` makes three resources named ``<group>-<version>`` (the model package group of ``pipelines/params.json``):
a model, an endpoint configuration (serverless by default: ``ServerlessConfig`` with ``MemorySizeInMB`` and
``MaxConcurrency``; ``--instance-type`` for a provisioned instance instead) and the endpoint, then waits for
``InService``, printing its status as it changes.

What the model serves (``--serve``): when the pipeline distilled, the registered package is the student (the
model that ships) and its ``CustomerMetadataProperties`` name the teacher's ``model.tar.gz``
(``artifacts.teacher_model``). The cloud reference is the teacher, so ``--serve teacher`` (the default) makes the
model from the package's container with the teacher's data: ``CreateModel`` with a ``PrimaryContainer`` of the
package's ``Image`` and ``Environment`` (the handler of :mod:`cloud.inference.handler`, plus
``SLM_MODEL_VERSION``) and ``ModelDataUrl`` = the teacher's artifact, which carries the same ``code/`` (the train
job writes it, :func:`cloud.aws.code.write_serving_code`). ``--serve package``, and any version without a teacher
(``distill.layers`` 0), uses the package itself (``CreateModel`` with ``ModelPackageName``, plus
``SLM_MODEL_VERSION``): the student when distilled. A version must be approved (``--allow-unapproved`` to try one
first) and registered with the handler (``SAGEMAKER_PROGRAM`` in its container). If a step fails, what this run
created is deleted again. ``delete`` removes the endpoint, then its configuration and model. What it costs:
docs/aws.md.

boto3 is imported when a command runs (``pip install 'slm-intents[aws]'``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TextIO

from .aws.errors import AwsCallFailed, AwsError
from .clihelp import HelpFormatter
from .errors import CloudError

__all__ = ["Serving", "SERVE_CHOICES", "TEACHER_KEY", "endpoint_name", "model_container", "deploy", "status",
           "delete", "main"]

VARIANT = "AllTraffic"
MEMORY_SIZES_MB = (1024, 2048, 3072, 4096, 5120, 6144)  # ServerlessConfig.MemorySizeInMB: 1 GB steps
FINAL = ("InService", "Failed", "OutOfService")
#: what ``deploy`` serves: the teacher recorded in the package's metadata (when there is one), or the package
SERVE_CHOICES = ("teacher", "package")
#: the CustomerMetadataProperties key of the teacher's model.tar.gz (cloud.aws.pipeline's RegisterModel)
TEACHER_KEY = "artifacts.teacher_model"
_ENVIRONMENT_MAX = 100  # ContainerDefinition.Environment: at most 100 entries, keys and values <= 1024 characters


@dataclass(frozen=True)
class Serving:
    """How the endpoint runs: serverless (the default) or on provisioned instances.

    memory_mb: serverless memory (1024-6144 in 1 GB steps); torch, transformers and the FP32 MiniLM need ~1.5 GB.
    max_concurrency: serverless invocations at once (1-200; the account's serverless quota bounds the sum).
    instance_type: a provisioned instance (``ml.m5.large``) instead of serverless; instance_count: how many.
    """

    memory_mb: int = 3072
    max_concurrency: int = 5
    instance_type: str | None = None
    instance_count: int = 1

    def __post_init__(self) -> None:
        if self.instance_type is None:
            if self.memory_mb not in MEMORY_SIZES_MB:
                raise CloudError(f"serverless memory must be one of {MEMORY_SIZES_MB} MB, got {self.memory_mb}")
            if not 1 <= self.max_concurrency <= 200:
                raise CloudError(f"serverless max concurrency must be 1-200, got {self.max_concurrency}")
        elif not self.instance_type.startswith("ml.") or self.instance_count < 1:
            raise CloudError(f"a provisioned endpoint needs an ml.* instance type and a count >= 1, got "
                             f"{self.instance_type!r} x {self.instance_count}")

    def variant(self, model_name: str) -> dict[str, Any]:
        """The endpoint configuration's production variant."""
        out: dict[str, Any] = {"VariantName": VARIANT, "ModelName": model_name}
        if self.instance_type is None:
            out["ServerlessConfig"] = {"MemorySizeInMB": self.memory_mb, "MaxConcurrency": self.max_concurrency}
        else:
            out.update(InstanceType=self.instance_type, InitialInstanceCount=self.instance_count)
        return out


def endpoint_name(group: str, version: int) -> str:
    """``slm-intents-snips-7``: SageMaker names are 1-63 of letters, digits and inner hyphens."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", f"{group}-{version}").strip("-")
    if len(name) > 63:
        name = f"{name[:63 - len(str(version)) - 1].rstrip('-')}-{version}"
    return name


def _call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    from .aws.clients import call

    return call(fn, **kwargs)


def _not_found(exc: AwsCallFailed) -> bool:
    # SageMaker answers a missing endpoint / config / model with ValidationException "Could not find ..."
    return exc.code in ("ValidationException", "ResourceNotFound") and "could not find" in str(exc).lower()


def _package(sm: Any, group: str, version: int) -> dict[str, Any]:
    from .registry.sagemaker import SageMakerRegistry

    registry = SageMakerRegistry(client=sm)
    # the registry knows how a version's ARN is spelled (the group name lower-cased); its description has the
    # container the endpoint will run
    return registry.describe(group, version)


def _wait(sm: Any, name: str, *, want: str, out: TextIO, poll_s: float, timeout_s: float,
          sleep: Callable[[float], None], clock: Callable[[], float]) -> dict[str, Any] | None:
    """Poll DescribeEndpoint until ``want`` (``InService``) or gone (``want="deleted"``); print each new status."""
    started, last = clock(), None
    while True:
        try:
            desc = _call(sm.describe_endpoint, EndpointName=name)
        except AwsCallFailed as exc:
            if want == "deleted" and _not_found(exc):
                print(f"{name}: deleted ({clock() - started:.0f}s)", file=out)
                return None
            raise
        state = desc.get("EndpointStatus", "")
        if state != last:
            print(f"{name}: {state} ({clock() - started:.0f}s)", file=out)
            last = state
        if want != "deleted" and state in FINAL:
            return desc
        if clock() - started > timeout_s:
            raise AwsError(f"endpoint {name} is still {state} after {timeout_s:.0f}s; see `python -m cloud.endpoint "
                           f"status` (it keeps going on AWS)")
        sleep(poll_s)


def model_container(desc: dict[str, Any], version: int, serve: str = "teacher") -> tuple[dict[str, Any], str]:
    """The ``PrimaryContainer`` of ``CreateModel`` for a DescribeModelPackage answer, and what it serves.

    ``serve="teacher"`` with ``artifacts.teacher_model`` in the package's metadata: the package's first container
    (``Image``, ``Environment``) with the teacher's ``ModelDataUrl``. ``ModelPackageName`` cannot be combined with
    ``Image`` or ``ModelDataUrl`` in one container, so this container names no package. Otherwise (``"package"``,
    or no teacher recorded): the package by ``ModelPackageName``, as SageMaker resolves it.
    """
    if serve not in SERVE_CHOICES:
        raise CloudError(f"--serve must be one of {SERVE_CHOICES}, got {serve!r}")
    env_version = {"SLM_MODEL_VERSION": str(version)}
    teacher = (desc.get("CustomerMetadataProperties") or {}).get(TEACHER_KEY, "")
    if serve == "package" or not teacher:
        return {"ModelPackageName": desc["ModelPackageArn"], "Environment": env_version}, "package"
    if not (teacher.startswith("s3://") and teacher.endswith(".tar.gz") and len(teacher) <= 1024):
        # ModelDataUrl: an S3 URI (at most 1024 characters) of one gzip-compressed tar archive (.tar.gz)
        raise CloudError(f"the package's {TEACHER_KEY} is {teacher!r}, not the s3://.../model.tar.gz of a "
                         "training job: serve the package (--serve package) or register the version again")
    containers = (desc.get("InferenceSpecification") or {}).get("Containers") or [{}]
    image = containers[0].get("Image")
    if not image:
        raise CloudError("the package's container has no Image to serve the teacher with (--serve package)")
    environment = {**(containers[0].get("Environment") or {}), **env_version}
    if len(environment) > _ENVIRONMENT_MAX:
        raise CloudError(f"the package's container has {len(environment)} environment variables with "
                         f"SLM_MODEL_VERSION; a SageMaker container takes at most {_ENVIRONMENT_MAX}")
    return {"Image": image, "ModelDataUrl": teacher, "Environment": environment}, "teacher"


def deploy(group: str, version: int, *, role_arn: str, serving: Serving = Serving(), name: str | None = None,
           allow_unapproved: bool = False, serve: str = "teacher", client: Any = None, region: str | None = None,
           wait: bool = True, out: TextIO | None = None, poll_s: float = 15.0, timeout_s: float = 1800.0,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Create the model, endpoint configuration and endpoint of ``group``/``version``; returns :func:`status` with
    ``serves`` added (``teacher`` or ``package``, and the model data or the package ARN).

    ``serve``: ``"teacher"`` (the default) serves the teacher recorded in the package's metadata, when there is one
    (:func:`model_container`); ``"package"`` the registered model (the student when distilled)."""
    from .aws.clients import make_client

    out = out or sys.stderr  # looked up per call: a default bound at import would outlive a redirected stderr

    sm = client or make_client("sagemaker", region=region)
    desc = _package(sm, group, version)
    arn, approval = desc["ModelPackageArn"], desc.get("ModelApprovalStatus", "")
    if approval != "Approved" and not allow_unapproved:
        raise CloudError(f"{group}/{version} is {approval or 'not approved'}: approve it (python -m cloud.registry "
                         "approve) or pass --allow-unapproved")
    containers = (desc.get("InferenceSpecification") or {}).get("Containers") or [{}]
    if not (containers[0].get("Environment") or {}).get("SAGEMAKER_PROGRAM"):
        raise CloudError(f"{group}/{version} was registered without the inference handler (no SAGEMAKER_PROGRAM in "
                         "its container): register it again with this pipeline (cloud.aws.pipeline)")
    container, served = model_container(desc, version, serve)
    if serve == "teacher" and served == "package":
        print(f"{group}/{version} records no teacher ({TEACHER_KEY}): serving the registered model", file=out)
    name = name or endpoint_name(group, version)
    created: list[tuple[Callable[..., Any], dict[str, str]]] = []
    try:
        _call(sm.create_model, ModelName=name, ExecutionRoleArn=role_arn,
              PrimaryContainer=container)
        created.append((sm.delete_model, {"ModelName": name}))
        _call(sm.create_endpoint_config, EndpointConfigName=name, ProductionVariants=[serving.variant(name)])
        created.append((sm.delete_endpoint_config, {"EndpointConfigName": name}))
        _call(sm.create_endpoint, EndpointName=name, EndpointConfigName=name)
    except AwsError:
        for fn, kwargs in reversed(created):  # leave nothing half-made behind
            try:
                _call(fn, **kwargs)
            except AwsCallFailed as exc:
                print(f"warning: could not remove {kwargs}: {exc}", file=out)
        raise
    kind = serving.instance_type or f"serverless, {serving.memory_mb} MB, {serving.max_concurrency} at once"
    source = f"the teacher {container['ModelDataUrl']} of {arn}" if served == "teacher" else arn
    print(f"{name}: creating from {source} ({kind})", file=out)
    if wait:
        final = _wait(sm, name, want="InService", out=out, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep,
                      clock=clock)
        if final is not None and final.get("EndpointStatus") != "InService":
            raise AwsError(f"endpoint {name} is {final.get('EndpointStatus')}: {final.get('FailureReason', '')} "
                           f"(python -m cloud.endpoint delete --version {version} removes it)")
    result = status(name, client=sm)
    result["serves"] = {"model": served, "source": container.get("ModelDataUrl") or arn, "package": arn}
    return result


def status(name: str, *, client: Any = None, region: str | None = None) -> dict[str, Any]:
    """The endpoint's status, variants and configuration as JSON-ready data."""
    from .aws.clients import make_client

    sm = client or make_client("sagemaker", region=region)
    desc = _call(sm.describe_endpoint, EndpointName=name)
    variants = []
    for v in desc.get("ProductionVariants", []):
        row: dict[str, Any] = {"name": v.get("VariantName")}
        if v.get("CurrentServerlessConfig"):
            row["serverless"] = v["CurrentServerlessConfig"]
        if "CurrentInstanceCount" in v:
            row["instances"] = v["CurrentInstanceCount"]
        variants.append(row)
    return {"endpoint": desc.get("EndpointName", name), "arn": desc.get("EndpointArn", ""),
            "status": desc.get("EndpointStatus", ""), "failure": desc.get("FailureReason", ""),
            "config": desc.get("EndpointConfigName", ""), "variants": variants,
            "created": _iso(desc.get("CreationTime")), "updated": _iso(desc.get("LastModifiedTime"))}


def delete(name: str, *, client: Any = None, region: str | None = None, wait: bool = True, out: TextIO | None = None,
           poll_s: float = 10.0, timeout_s: float = 900.0, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Delete the endpoint, then its configuration and the models in it; what is already gone is skipped."""
    from .aws.clients import make_client

    out = out or sys.stderr

    sm = client or make_client("sagemaker", region=region)
    removed: dict[str, Any] = {"endpoint": None, "config": None, "models": []}
    config_name, models = name, [name]
    try:
        desc = _call(sm.describe_endpoint, EndpointName=name)
        config_name = desc.get("EndpointConfigName", name)
        _call(sm.delete_endpoint, EndpointName=name)
        removed["endpoint"] = name
        if wait:
            _wait(sm, name, want="deleted", out=out, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep, clock=clock)
    except AwsCallFailed as exc:
        if not _not_found(exc):
            raise
    try:
        config = _call(sm.describe_endpoint_config, EndpointConfigName=config_name)
        models = [v["ModelName"] for v in config.get("ProductionVariants", []) if v.get("ModelName")]
        _call(sm.delete_endpoint_config, EndpointConfigName=config_name)
        removed["config"] = config_name
    except AwsCallFailed as exc:
        if not _not_found(exc):
            raise
    for model in models:
        try:
            _call(sm.delete_model, ModelName=model)
            removed["models"].append(model)
        except AwsCallFailed as exc:
            if not _not_found(exc):
                raise
    return removed


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cloud.endpoint", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--version", type=int, help="the registered version (names the endpoint <group>-<version>)")
    common.add_argument("--group", default=None, help="model package group (default: pipelines/params.json)")
    common.add_argument("--name", default=None, help="endpoint name (default: <group>-<version>)")
    common.add_argument("--region", default=None)
    common.add_argument("--params", default=None, help="params file (default: pipelines/params.json)")
    d = sub.add_parser("deploy", parents=[common], help="serve a registered version on a SageMaker endpoint",
                       formatter_class=HelpFormatter)
    d.add_argument("--role-arn", required=True, help="the role the endpoint's container runs as (SageMaker role)")
    d.add_argument("--memory-mb", type=int, default=Serving.memory_mb, choices=MEMORY_SIZES_MB,
                   help="serverless memory")
    d.add_argument("--max-concurrency", type=int, default=Serving.max_concurrency,
                   help="serverless invocations at once (1-200)")
    d.add_argument("--instance-type", default=None, help="a provisioned instance (ml.m5.large) instead of serverless")
    d.add_argument("--instance-count", type=int, default=1, help="provisioned instances (with --instance-type)")
    d.add_argument("--serve", choices=SERVE_CHOICES, default="teacher",
                   help="teacher: the teacher's model.tar.gz the package records (artifacts.teacher_model), the "
                        "cloud reference of cloud.shadow; package: the registered model (the student when "
                        "distilled). A version without a teacher serves the package either way")
    d.add_argument("--allow-unapproved", action="store_true", help="deploy a version that is not approved")
    d.add_argument("--no-wait", action="store_true", help="return once the endpoint is being created")
    d.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for InService")
    sub.add_parser("status", parents=[common], help="the endpoint's status", formatter_class=HelpFormatter)
    x = sub.add_parser("delete", parents=[common], help="delete the endpoint, its configuration and model",
                       formatter_class=HelpFormatter)
    x.add_argument("--no-wait", action="store_true", help="return once the deletion has started")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .params import load_params

        group = args.group or load_params(args.params).model_package_group
        if args.name is None and args.version is None:
            parser.error("give --version N (or --name)")
        name = args.name or endpoint_name(group, args.version)
        if args.command == "deploy":
            if args.version is None:
                parser.error("deploy needs --version")
            serving = Serving(memory_mb=args.memory_mb, max_concurrency=args.max_concurrency,
                              instance_type=args.instance_type, instance_count=args.instance_count)
            result = deploy(group, args.version, role_arn=args.role_arn, serving=serving, name=name,
                            allow_unapproved=args.allow_unapproved, serve=args.serve, region=args.region,
                            wait=not args.no_wait, timeout_s=args.timeout)
        elif args.command == "status":
            result = status(name, region=args.region)
        else:
            result = delete(name, region=args.region, wait=not args.no_wait)
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0 if args.command != "status" or result["status"] == "InService" else 1


if __name__ == "__main__":
    raise SystemExit(main())
