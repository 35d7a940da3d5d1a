"""The AWS sub-commands of ``python -m cloud.pipeline`` and ``run --store s3://bucket``.

::

    python -m cloud.pipeline definition --region R --role-arn ARN --bucket B [--set K=V ...] [--out F]   # offline
    python -m cloud.pipeline upsert     --region R --role-arn ARN --bucket B [--set K=V ...]
    python -m cloud.pipeline start      --region R [--name N] [--param MinMacroF1=0.96 ...] [--wait]
    python -m cloud.pipeline status     --region R [--name N] [--execution-arn ARN] [--wait] [--json]
    python -m cloud.pipeline run --store s3://B ...   # runs locally, then publishes the store to S3

Exit codes: 0 done (``status``: the execution did not fail), 1 an AWS or pipeline error, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from ..clihelp import HelpFormatter
from ..errors import CloudError

__all__ = ["add_pipeline_commands", "run_with_s3_store"]

DEFAULT_NAME = "slm-intents"


def _build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", required=True, help="AWS region of the pipeline")
    p.add_argument("--role-arn", required=True, help="SageMaker execution role (infra/sagemaker-role.yaml)")
    p.add_argument("--bucket", required=True, help="the store's bucket (infra/storage.yaml)")
    p.add_argument("--store-prefix", default="", help="key prefix above slm-intents/ in the bucket")
    p.add_argument("--name", default=DEFAULT_NAME, help="pipeline name")
    p.add_argument("--params", default=None, help="params JSON (default: pipelines/params.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one field of the params (repeatable; the value is JSON, else a string), e.g. "
                        "train.epochs=3: the definition is built from the result and the source bundle carries it "
                        "as pipelines/params.json, which every job reads")
    p.add_argument("--image-uri", default=None, help="processing/training image (default: PyTorch 2.6 CPU training)")
    p.add_argument("--inference-image-uri", default=None,
                   help="image recorded in the model package (default: PyTorch 2.6 CPU inference)")
    p.add_argument("--processing-instance-type", default="ml.m5.xlarge",
                   help="instance type of the processing jobs (parameter ProcessingInstanceType)")
    p.add_argument("--training-instance-type", default="ml.m5.2xlarge",
                   help="instance type of the training jobs (parameter TrainingInstanceType)")
    neo = p.add_mutually_exclusive_group()
    neo.add_argument("--neo", dest="neo", action="store_true", default=False,
                     help="default NeoCompile=true: try SageMaker Neo (docs/aws.md: it does not compile this model)")
    neo.add_argument("--no-neo", dest="neo", action="store_false",
                     help="default NeoCompile=false, the default (ONNX Runtime INT8 only)")


def add_pipeline_commands(sub: Any) -> None:
    """Add ``definition``, ``upsert``, ``start`` and ``status`` to ``python -m cloud.pipeline``'s sub-parsers."""
    p = sub.add_parser("definition", help="print the SageMaker pipeline definition JSON (offline)",
                       formatter_class=HelpFormatter)
    _build_options(p)
    p.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    p.set_defaults(func=_definition)

    p = sub.add_parser("upsert", help="upload the code and create or update the SageMaker pipeline",
                       formatter_class=HelpFormatter)
    _build_options(p)
    p.add_argument("--description", default="", help="pipeline description (default: \"<model> training pipeline\")")
    p.set_defaults(func=_upsert)

    p = sub.add_parser("start", help="start a SageMaker pipeline execution",
                       formatter_class=HelpFormatter)
    p.add_argument("--region", required=True, help="AWS region of the pipeline")
    p.add_argument("--name", default=DEFAULT_NAME, help="pipeline name")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a pipeline parameter (repeatable), e.g. InputData=s3://bucket/data/")
    p.add_argument("--display-name", default=None, help="the execution's display name")
    p.add_argument("--wait", action="store_true", help="wait for the execution to end; exit 1 unless it succeeded")
    p.set_defaults(func=_start)

    p = sub.add_parser("status", help="status of the latest (or a given) execution and its steps",
                       formatter_class=HelpFormatter)
    p.add_argument("--region", required=True, help="AWS region of the pipeline")
    p.add_argument("--name", default=DEFAULT_NAME, help="pipeline name")
    p.add_argument("--execution-arn", default=None, help="the execution (default: the latest)")
    p.add_argument("--wait", action="store_true", help="wait for the execution to end")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_status)


def _config(args: argparse.Namespace) -> Any:
    from ..params import parse_overrides
    from .pipeline import PipelineConfig

    return PipelineConfig(region=args.region, role_arn=args.role_arn, bucket=args.bucket, name=args.name,
                          overrides=parse_overrides(args.overrides),
                          store_prefix=args.store_prefix.strip("/"),
                          params_path=Path(args.params) if args.params else None, image_uri=args.image_uri,
                          inference_image_uri=args.inference_image_uri,
                          processing_instance_type=args.processing_instance_type,
                          training_instance_type=args.training_instance_type, neo=args.neo)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        # The SDK logs every default it applies; a definition on stdout should stand alone.
        for name in ("sagemaker", "sagemaker.config"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            return fn(args)
        except CloudError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return wrapper


@_guard
def _definition(args: argparse.Namespace) -> int:
    from .pipeline import definition

    text = json.dumps(definition(_config(args)), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


@_guard
def _upsert(args: argparse.Namespace) -> int:
    from .pipeline import upsert

    result = upsert(_config(args), description=args.description)
    print(json.dumps(result, indent=2))
    return 0


def _parse_params(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CloudError(f"--param wants NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def wait_for_execution(name: str, *, region: str | None, execution_arn: str | None, poll_s: float = 30.0,
                       sleep: Callable[[float], None] | None = None, client: Any = None,
                       out: Any = None) -> dict[str, Any]:
    """Poll the execution until it ends, printing a line to ``out`` (stderr) whenever it or a step changes state."""
    import time

    from .pipeline import FINAL_STATES, status

    out = out or sys.stderr
    sleep = sleep or time.sleep
    seen: dict[str, str] = {}
    while True:
        result = status(name, region=region, execution_arn=execution_arn, client=client)
        execution_arn = result["execution_arn"]
        now = {"(execution)": result["status"], **{s["name"]: s["status"] or "" for s in result["steps"]}}
        for key, state in now.items():
            if seen.get(key) != state:
                print(f"[{time.strftime('%H:%M:%S')}] {key}: {state}", file=out, flush=True)
        seen = now
        if result["status"] in FINAL_STATES:
            return result
        sleep(poll_s)


@_guard
def _start(args: argparse.Namespace) -> int:
    from .pipeline import start

    arn = start(args.name, region=args.region, parameters=_parse_params(args.param), display_name=args.display_name)
    print(arn)
    if not args.wait:
        return 0
    result = wait_for_execution(args.name, region=args.region, execution_arn=arn)
    print(_table(result))
    return 0 if result["status"] == "Succeeded" else 1


@_guard
def _status(args: argparse.Namespace) -> int:
    from .pipeline import status

    result = (wait_for_execution(args.name, region=args.region, execution_arn=args.execution_arn) if args.wait else
              status(args.name, region=args.region, execution_arn=args.execution_arn))
    print(json.dumps(result, indent=2) if args.json else _table(result))
    return 1 if result["status"] in ("Failed", "Stopped") else 0


def _table(result: dict[str, Any]) -> str:
    lines = [f"{result['pipeline']}: {result['status']}  ({result['execution_arn']})"]
    if result.get("failure"):
        lines.append(f"  failure: {result['failure']}")
    for step in result["steps"]:
        cached = " (cached)" if step["cache_hit"] else ""
        why = f"  {step['failure']}" if step["failure"] else ""
        lines.append(f"  {step['name']:<18} {step['status'] or '-':<11}{cached}{why}")
    return "\n".join(lines)


def run_with_s3_store(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """``run --store s3://bucket``: run locally in a mirror of the store, then publish it to the bucket.

    The mirror is ``.store/s3/<bucket>[/<prefix>]``, so step caching works across runs on one machine; the
    local registry file is fetched from the bucket first (when there is one) so version numbers continue.
    The SageMaker pipeline (``upsert`` / ``start``) is the way to run on AWS itself.
    """
    from ..store import DEFAULT_STORE, Store
    from .errors import AwsError
    from .s3store import S3Store

    remote = S3Store.from_uri(args.store)
    mirror = Store(Path(DEFAULT_STORE) / "s3" / remote.bucket / remote.prefix)
    try:
        registry = remote.uri_of("registry.sqlite")
        if remote.exists(registry):
            remote.download_file(registry, mirror.registry_db)
    except AwsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"S3 store {remote.root}: running in the local mirror {mirror.root}", flush=True)
    args.store = str(mirror.root)
    rc = run(args)
    try:
        uploaded = remote.publish_local(mirror)
    except AwsError as exc:
        print(f"error: publishing to {remote.root} failed: {exc}", file=sys.stderr)
        return 1
    print(f"published {len(uploaded)} files to {remote.base}/ (and {remote.last_run})")
    return rc
