"""ServiceConfig: one frozen object from flags, file, environment and the Greengrass component configuration."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from edge_runtime.service.config import (
    IpcTarget,
    ServiceConfig,
    TransportKind,
    add_arguments,
    component_key,
    env_name,
    flags_from_namespace,
    from_sources,
)
from edge_runtime.service.errors import ConfigError

BASE = {"bundle": "edge/1", "thing": "kitchen-pi"}


def test_defaults_are_the_documented_ones():
    cfg = from_sources(BASE, env={})
    assert cfg.transport is TransportKind.MQTT and cfg.broker == "mqtt://127.0.0.1:1883"
    assert (cfg.max_batch, cfg.batch_window_ms, cfg.queue_size, cfg.max_text_chars) == (32, 5.0, 256, 512)
    assert cfg.mqtt_client_id == "kitchen-pi"  # the thing name: what the IoT policy's thing variables need
    assert cfg.allowed_reply_prefixes == ("cmd/intents/kitchen-pi/response",)
    assert cfg.broker_address == ("mqtt", "127.0.0.1", 1883)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_batch = 2  # type: ignore[misc]


def test_names_outside_are_derived_from_the_field_name():
    assert component_key("max_text_chars") == "MaxTextChars"
    assert env_name("batch_window_ms") == "EDGE_INTENTS_BATCH_WINDOW_MS"


def test_precedence_is_component_then_file_then_env_then_flags(tmp_path):
    # Given the same setting in every source
    file = tmp_path / "service.json"
    file.write_text(json.dumps({"max_batch": 4, "queue_size": 40, "MaxTexts": 9, "transport": "ipc"}))
    env = {"EDGE_INTENTS_MAX_BATCH": "6", "EDGE_INTENTS_TOP_K": "2", "AWS_IOT_THING_NAME": "gg-thing"}
    component = {"MaxBatch": 1, "QueueSize": 10, "MaxTexts": 1, "TopK": 1, "BatchWindowMs": 7, "Threshold": 0.4,
                 "accessControl": {"x": {}}, "SomethingNewer": True}
    # When they are merged
    cfg = from_sources({"max_batch": "8", "bundle": "b"}, file=file, env=env, component=component)
    # Then each field comes from the highest source that sets it
    assert cfg.max_batch == 8                # flag
    assert cfg.top_k == 2                    # environment
    assert cfg.queue_size == 40 and cfg.max_texts == 9   # file (field name and CamelCase keys both work)
    assert cfg.batch_window_ms == 7.0 and cfg.threshold == 0.4   # component only
    assert cfg.thing == "gg-thing"           # Greengrass' variable
    assert cfg.transport is TransportKind.IPC


def test_component_configuration_is_read_only_for_the_ipc_transport():
    calls = []

    def component():
        calls.append(1)
        return {"MaxBatch": 3}

    assert from_sources(BASE, env={}, component=component).max_batch == 32
    assert calls == []
    cfg = from_sources({**BASE, "transport": "ipc", "ipc_target": "local"}, env={}, component=component)
    assert cfg.max_batch == 3 and cfg.ipc_target is IpcTarget.LOCAL and calls == [1]


def test_environment_strings_are_parsed_by_field_type():
    env = {"EDGE_INTENTS_BUNDLE": "b", "EDGE_INTENTS_THING": "t", "EDGE_INTENTS_THREADS": "0",
           "EDGE_INTENTS_THRESHOLD": "0", "EDGE_INTENTS_MAX_TEXT_CHARS": "512.0",
           "EDGE_INTENTS_REPLY_PREFIXES": "cmd/intents/{thing}/response, cmd/intents/{thing}/other",
           "EDGE_INTENTS_TRANSPORT": "MQTT"}
    cfg = from_sources(env=env)
    assert cfg.threads is None and cfg.threshold is None and cfg.max_text_chars == 512
    assert cfg.allowed_reply_prefixes == ("cmd/intents/t/response", "cmd/intents/t/other")


@pytest.mark.parametrize("flags, fragment", [
    ({"bundle": "b"}, "thing is required"),
    ({"thing": "t"}, "bundle is required"),
    ({**BASE, "thing": "a/b"}, "not a valid thing name"),
    ({**BASE, "max_batch": "0"}, "max_batch must be >= 1"),
    ({**BASE, "max_batch": "two"}, "command line: max_batch = 'two'"),
    ({**BASE, "max_batch": "2.5"}, "max_batch"),
    ({**BASE, "broker": "http://x:1"}, "mqtt:// or mqtts://"),
    ({**BASE, "broker": "mqtts://x", "cert": "c.pem"}, "both cert and key"),
    ({**BASE, "ca": "ca.pem"}, "for mqtts:// brokers"),
    ({**BASE, "transport": "carrier-pigeon"}, "expected one of"),
    ({**BASE, "threshold": "1.5"}, "between 0 and 1"),
    ({**BASE, "reply_prefixes": "cmd/#"}, "wildcards"),
    ({**BASE, "no_such_option": 1}, "unknown key"),
])
def test_bad_values_are_refused_naming_field_and_source(flags, fragment):
    with pytest.raises(ConfigError) as info:
        from_sources(flags, env={})
    assert fragment in str(info.value)


def test_a_file_with_a_typo_or_bad_json_is_refused(tmp_path):
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"max_bach": 4}))
    with pytest.raises(ConfigError, match="unknown key 'max_bach'"):
        from_sources(BASE, file=typo, env={})
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        from_sources(BASE, file=broken, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        from_sources(BASE, file=tmp_path / "missing.json", env={})


def test_flags_are_generated_from_the_fields_and_absent_flags_stay_absent():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["--bundle", "b", "--thing", "t", "--max-batch", "4", "--broker", "mqtts://h"])
    flags = flags_from_namespace(ns)
    assert flags == {"bundle": "b", "thing": "t", "max_batch": "4", "broker": "mqtts://h"}
    cfg = from_sources(flags, env={"EDGE_INTENTS_QUEUE_SIZE": "9"})
    assert cfg.queue_size == 9 and cfg.broker_address == ("mqtts", "h", 8883)
    assert len([a for a in parser._actions if a.option_strings]) == len(dataclasses.fields(ServiceConfig)) + 2


def test_with_changes_validates_again():
    cfg = from_sources(BASE, env={})
    assert cfg.with_changes(max_batch=1).max_batch == 1
    with pytest.raises(ConfigError):
        cfg.with_changes(queue_size=0)
    assert cfg.to_dict()["transport"] == "mqtt"
