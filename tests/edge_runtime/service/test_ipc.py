"""The Greengrass IPC transport, through a fake of the GreengrassCoreIPCClientV2 methods it uses.

No nucleus can run here. The fake records calls with the SDK's keyword names; the model objects are the SDK's
own when awsiotsdk is installed (``greengrass`` extra), else small stand-ins with the same attributes.
"""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass
from typing import Any

import pytest

from edge_runtime.service import IntentService
from edge_runtime.service.config import from_sources
from edge_runtime.service.errors import TransportClosedError, TransportError, TransportUnavailableError
from edge_runtime.service.protocol import Topics
from edge_runtime.service.transports.ipc import IOTCORE, LOCAL, IpcTransport, read_component_configuration


def _stand_in_model() -> Any:
    @dataclass
    class MQTTMessage:
        topic_name: str | None = None
        payload: bytes | None = None
        correlation_data: bytes | None = None
        response_topic: str | None = None

    @dataclass
    class IoTCoreMessage:
        message: Any = None

    @dataclass
    class MessageContext:
        topic: str | None = None

    @dataclass
    class BinaryMessage:
        message: bytes | None = None
        context: Any = None

    @dataclass
    class JsonMessage:
        message: Any = None
        context: Any = None

    @dataclass
    class SubscriptionResponseMessage:
        json_message: Any = None
        binary_message: Any = None

    @dataclass
    class PublishMessage:
        json_message: Any = None
        binary_message: Any = None

    return types.SimpleNamespace(
        QOS=types.SimpleNamespace(AT_MOST_ONCE="0", AT_LEAST_ONCE="1"),
        ReceiveMode=types.SimpleNamespace(RECEIVE_ALL_MESSAGES="RECEIVE_ALL_MESSAGES",
                                          RECEIVE_MESSAGES_FROM_OTHERS="RECEIVE_MESSAGES_FROM_OTHERS"),
        MQTTMessage=MQTTMessage, IoTCoreMessage=IoTCoreMessage, MessageContext=MessageContext,
        BinaryMessage=BinaryMessage, JsonMessage=JsonMessage, SubscriptionResponseMessage=SubscriptionResponseMessage,
        PublishMessage=PublishMessage)


try:
    from awsiot.greengrasscoreipc import model as sdk_model
except ImportError:  # the greengrass extra is not installed
    sdk_model = None

MODELS = [pytest.param(_stand_in_model(), id="stand-in")]


class StandInUnauthorizedError(RuntimeError):
    """Like awsiotsdk's UnauthorizedError: what the nucleus said is in ``message``; ``Exception`` gets no args,
    so ``str()`` is empty."""

    def __init__(self, *, message: str | None = None) -> None:
        super().__init__()
        self.message = message


def _unauthorized(message: str | None) -> Exception:
    cls = sdk_model.UnauthorizedError if sdk_model is not None else StandInUnauthorizedError
    return cls(message=message)
if sdk_model is not None:
    MODELS.append(pytest.param(sdk_model, id="awsiotsdk"))


class FakeOperation:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeIpcClient:
    """The GreengrassCoreIPCClientV2 methods the transport uses, with the SDK's signatures."""

    def __init__(self, configuration: dict | None = None, fail_publish: bool = False) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.handlers: dict[str, Any] = {}
        self.operation = FakeOperation()
        self.configuration = configuration or {}
        self.fail_publish = fail_publish
        self.closed = False

    def subscribe_to_iot_core(self, *, topic_name=None, qos=None, stream_handler=None, on_stream_event=None,
                              on_stream_error=None, on_stream_closed=None):  # type: ignore[no-untyped-def]
        self.calls.append(("subscribe_to_iot_core", {"topic_name": topic_name, "qos": qos}))
        self.handlers["event"], self.handlers["error"] = on_stream_event, on_stream_error
        return object(), self.operation

    def subscribe_to_topic(self, *, topic=None, receive_mode=None, stream_handler=None, on_stream_event=None,
                           on_stream_error=None, on_stream_closed=None):  # type: ignore[no-untyped-def]
        self.calls.append(("subscribe_to_topic", {"topic": topic, "receive_mode": receive_mode}))
        self.handlers["event"], self.handlers["error"] = on_stream_event, on_stream_error
        return object(), self.operation

    def publish_to_iot_core(self, *, topic_name=None, qos=None, payload=None, retain=None, user_properties=None,
                            message_expiry_interval_seconds=None, correlation_data=None, response_topic=None,
                            payload_format=None, content_type=None):  # type: ignore[no-untyped-def]
        if self.fail_publish:
            raise _unauthorized("not allowed to publish to cmd/intents/t/response")
        self.calls.append(("publish_to_iot_core", {"topic_name": topic_name, "qos": qos, "payload": payload,
                                                   "retain": retain, "correlation_data": correlation_data}))

    def publish_to_topic(self, *, topic=None, publish_message=None):  # type: ignore[no-untyped-def]
        self.calls.append(("publish_to_topic", {"topic": topic, "publish_message": publish_message}))

    def get_configuration(self, *, component_name=None, key_path=None):  # type: ignore[no-untyped-def]
        self.calls.append(("get_configuration", {"component_name": component_name, "key_path": key_path}))
        return types.SimpleNamespace(component_name="com.slmintents.IntentService", value=self.configuration)

    def close(self, *, executor_wait=True):  # type: ignore[no-untyped-def]
        self.closed = True

    def published(self, method: str) -> list[dict]:
        return [kw for name, kw in self.calls if name == method]


@pytest.mark.parametrize("model", MODELS)
def test_iot_core_requests_are_served_with_response_topic_and_correlation_data(model, tiny_bundle, clf):
    # Given the service on the IPC transport (IoT Core MQTT proxy)
    cfg = from_sources({"bundle": str(tiny_bundle[0].root), "thing": "gg-core", "transport": "ipc",
                        "status_interval_s": "3600"}, env={}, component={})
    topics = Topics.for_thing("gg-core")
    client = FakeIpcClient()
    transport = IpcTransport(subscribe=topics.request, target=IOTCORE, client=client, model=model)
    service = IntentService(cfg, clf, transport).start()
    try:
        # Then it subscribed to exactly its request topic at QoS 1 and said it is online (retained)
        assert client.calls[0] == ("subscribe_to_iot_core", {"topic_name": topics.request, "qos": model.QOS.AT_LEAST_ONCE})
        status = client.published("publish_to_iot_core")[0]
        assert status["topic_name"] == topics.status and status["retain"] is True
        # When IoT Core delivers a request with an MQTT 5 response topic
        msg = model.MQTTMessage(topic_name=topics.request, payload=b'{"id": "r1", "text": "play jazz"}',
                                response_topic=topics.response + "/app", correlation_data=b"c1")
        client.handlers["event"](model.IoTCoreMessage(message=msg))
        # Then the reply goes there, at QoS 1, with the correlation data
        deadline = time.monotonic() + 5
        while len(client.published("publish_to_iot_core")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        reply = client.published("publish_to_iot_core")[1]
        assert reply["topic_name"] == topics.response + "/app" and reply["qos"] == model.QOS.AT_LEAST_ONCE
        assert reply["correlation_data"] == b"c1" and b'"id":"r1"' in reply["payload"]
        assert client.handlers["error"](RuntimeError("stream hiccup")) is False   # keeps the stream open
    finally:
        service.drain(5)
    # and the drain closed the subscription and the client
    assert client.operation.closed and client.closed


@pytest.mark.parametrize("model", MODELS)
def test_local_pubsub_requests_get_binary_replies(model, tiny_bundle, clf):
    cfg = from_sources({"bundle": str(tiny_bundle[0].root), "thing": "gg-core", "transport": "ipc",
                        "ipc_target": "local", "status_interval_s": "3600"}, env={}, component={})
    topics = Topics.for_thing("gg-core")
    client = FakeIpcClient()
    transport = IpcTransport(subscribe=topics.request, target=LOCAL, client=client, model=model)
    service = IntentService(cfg, clf, transport).start()
    try:
        assert client.calls[0] == ("subscribe_to_topic", {
            "topic": topics.request, "receive_mode": model.ReceiveMode.RECEIVE_MESSAGES_FROM_OTHERS})
        ctx = model.MessageContext(topic=topics.request)
        client.handlers["event"](model.SubscriptionResponseMessage(
            binary_message=model.BinaryMessage(message=b'{"id": "b1", "text": "play jazz"}', context=ctx)))
        client.handlers["event"](model.SubscriptionResponseMessage(
            json_message=model.JsonMessage(message={"id": "j1", "text": "book a table"}, context=ctx)))
        deadline = time.monotonic() + 5
        while len(client.published("publish_to_topic")) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        replies = [kw for kw in client.published("publish_to_topic") if kw["topic"] == topics.response]
        assert len(replies) == 2
        bodies = sorted(r["publish_message"].binary_message.message for r in replies)
        assert b'"id":"b1"' in bodies[0] and b'"id":"j1"' in bodies[1]
    finally:
        service.drain(5)


def test_publish_errors_become_transport_errors_and_closed_transports_refuse():
    model = _stand_in_model()
    client = FakeIpcClient(fail_publish=True)
    transport = IpcTransport(subscribe="cmd/intents/t/request", client=client, model=model)
    transport.start(lambda m: None)
    with pytest.raises(TransportError, match="failed: UnauthorizedError: not allowed to publish to cmd/intents/t/re"):
        transport.publish("cmd/intents/t/response", b"{}")
    transport.close()
    with pytest.raises(TransportClosedError):
        transport.publish("cmd/intents/t/response", b"{}")
    with pytest.raises(TransportError):
        IpcTransport(subscribe="x", target="mars")


def test_the_component_configuration_feeds_the_config_under_ipc(tiny_bundle):
    client = FakeIpcClient(configuration={"MaxBatch": 4, "QueueSize": 12, "accessControl": {}})
    assert read_component_configuration(client) == {"MaxBatch": 4, "QueueSize": 12, "accessControl": {}}
    cfg = from_sources({"bundle": str(tiny_bundle[0].root), "thing": "t", "transport": "ipc"}, env={},
                       component=lambda: read_component_configuration(client))
    assert (cfg.max_batch, cfg.queue_size) == (4, 12)
    assert client.calls[0][0] == "get_configuration"


def test_without_awsiotsdk_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "awsiot", None)
    monkeypatch.setitem(sys.modules, "awsiot.greengrasscoreipc", None)
    transport = IpcTransport(subscribe="cmd/intents/t/request")
    with pytest.raises(TransportUnavailableError, match=r"slm-intents\[greengrass\]"):
        transport.start(lambda m: None)
    with pytest.raises(TransportUnavailableError, match=r"slm-intents\[greengrass\]"):
        read_component_configuration()


def test_an_sdk_error_is_described_by_its_type_and_fields():
    # the SDK's error shapes carry their text in attributes and str() is empty: the log names type and fields
    from edge_runtime.service.transports.ipc import describe_error

    error = _unauthorized("Principal com.slmintents.IntentService is not authorized to perform "
                          "aws.greengrass#PublishToIoTCore on resource dt/intents/t/telemetry")
    assert str(error) == ""
    assert describe_error(error) == ("UnauthorizedError: Principal com.slmintents.IntentService is not authorized "
                                     "to perform aws.greengrass#PublishToIoTCore on resource dt/intents/t/telemetry")
    assert describe_error(_unauthorized(None)) == "UnauthorizedError (no message)"
    assert describe_error(RuntimeError("socket closed")) == "RuntimeError: socket closed"
    if sdk_model is not None:
        missing = sdk_model.ResourceNotFoundError(message="no such topic", resource_type="topic", resource_name="t")
        assert describe_error(missing) == ("ResourceNotFoundError: no such topic "
                                           "(resource_name='t', resource_type='topic')")


def test_a_stream_error_is_logged_with_its_type_and_message(caplog):
    client = FakeIpcClient()
    transport = IpcTransport(subscribe="cmd/intents/t/request", client=client, model=_stand_in_model())
    transport.start(lambda m: None)
    with caplog.at_level("WARNING", logger="edge_runtime.service.transports.ipc"):
        assert client.handlers["error"](_unauthorized("not authorized to subscribe")) is False
    transport.close()
    assert "IPC subscription stream error on cmd/intents/t/request: UnauthorizedError: not authorized to subscribe" \
        in caplog.text
