"""Command line of ``python -m edge_runtime.bench``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _default_profile() -> str:
    return "rpi4" if platform.machine() in ("aarch64", "arm64") else "x86-ci"


def main(argv: Sequence[str] | None = None) -> int:
    from .._argparse import HelpFormatter

    parser = argparse.ArgumentParser(prog="python -m edge_runtime.bench", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--bundle", required=True, help="edge bundle directory")
    parser.add_argument("--profile", default=None, help="budget profile (default: x86-ci on x86_64, rpi4 on arm64)")
    parser.add_argument("--budgets", default=None,
                        help="budgets JSON (default: the budgets shipped with the package, bench/budgets.json)")
    parser.add_argument("--json", dest="json_out", default=None, help="write the result JSON here")
    parser.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "dlr", "fake"],
                        help="inference backend")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    parser.add_argument("--iterations", type=int, default=500, help="batch-1 predictions timed")
    parser.add_argument("--batches", type=int, default=30, help="batches timed per batch size")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes started for cold start (0: skip)")
    args = parser.parse_args(argv)

    from ..errors import EdgeRuntimeError
    from .runner import check_budget, load_budgets, run_bench

    profile = args.profile or _default_profile()
    budgets = load_budgets(args.budgets)
    if profile not in budgets:
        parser.error(f"unknown profile {profile!r}; known: {', '.join(sorted(budgets))}")
    try:
        result = run_bench(args.bundle, backend=args.backend, threads=args.threads, iterations=args.iterations,
                           batches=args.batches, cold_runs=args.cold_runs)
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.budget = check_budget(result.flat(), profile, budgets)
    _print_table(result, budgets[profile])
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0 if result.budget["passed"] else 1


def _print_table(result, spec) -> None:  # type: ignore[no-untyped-def]
    limits = {k: ("<=", v) for k, v in spec.get("max", {}).items()}
    limits.update({k: (">=", v) for k, v in spec.get("min", {}).items()})
    failed = {v["metric"] for v in result.budget["violations"]}
    m = result.model
    print(f"bundle {m['name']} v{m['version']}  backend={m['backend']}  threads={result.settings['threads']}  "
          f"profile={result.budget['profile']}")
    arch = m.get("architecture") or {}
    if arch:
        origin = f", from teacher layers {arch['distilled_from_layers']}" if arch.get("distilled_from_layers") else ""
        print(f"model: {arch.get('layers')} layers x {arch.get('hidden_size')} hidden, "
              f"{arch.get('attention_heads')} heads{origin}")
    print(f"{'metric':<22}{'value':>12}  {'budget':>12}  status")
    for key, value in result.flat().items():
        op, limit = limits.get(key, ("", None))
        status = "-" if limit is None else ("FAIL" if key in failed else "ok")
        budget = f"{op} {limit}" if limit is not None else ""
        print(f"{key:<22}{value:>12.4g}  {budget:>12}  {status}")
    print("budget:", "PASSED" if result.budget["passed"] else f"FAILED ({len(failed)} over)")
