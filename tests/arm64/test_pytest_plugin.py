"""Which edge tests the emulated run deselects: those that need a broker, and only those."""

from __future__ import annotations

from types import SimpleNamespace

from bench.arm64.pytest_plugin import needs_broker


class Mosquitto:  # stands for tests.edge_runtime.service.broker.Mosquitto
    pass


def _item(*, marker=None, fixtures=(), function=None, fixture_funcs=()):
    info = SimpleNamespace(name2fixturedefs={f"f{i}": [SimpleNamespace(func=f)] for i, f in enumerate(fixture_funcs)})
    return SimpleNamespace(get_closest_marker=lambda name: object() if name == marker else None,
                           fixturenames=list(fixtures), function=function or (lambda: None), _fixtureinfo=info)


def _starts_a_broker():
    return Mosquitto()


def _needs_nothing():
    return 1


def test_broker_tests_are_recognised_by_marker_fixture_name_or_the_helper_they_use():
    assert needs_broker(_item(marker="broker"))
    assert needs_broker(_item(fixtures=["tmp_path", "mqtt_broker"]))
    assert needs_broker(_item(fixtures=["running_mosquitto"]))
    assert needs_broker(_item(function=_starts_a_broker))
    assert needs_broker(_item(fixture_funcs=[_needs_nothing, _starts_a_broker]))


def test_other_tests_run():
    assert not needs_broker(_item(marker="slow", fixtures=["tmp_path", "tiny_bundle"], function=_needs_nothing,
                                  fixture_funcs=[_needs_nothing]))
