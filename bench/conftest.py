"""Fixtures of the pytest-benchmark suite.

    .venv/bin/python -m pytest bench/bench_hot_path.py --benchmark-enable --bench-bundle .store/slm-intents/edge/1

Without ``--bench-bundle`` (as in ``make test``, where benchmarks run once as plain tests) a tiny bundle is built.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-bundle", default=None, help="edge bundle directory to benchmark")
    parser.addoption("--bench-threads", type=int, default=2, help="intra-op threads")


@pytest.fixture(scope="session")
def bench_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = request.config.getoption("--bench-bundle")
    if given:
        return Path(given)
    from tests.conftest import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bench") / "bundle")[0].root


@pytest.fixture(scope="session")
def classifier(request: pytest.FixtureRequest, bench_bundle: Path):
    from edge_runtime import IntentClassifier

    with IntentClassifier.from_bundle(bench_bundle, backend="onnxruntime",
                                      threads=request.config.getoption("--bench-threads")) as clf:
        yield clf
