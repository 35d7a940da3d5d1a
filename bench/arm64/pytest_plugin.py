"""pytest plugin for the emulated run (``-p bench.arm64.pytest_plugin``): deselect the tests that need a broker.

A test needs a broker when it is marked ``broker``, uses a fixture whose name mentions a broker or
Mosquitto, or when it or one of its fixtures refers to the ``Mosquitto`` helper of the service tests.
Everything else under ``tests/edge_runtime`` runs under emulation.
"""

from __future__ import annotations

from typing import Any

import pytest

_NAMES = ("broker", "mosquitto")
_HELPERS = frozenset({"Mosquitto", "MOSQUITTO"})


def _refers_to_broker(func: Any) -> bool:
    code = getattr(func, "__code__", None)
    return code is not None and bool(_HELPERS & set(code.co_names))


def needs_broker(item: pytest.Item) -> bool:
    if item.get_closest_marker("broker") is not None:
        return True
    if any(word in name.lower() for name in getattr(item, "fixturenames", ()) for word in _NAMES):
        return True
    if _refers_to_broker(getattr(item, "function", None)):
        return True
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        if any(_refers_to_broker(getattr(d, "func", None)) for d in defs):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, dropped = [], []
    for item in items:
        (dropped if needs_broker(item) else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
