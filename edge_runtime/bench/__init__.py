"""``python -m edge_runtime.bench``: latency, throughput, cold start and RAM of a bundle, checked against budgets."""

from __future__ import annotations

from .runner import BenchResult, check_budget, load_budgets, run_bench
from .utterances import UTTERANCES

__all__ = ["BenchResult", "UTTERANCES", "check_budget", "load_budgets", "run_bench", "main"]


def main(argv: list[str] | None = None) -> int:
    from .cli import main as _main

    return _main(argv)
