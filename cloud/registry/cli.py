"""``python -m cloud.registry``: list, show, approve and reject model package versions.

::

    python -m cloud.registry [--store DIR] [--backend local|sagemaker] [--region R] [--params F] COMMAND ...
    python -m cloud.registry list [--group G] [--status S] [--stage S] [--json]
    python -m cloud.registry show [GROUP] VERSION [--json]
    python -m cloud.registry approve [GROUP] VERSION [--by NAME] --reason TEXT [--json]
    python -m cloud.registry reject  [GROUP] VERSION [--by NAME] --reason TEXT [--json]

GROUP defaults to ``model_package_group`` of the params file; ``--by`` defaults to ``$USER``, else the login name.
``--backend sagemaker`` uses the SageMaker Model Registry of ``--region`` (default: the AWS configuration).
Exit codes: 0 done, 1 registry error (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from ..errors import CloudError, RegistryError
from ..store import DEFAULT_STORE, Store
from .base import ApprovalStatus, ModelPackage, ModelRegistry, Stage

__all__ = ["main", "build_parser"]


def _add_common(parser: argparse.ArgumentParser, default: Any) -> None:
    # Global options are accepted before or after the sub-command. The sub-commands' copies default to
    # SUPPRESS, so an option left out after the sub-command keeps the value given before it.
    parser.add_argument("--store", default=default(DEFAULT_STORE), help=f"store directory (default {DEFAULT_STORE})")
    parser.add_argument("--backend", default=default("local"), choices=("local", "sagemaker"),
                        help="registry backend (default local)")
    parser.add_argument("--region", default=default(None),
                        help="AWS region of the SageMaker registry (default: AWS_REGION / the AWS config)")
    parser.add_argument("--params", default=default(None),
                        help="params file naming the default group (default pipelines/params.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cloud.registry", description="The model registry.")
    _add_common(parser, lambda value: value)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, summary: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=summary)
        _add_common(p, lambda value: argparse.SUPPRESS)
        return p

    p = add("list", "list model package versions")
    p.add_argument("--group", help="only this group")
    p.add_argument("--status", help="only this approval status (PendingManualApproval, Approved, Rejected)")
    p.add_argument("--stage", help="only this stage (Staging, Prod, Archived)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_cmd_list)

    p = add("show", "show one version and its history")
    _add_ref(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_show)

    for name, handler, verb in (("approve", _cmd_approve, "approve (moves it to Prod)"),
                                ("reject", _cmd_reject, "reject (moves it to Archived)")):
        p = add(name, f"{verb} a version")
        _add_ref(p)
        p.add_argument("--by", help="who decides (default: $USER, else the login name)")
        p.add_argument("--reason", required=True, help="why (kept in the history)")
        p.add_argument("--json", action="store_true", help="print the updated version as JSON")
        p.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: keep argparse's message, return its code
        return int(exc.code or 0)
    try:
        return int(args.handler(args))
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# helpers -------------------------------------------------------------------------------------------------
def _registry_path(args: argparse.Namespace) -> Any:
    try:
        return Store.at(args.store).registry_db
    except NotImplementedError as exc:
        raise RegistryError(str(exc)) from None


def _open(args: argparse.Namespace) -> ModelRegistry:
    from . import open_registry

    if args.backend == "local":
        # Reading commands never create an empty registry file as a side effect.
        return open_registry("local", path=_registry_path(args), create=False)
    return open_registry(args.backend, region=args.region)


def _add_ref(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", nargs="?", metavar="GROUP", help="model package group (default: from the params file)")
    parser.add_argument("version", metavar="VERSION", help="version number")


def _ref(args: argparse.Namespace) -> tuple[str, int]:
    group = args.group
    if group is None:
        from ..params import load_params

        group = load_params(args.params).model_package_group
    try:
        version = int(args.version)
    except ValueError:
        version = 0
    if version < 1:
        raise RegistryError(f"version must be a positive integer, got {args.version!r}")
    return group, version


def login_name() -> str:
    """Who runs this: ``$USER``, else the login name from the environment or the password database ("" if none).

    ``getpass.getuser`` reads LOGNAME, USER, LNAME and USERNAME, then the password database; a container may have
    none of them (it raises OSError, KeyError on older Pythons).
    """
    import getpass

    user = os.environ.get("USER", "").strip()
    if user:
        return user
    try:
        return getpass.getuser().strip()
    except (OSError, KeyError):
        return ""


def _actor(args: argparse.Namespace) -> str:
    by = (args.by or login_name()).strip()
    if not by:
        raise RegistryError("who decides is unknown: pass --by NAME (no USER and no login name)")
    return by


def _when(pkg_time: Any) -> str:
    return pkg_time.strftime("%Y-%m-%d %H:%M:%S")


def _f1(pkg: ModelPackage) -> str:
    return "-" if pkg.macro_f1 is None else f"{pkg.macro_f1:.4f}"


def _table(packages: Sequence[ModelPackage]) -> str:
    header = ("GROUP", "VERSION", "STATUS", "STAGE", "MACRO-F1", "CREATED (UTC)")
    rows = [header] + [
        (p.group, str(p.version), p.approval_status.value, p.stage.value, _f1(p), _when(p.created_at))
        for p in packages
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


# commands ------------------------------------------------------------------------------------------------
def _cmd_list(args: argparse.Namespace) -> int:
    status = ApprovalStatus.parse(args.status) if args.status else None
    stage = Stage.parse(args.stage) if args.stage else None
    if args.backend == "local" and not _registry_path(args).exists():
        packages: list[ModelPackage] = []  # nothing registered yet in this store
        if args.group:
            raise RegistryError(f"unknown model package group {args.group!r} (no registry at {_registry_path(args)})")
    else:
        with _open(args) as reg:
            groups = [args.group] if args.group else [g.name for g in reg.list_groups()]
            packages = [p for g in groups for p in reg.list_versions(g, status=status, stage=stage)]
    if args.json:
        _dump([p.to_dict() for p in packages])
    elif packages:
        print(_table(packages))
    else:
        print("no model packages registered")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    group, version = _ref(args)
    with _open(args) as reg:
        pkg = reg.get(group, version)
        events = reg.history(group, version)
    if args.json:
        _dump({**pkg.to_dict(), "history": [e.to_dict() for e in events]})
        return 0
    data = pkg.to_dict()
    why = f": {pkg.stage_description}" if pkg.stage_description else ""
    lines = [
        pkg.ref,
        f"  status       {pkg.approval_status.value}",
        f"  stage        {pkg.stage.value} ({pkg.stage_status}{why})",
        f"  macro-F1     {_f1(pkg)}",
        f"  description  {pkg.description or '-'}",
        f"  created      {data['created_at']}",
        f"  updated      {data['updated_at']}",
    ]
    for section in ("artifacts", "lineage", "metrics"):
        lines.append(f"  {section}")
        lines += [f"    {k}: {json.dumps(v, sort_keys=True)}" for k, v in data[section].items()] or ["    -"]
    lines.append("  history")
    for e in events:
        before = f"{e.from_status.value}/{e.from_stage.value} -> " if e.from_status and e.from_stage else ""
        lines.append(f"    {e.to_dict()['at']}  {e.action.value} by {e.by or '-'}: "
                     f"{before}{e.to_status.value}/{e.to_stage.value} ({e.reason})")
    print("\n".join(lines))
    return 0


def _decide(args: argparse.Namespace, target: ApprovalStatus) -> int:
    group, version = _ref(args)
    by = _actor(args)
    with _open(args) as reg:
        previous = reg.latest(group, stage=Stage.PROD)
        if target is ApprovalStatus.APPROVED:
            pkg = reg.approve(group, version, by, args.reason)
        else:
            pkg = reg.reject(group, version, by, args.reason)
    if args.json:
        _dump(pkg.to_dict())
        return 0
    print(f"{pkg.ref}: {pkg.approval_status.value} / {pkg.stage.value} (by {by})")
    if target is ApprovalStatus.APPROVED and previous is not None and previous.version != pkg.version:
        print(f"{previous.ref}: moved out of Prod to {Stage.ARCHIVED.value}")
    return 0


def _cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, ApprovalStatus.APPROVED)


def _cmd_reject(args: argparse.Namespace) -> int:
    return _decide(args, ApprovalStatus.REJECTED)
