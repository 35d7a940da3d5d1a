"""Fixtures of the service tests: the tiny classifier, configs, a fake transport, a real Mosquitto."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.service.config import ServiceConfig
from edge_runtime.service.protocol import Topics
from edge_runtime.service.transports.fake import FakeTransport
from tests.edge_runtime.service.broker import MOSQUITTO, Mosquitto

_things = itertools.count()


@pytest.fixture(scope="session")
def clf(tiny_bundle):  # type: ignore[no-untyped-def]
    """The tiny bundle's classifier on ONNX Runtime, one thread, shared by the session (read-only)."""
    from edge_runtime import IntentClassifier

    with IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1, max_batch=16) as c:
        yield c


def make_config(bundle: Path | str, thing: str | None = None, **changes: Any) -> ServiceConfig:
    """A valid config for tests; every call gets its own thing name unless one is given."""
    return ServiceConfig(bundle=str(bundle), thing=thing or f"test-thing-{next(_things)}", **changes)


@pytest.fixture()
def config(tiny_bundle) -> ServiceConfig:  # type: ignore[no-untyped-def]
    return make_config(tiny_bundle[0].root, status_interval_s=3600.0)


@pytest.fixture()
def transport(config: ServiceConfig) -> FakeTransport:
    return FakeTransport(request_topic=Topics.for_thing(config.thing).request)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A Mosquitto on a free 127.0.0.1 port for the module; stopped by PID at the end."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as mq:
        yield mq
