"""The IoT policies of infra/ allow exactly what the service and a requester do on AWS IoT Core, and no more.

The operations come from the code itself: the service's client id, subscription and last will from the transport
``make_transport`` builds, its publishes (topic, retain) from a run of :class:`IntentService` over the fake
transport, the requester's from :mod:`edge_runtime.ask`. :mod:`tests.cloud.aws.iot_policy` evaluates them with
AWS IoT's rules (see its docstring for the sources and what it does not model).
"""

from __future__ import annotations

import json

import pytest

from edge_runtime.ask import reply_topic
from edge_runtime.service.config import ServiceConfig, TransportKind
from edge_runtime.service.protocol import Topics
from tests.cloud.aws import iot_policy as iot
from tests.conftest import REPO

pytest.importorskip("cfnlint", reason="cfn-lint is not installed (the dev extra)")
THING, OTHER, REQUESTER = "kitchen-pi", "garage-pi", "phone-app"
DEVICE = iot.policy_documents(REPO / "infra" / "iot.yaml")
CORE = iot.policy_documents(REPO / "infra" / "greengrass-core.yaml", {"ThingName": THING})


class _Classifier:
    name, version = "tiny", "1"

    class backend:
        name = "fake"

    def predict_batch(self, texts):
        from edge_runtime.classifier import Prediction

        return [Prediction("PlayMusic", 0.9, (("PlayMusic", 0.9),)) for _ in texts]


def _service_publishes(thing: str) -> list[tuple[str, bool]]:
    """(topic, retain) of everything the service publishes: status, a default reply, an MQTT 5 reply, an error."""
    from edge_runtime.service.service import IntentService
    from edge_runtime.service.transports.fake import FakeTransport

    config = ServiceConfig(bundle="unused", thing=thing, status_interval_s=3600.0)
    topics = Topics.for_thing(thing)
    transport = FakeTransport(request_topic=topics.request)
    service = IntentService(config, _Classifier(), transport).start()
    transport.deliver({"id": "1", "text": "play jazz"})
    transport.deliver({"id": "2", "text": "play jazz"}, response_topic=reply_topic(thing, REQUESTER))
    transport.deliver({"id": "3", "text": ""})
    transport.wait_for(3, timeout=5)
    service.drain(2)
    published = {(p.topic, p.retain) for p in transport.published}
    # telemetry goes out on its topic, not retained (edge_runtime.service.telemetry)
    return sorted(published | {(topics.telemetry, False)})


def _mqtt_session(thing: str) -> tuple[str, str, tuple[str, bool]]:
    """The service's client id, subscription and (will topic, will retained), as its MQTT transport makes them."""
    import paho.mqtt.client as paho

    from edge_runtime.service.runner import make_transport

    config = ServiceConfig(bundle="unused", thing=thing, transport=TransportKind.MQTT, broker="mqtt://127.0.0.1:9")
    transport = make_transport(config)
    wills = []
    original = paho.Client.will_set
    paho.Client.will_set = lambda self, topic, payload=None, qos=0, retain=False, properties=None: wills.append(
        (topic, retain))
    try:
        transport.start(lambda message: None)
    finally:
        paho.Client.will_set = original
        transport.close(0)
    (will,) = wills
    return transport.client_id, transport.subscribe_topic, will


def _service_checks(thing: str, *, client_id: str, will: tuple[str, bool] | None) -> list[iot.Check]:
    topics = Topics.for_thing(thing)
    checks = iot.connect(client_id, will_topic=will[0] if will else None, will_retain=bool(will and will[1]))
    checks += iot.subscribe(topics.request) + iot.receive(topics.request)
    for topic, retain in _service_publishes(thing):
        checks += iot.publish(topic, retain=retain)
    return checks


def _requester_checks(thing: str, client_id: str) -> list[iot.Check]:
    topics, own = Topics.for_thing(thing), reply_topic(thing, client_id)
    return (iot.connect(client_id) + iot.publish(topics.request) + iot.subscribe(own) + iot.receive(own)
            + iot.subscribe(topics.status) + iot.receive(topics.status))


def test_the_service_publishes_what_the_policies_name():
    # the operations this test judges: every topic, and status retained
    topics = Topics.for_thing(THING)
    assert _service_publishes(THING) == sorted([
        (topics.response, False), (reply_topic(THING, REQUESTER), False), (topics.status, True),
        (topics.telemetry, False)])


def test_direct_mqtt_the_device_policy_allows_the_service_and_nothing_of_another_thing():
    # Given the service's own connection (its default client id, subscription and retained last will)
    client_id, subscription, will = _mqtt_session(THING)
    assert client_id == THING and subscription == Topics.for_thing(THING).request and will == (
        Topics.for_thing(THING).status, True)
    device = iot.Connection(client_id, frozenset({THING}))
    policies = [DEVICE["IntentsPolicy"]]
    # Then every connect (with the will), subscribe, receive, publish and retained publish is allowed
    checks = _service_checks(THING, client_id=client_id, will=will)
    for check in checks:
        assert iot.allowed(policies, device, [check]), check
    # and the same operations on another thing's topics are denied, one by one
    for check in _service_checks(OTHER, client_id=client_id, will=(Topics.for_thing(OTHER).status, True)):
        if "client/" not in check.resource:
            assert not iot.allowed(policies, device, [check]), check


def test_direct_mqtt_a_client_id_other_than_the_thing_name_is_refused():
    # the old default edge-intents-<thing>: the thing variables do not resolve, so even CONNECT is denied
    policies = [DEVICE["IntentsPolicy"]]
    assert not iot.allowed(policies, iot.Connection(f"edge-intents-{THING}", frozenset({THING})),
                           iot.connect(f"edge-intents-{THING}"))
    # a certificate not attached to the thing it names (IsAttached false) cannot connect as it
    assert not iot.allowed(policies, iot.Connection(OTHER, frozenset({THING})), iot.connect(OTHER))
    # and a retained status needs iot:RetainPublish: without that statement it is denied
    without = {**DEVICE["IntentsPolicy"], "Statement": [st for st in DEVICE["IntentsPolicy"]["Statement"]
                                                       if st["Sid"] != "RetainedStatusAndLastWill"]}
    status = Topics.for_thing(THING).status
    assert not iot.allowed([without], iot.Connection(THING, frozenset({THING})), iot.publish(status, retain=True))
    assert not iot.allowed([without], iot.Connection(THING, frozenset({THING})),
                           iot.connect(THING, will_topic=status, will_retain=True))


def test_under_greengrass_the_core_policy_allows_what_the_nucleus_does_for_the_service():
    # Given the nucleus' connections (client id = thing name, and a further one) carrying the service's IPC calls
    policies = [CORE["GreengrassCorePolicy"]]
    for client_id in (THING, f"{THING}#2"):
        nucleus = iot.Connection(client_id, frozenset({THING}))
        # Then the service's subscribe, receive, publishes and retained status are allowed (no last will: the
        # nucleus owns the session)
        for check in _service_checks(THING, client_id=client_id, will=None):
            assert iot.allowed(policies, nucleus, [check]), check
        # and another thing's topics are denied
        for check in _service_checks(OTHER, client_id=client_id, will=None):
            if "client/" not in check.resource:
                assert not iot.allowed(policies, nucleus, [check]), check
    # the core policy names the thing itself: no thing policy variables (unsupported for core devices)
    assert "${iot:" not in json.dumps(CORE["GreengrassCorePolicy"])


def test_a_requester_sends_requests_and_reads_only_its_own_replies():
    # Given a requester thing with the requester policy, asking as ask does (its thing name as client id)
    policies = [DEVICE["RequesterPolicy"]]
    requester = iot.Connection(REQUESTER, frozenset({REQUESTER}))
    # Then it may ask any device and read that device's status and its own replies (also with a filter like
    # cmd/intents/+/response/<itself>: '*' in the policy matches the literal '+', and each message is still
    # checked as iot:Receive on its topic)
    for thing in (THING, OTHER):
        for check in _requester_checks(thing, REQUESTER):
            assert iot.allowed(policies, requester, [check]), check
    assert iot.allowed(policies, requester, iot.subscribe(f"cmd/intents/+/response/{REQUESTER}"))
    # but not another requester's replies, nor the shared reply topic, nor answer as a device, nor wildcards
    denied = (iot.subscribe(reply_topic(THING, "other-app")) + iot.receive(reply_topic(THING, "other-app"))
              + iot.subscribe(Topics.for_thing(THING).response) + iot.subscribe(Topics.for_thing(THING).response + "/#")
              + iot.subscribe("cmd/intents/#") + iot.publish(Topics.for_thing(THING).response)
              + iot.subscribe(Topics.for_thing(THING).request) + iot.publish(Topics.for_thing(THING).status, retain=True))
    for check in denied:
        assert not iot.allowed(policies, requester, [check]), check
    # and the device policy alone does not let a requester in (it is another thing)
    assert not iot.allowed([DEVICE["IntentsPolicy"]], requester, iot.publish(Topics.for_thing(THING).request))


def test_the_evaluator_follows_the_documented_rules():
    doc = {"Statement": [
        {"Effect": "Allow", "Action": "iot:*", "Resource": f"{iot.PREFIX}topic/a/*"},
        {"Effect": "Deny", "Action": "iot:Publish", "Resource": f"{iot.PREFIX}topic/a/secret"},
        {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": f"{iot.PREFIX}topicfilter/b/+/c"},
        {"Effect": "Allow", "Action": "iot:Receive", "Resource": f"{iot.PREFIX}topic/d/?"}]}
    c = iot.Connection("x")
    assert iot.allowed([doc], c, iot.publish("a/b/c")) and iot.allowed([doc], c, iot.receive("a/x"))
    assert not iot.allowed([doc], c, iot.publish("a/secret"))          # explicit deny wins
    assert not iot.allowed([doc], c, iot.publish("b/x"))               # nothing matches: denied
    assert iot.allowed([doc], c, iot.subscribe("b/+/c"))               # '+' is literal in a policy...
    assert not iot.allowed([doc], c, iot.subscribe("b/x/c"))           # ...so it matches only itself
    assert iot.allowed([doc], c, iot.receive("d/1")) and not iot.allowed([doc], c, iot.receive("d/12"))  # '?' one
    with pytest.raises(ValueError):
        iot.allowed([{"Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*",
                                     "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]}], c, iot.connect("x"))
