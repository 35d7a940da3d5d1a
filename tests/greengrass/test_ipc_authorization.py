"""IPC authorization of the app component, as the nucleus enforces it (:mod:`tests.greengrass.local_nucleus`).

The real service (IntentService, its telemetry publisher, the IPC transport, the component configuration read
over IPC) runs against a component's IPC client that authorizes every subscribe and publish from the deployed
``accessControl``. The built recipe works on a default classic nucleus and on Nucleus Lite; the recipe as it
was (``{iot:thingName}`` in the resources) is refused there, and works only on a classic nucleus 2.6.0+ with
``interpolateComponentConfiguration: true``, which no deployment of this project sets.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_runtime import IntentClassifier
from edge_runtime.service.config import from_sources
from edge_runtime.service.errors import TransportError
from edge_runtime.service.protocol import Topics
from edge_runtime.service.runner import fleet_observers
from edge_runtime.service.service import IntentService
from edge_runtime.service.transports.ipc import IpcTransport, read_component_configuration
from tests.greengrass.local_nucleus import GG_ARCH, MQTT_PROXY, LocalNucleus

model = pytest.importorskip("awsiot.greengrasscoreipc.model", reason="the greengrass extra (awsiotsdk) is not installed")
pytestmark = pytest.mark.skipif(not GG_ARCH, reason="no Greengrass manifest for this architecture")

THING = "pi-kitchen"
TOPICS = Topics.for_thing(THING)
NUCLEI = {"classic 2.14 default": {}, "nucleus lite": {"lite": True}}


def _deploy(built, root: Path, recipe_dir: Path | None = None, **nucleus_kw):  # type: ignore[no-untyped-def]
    nucleus = LocalNucleus(root, THING, **nucleus_kw)
    model_c, app = built.component("model"), built.component("app")
    artifacts = built.out / "artifacts"
    nucleus.install(nucleus.deploy(built.out / "recipes", artifacts, model_c["name"], model_c["version"]))
    return nucleus, nucleus.deploy(recipe_dir or built.out / "recipes", artifacts, app["name"], app["version"])


def _start(nucleus, app, target: str = "iotcore"):  # type: ignore[no-untyped-def]
    """The service as the app's run step configures it (its Setenv), on this nucleus' IPC."""
    _, env, _ = app.step("run")
    client = nucleus.ipc_client(app)
    env = {**env, "EDGE_INTENTS_IPC_TARGET": target, "EDGE_INTENTS_TELEMETRY_INTERVAL": "0.2",
           "EDGE_INTENTS_THREADS": "1"}
    cfg = from_sources({}, env=env, component=lambda: read_component_configuration(client))
    clf = IntentClassifier.from_bundle(cfg.bundle, backend="onnxruntime", threads=1)
    transport = IpcTransport(subscribe=TOPICS.request, target=target, client=client, model=model)
    observer, parts = fleet_observers(cfg, clf, transport)
    try:
        service = IntentService(cfg, clf, transport, observer=observer).start()
    except BaseException:
        for part in parts:
            part.close()
        clf.close()
        raise
    return service, parts, clf


def _stop(service, parts, clf) -> None:  # type: ignore[no-untyped-def]
    service.drain(5)
    for part in parts:
        part.close()
    clf.close()


def _wait(predicate, what: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    pytest.fail(f"no {what} within {timeout} s")


def _pre_fix_recipes(built, tmp_path: Path) -> Path:
    """The built app recipe with accessControl as it was: the thing level as ``{iot:thingName}``."""
    app = built.component("app")
    recipe = json.loads(Path(app["recipe"]).read_text())
    acl = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    for service, policies in acl.items():
        wildcard = "/+/" if service == MQTT_PROXY else "/*/"
        for policy in policies.values():
            policy["resources"] = [r.replace(wildcard, "/{iot:thingName}/") for r in policy["resources"]]
    out = tmp_path / "pre-fix-recipes"
    out.mkdir()
    (out / Path(app["recipe"]).name).write_text(json.dumps(recipe, indent=2))
    return out


@pytest.mark.parametrize("kind", sorted(NUCLEI))
def test_the_built_app_is_authorized_for_every_topic_it_uses_over_iot_core(built, tmp_path, kind):
    # Given both components deployed on a nucleus with its default configuration
    nucleus, app = _deploy(built, tmp_path / "gg", **NUCLEI[kind])
    # When the service starts on its IPC client (the subscribe is authorized) and IoT Core sends a request
    service, parts, clf = _start(nucleus, app)
    try:
        status = _wait(lambda: [m for m in nucleus.iot_core if m["topic"] == TOPICS.status], "status")
        assert status[0]["retain"] and json.loads(status[0]["payload"])["state"] == "online"
        assert nucleus.deliver_from_iot_core(TOPICS.request, b'{"id": "r1", "text": "play some jazz"}',
                                             response_topic=TOPICS.response + "/app-7", correlation_data=b"c-1") == 1
        # Then the reply reaches IoT Core on the request's MQTT 5 response topic, and telemetry flows
        reply = _wait(lambda: [m for m in nucleus.iot_core if m["topic"] == TOPICS.response + "/app-7"], "reply")
        assert json.loads(reply[0]["payload"])["id"] == "r1" and reply[0]["correlation_data"] == b"c-1"
        nucleus.deliver_from_iot_core(TOPICS.request, b'{"id": "r2", "text": "book a table"}')
        _wait(lambda: [m for m in nucleus.iot_core if m["topic"] == TOPICS.response], "reply on the default topic")
        _wait(lambda: [m for m in nucleus.iot_core if m["topic"] == TOPICS.telemetry], "telemetry")
    finally:
        _stop(service, parts, clf)


@pytest.mark.parametrize("kind", sorted(NUCLEI))
def test_the_built_app_is_authorized_on_local_publish_subscribe(built, tmp_path, kind):
    nucleus, app = _deploy(built, tmp_path / "gg", **NUCLEI[kind])
    service, parts, clf = _start(nucleus, app, target="local")
    try:
        assert nucleus.publish_locally(TOPICS.request, b'{"id": "l1", "text": "play some jazz"}') == 1
        reply = _wait(lambda: [m for m in nucleus.local if m["topic"] == TOPICS.response], "local reply")
        assert json.loads(reply[0]["payload"])["id"] == "l1"
        _wait(lambda: [m for m in nucleus.local if m["topic"] == TOPICS.status], "local status")
    finally:
        _stop(service, parts, clf)


def test_topics_outside_the_grants_are_unauthorized(built, tmp_path):
    nucleus, app = _deploy(built, tmp_path / "gg")
    client = nucleus.ipc_client(app)
    for call in (lambda: client.subscribe_to_iot_core(topic_name="#", qos=model.QOS.AT_LEAST_ONCE),
                 lambda: client.subscribe_to_iot_core(topic_name="cmd/intents/pi/request/x"),
                 lambda: client.publish_to_iot_core(topic_name=TOPICS.request, payload=b"{}"),
                 lambda: client.publish_to_iot_core(topic_name="dt/intents/pi/other", payload=b"{}"),
                 lambda: client.subscribe_to_topic(topic=TOPICS.status),
                 lambda: client.publish_to_topic(topic=TOPICS.request, publish_message=model.PublishMessage(
                     binary_message=model.BinaryMessage(message=b"{}")))):
        with pytest.raises(model.UnauthorizedError) as refused:
            call()
        assert "is not authorized" in refused.value.message  # the SDK's errors carry .message; str() is ""
    assert nucleus.iot_core == [] and nucleus.subscriptions == []


@pytest.mark.parametrize("nucleus_kw", [
    pytest.param({}, id="classic 2.14, default configuration"),
    pytest.param({"lite": True, "interpolate_component_configuration": True}, id="nucleus lite"),
    pytest.param({"version": "2.5.6", "interpolate_component_configuration": True}, id="classic 2.5 with the option"),
])
def test_the_recipe_as_it_was_is_refused_and_the_service_cannot_start(built, tmp_path, nucleus_kw):
    # Given the app recipe with {iot:thingName} in accessControl, on a nucleus that leaves it literal
    nucleus, app = _deploy(built, tmp_path / "gg", _pre_fix_recipes(built, tmp_path), **nucleus_kw)
    # Then the subscribe is UnauthorizedError, and the service fails to start (the component would end BROKEN)
    with pytest.raises(model.UnauthorizedError):
        nucleus.ipc_client(app).subscribe_to_iot_core(topic_name=TOPICS.request, qos=model.QOS.AT_LEAST_ONCE)
    with pytest.raises(TransportError, match=f"cannot subscribe to '{TOPICS.request}'"):
        _start(nucleus, app)


def test_the_recipe_as_it_was_needs_nucleus_2_6_with_interpolation_on(built, tmp_path):
    # The control for the test above: the same recipe is authorized once the nucleus substitutes the variable
    nucleus, app = _deploy(built, tmp_path / "gg", _pre_fix_recipes(built, tmp_path), version="2.6.0",
                           interpolate_component_configuration=True)
    service, parts, clf = _start(nucleus, app)
    try:
        nucleus.deliver_from_iot_core(TOPICS.request, b'{"id": "r1", "text": "play some jazz"}')
        _wait(lambda: [m for m in nucleus.iot_core if m["topic"] == TOPICS.response], "reply")
    finally:
        _stop(service, parts, clf)
