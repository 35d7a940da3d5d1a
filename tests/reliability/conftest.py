"""Fixtures of the reliability tests: the service tests' tiny classifier and broker, reused."""

from tests.edge_runtime.service.conftest import broker, clf  # noqa: F401
