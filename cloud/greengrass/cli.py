"""``python -m cloud.greengrass build``: both components from a registered model version (:mod:`.build`).

Examples::

    # a version of the local store's registry (python -m cloud.pipeline run)
    python -m cloud.greengrass build --version 3 --sign-key signing.key
    # a version the SageMaker pipeline registered: bundle from s3://B/slm-intents/edge/3.zip
    python -m cloud.greengrass build --version 3 --registry sagemaker --store s3://B --region R --require-approved
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ..clihelp import HelpFormatter
from ..errors import CloudError
from ..store import DEFAULT_STORE
from .build import build_components
from .names import APP_COMPONENT

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cloud.greengrass",
                                     description="Build the Greengrass v2 model and app components.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build both components from a registered model version",
                       formatter_class=HelpFormatter)
    b.add_argument("--version", type=int, required=True, help="model package version in the registry")
    b.add_argument("--registry", choices=("local", "sagemaker"), default="local",
                   help="local: the store's SQLite registry; sagemaker: the SageMaker Model Registry")
    b.add_argument("--store", default=None,
                   help=f"the store holding the bundle: a local one (default {DEFAULT_STORE}), or with "
                        "--registry sagemaker the pipeline's s3://BUCKET[/PREFIX]")
    b.add_argument("--region", default=None, help="AWS region (--registry sagemaker; default: AWS_REGION)")
    b.add_argument("--group", default=None, help="model package group (default: params.json's)")
    b.add_argument("--out", default=None, help="output directory (default: <store>/slm-intents/greengrass/<version>; "
                                              "for s3:// stores the local mirror .store/s3/<bucket>/...)")
    b.add_argument("--bucket", default=None,
                   help="local registry: S3 bucket in the artifact URIs (default GDK's placeholder BUCKET_NAME); "
                        "with an s3:// store the URIs are where publish uploads them")
    b.add_argument("--app-version", default=None, help="app component version (default: the edge_runtime version)")
    b.add_argument("--wheel", default=None, help="use this slm_intents wheel instead of building one")
    b.add_argument("--sign-key", default=None, metavar="PEM",
                   help="Ed25519 private key: sign the bundle (manifest.sig goes into model.zip)")
    b.add_argument("--require-approved", action="store_true",
                   help="refuse versions that are not Approved (without it any status builds, with a note)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sagemaker = args.registry == "sagemaker"
    if sagemaker and not str(args.store or "").startswith("s3://"):
        parser.error("--registry sagemaker reads the bundle from the pipeline's bucket: pass --store s3://BUCKET")
    if sagemaker and args.bucket:
        parser.error("--bucket is for the local registry; with --store s3://BUCKET the artifact URIs are in BUCKET")
    try:
        result = build_components(args.version, store=args.store, group=args.group, out=args.out, bucket=args.bucket,
                                  app_version=args.app_version, wheel=args.wheel,
                                  require_approved=args.require_approved, sign_key=args.sign_key,
                                  registry=args.registry, region=args.region)
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    reg = result.registry
    print(f"registry {reg['group']} v{reg['version']} ({reg['approval_status']}, {reg['stage']})")
    for c in result.components:
        for a in c["artifacts"]:
            print(f"  {c['name']} {c['version']}: {a['uri']}  sha256 {a['sha256']}  ({a['bytes']} bytes)")
        print(f"    recipe {c['recipe']} ({c['recipe_bytes']} bytes)")
    signature = reg["bundle"].get("signature")
    print(f"bundle signature: {signature['source'] if signature else 'none (devices with a BundlePublicKey refuse it)'}")
    if reg["approval_status"] != "Approved":
        print(f"note: this version is {reg['approval_status']}; approve it before a fleet deployment")
    model, app = result.component("model"), result.component("app")
    update = ""
    if signature and signature.get("public_key_b64"):
        config = {APP_COMPONENT: {"MERGE": {"BundlePublicKey": signature["public_key_b64"]}}}
        update = f" --update-config '{json.dumps(config)}'"
    print("local deployment on a core device:\n"
          f"  sudo /greengrass/v2/bin/greengrass-cli deployment create --recipeDir {result.out / 'recipes'} "
          f"--artifactDir {result.out / 'artifacts'} --merge \"{model['name']}={model['version']}\" "
          f"--merge \"{app['name']}={app['version']}\"{update}")
    return 0
