"""Greengrass IPC transport: a thin wrapper over awsiotsdk's ``GreengrassCoreIPCClientV2``.

Under Greengrass the nucleus owns the device's connection to AWS IoT Core; a component reaches it through IPC:

- ``iotcore`` target: ``subscribe_to_iot_core`` / ``publish_to_iot_core`` (the MQTT proxy, QoS 1, MQTT 5 response
  topic and correlation data passed through);
- ``local`` target: ``subscribe_to_topic`` / ``publish_to_topic`` (Greengrass local publish/subscribe, binary messages).

The component configuration is read with ``get_configuration`` (:func:`read_component_configuration`).
awsiotsdk is imported only when a client is made, so ``edge_runtime`` installs and imports without it. The nucleus
keeps the MQTT session, so there is no last will here (Greengrass reports a component that died as ``BROKEN``) and
no redelivery of unacknowledged requests: a request arriving while the service drains gets ``shutting_down``.
Callbacks run on a single-thread executor, which keeps arrival order and lets the handler call back into IPC.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
from typing import Any

from ..errors import TransportClosedError, TransportError, TransportUnavailableError
from .base import ConnectHandler, Message, MessageHandler

__all__ = ["IpcTransport", "read_component_configuration", "describe_error", "IOTCORE", "LOCAL"]

log = logging.getLogger(__name__)

IOTCORE = "iotcore"
LOCAL = "local"
_INSTALL_HINT = "the Greengrass IPC transport needs awsiotsdk: pip install 'slm-intents[greengrass]'"


def describe_error(exc: BaseException) -> str:
    """``UnauthorizedError: <message>`` for a log line or a TransportError.

    The SDK's error shapes (``UnauthorizedError``, ``ServiceError``, ``ResourceNotFoundError``, ...) keep what the
    nucleus said in attributes (``message``, ``resource_type``, ...) and pass nothing to ``Exception``, so
    ``str(exc)`` is empty; this names the type and adds the attributes that are set.
    """
    name = type(exc).__name__
    fields = {k: v for k, v in getattr(exc, "__dict__", {}).items()
              if v is not None and v != "" and not k.startswith("_")}
    message = fields.pop("message", None) or str(exc)
    extra = ", ".join(f"{k}={v!r}" for k, v in sorted(fields.items()))
    text = f"{name}: {message}" if message else f"{name} (no message)"
    return f"{text} ({extra})" if extra else text


def _import_model() -> Any:
    try:
        from awsiot.greengrasscoreipc import model
    except ImportError:
        raise TransportUnavailableError(_INSTALL_HINT) from None
    return model


def _new_client() -> Any:
    try:
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    except ImportError:
        raise TransportUnavailableError(_INSTALL_HINT) from None
    try:
        return GreengrassCoreIPCClientV2(executor=concurrent.futures.ThreadPoolExecutor(max_workers=1))
    except KeyError as exc:  # the SDK reads the nucleus' socket path and token from the environment
        raise TransportError(f"not running as a Greengrass component ({exc.args[0]} is not set); "
                             "outside Greengrass use --transport mqtt") from None
    except Exception as exc:  # awscrt raises its own types when no nucleus socket is there
        raise TransportError(f"cannot connect to the Greengrass nucleus over IPC: {describe_error(exc)}") from None


def read_component_configuration(client: Any = None) -> dict[str, Any]:
    """This component's configuration (its ``DefaultConfiguration`` merged with the deployment's)."""
    own = client is None
    client = client or _new_client()
    try:
        response = client.get_configuration()
    except TransportError:
        raise
    except Exception as exc:
        raise TransportError(f"GetConfiguration over IPC failed: {describe_error(exc)}") from None
    finally:
        if own:
            client.close()
    return dict(response.value or {})


class IpcTransport:
    """Receives requests on ``subscribe`` and publishes through Greengrass IPC.

    ``client`` (a ``GreengrassCoreIPCClientV2`` or a fake with the same methods) and ``model`` (the
    ``awsiot.greengrasscoreipc.model`` module or a stand-in) are made on :meth:`start` when not given.
    """

    name = "ipc"

    def __init__(self, *, subscribe: str, target: str = IOTCORE, client: Any = None, model: Any = None) -> None:
        if target not in (IOTCORE, LOCAL):
            raise TransportError(f"IPC target must be {IOTCORE!r} or {LOCAL!r}, got {target!r}")
        self.subscribe_topic = subscribe
        self.target = target
        self._client = client
        self._model = model
        self._operation: Any = None
        self._handler: MessageHandler | None = None
        self._receiving = False
        self._closed = False

    def start(self, on_message: MessageHandler, on_connect: ConnectHandler | None = None) -> None:
        self._check_open()
        model = self._model = self._model or _import_model()
        if self._client is None:
            self._client = _new_client()
        self._handler, self._receiving = on_message, True
        try:
            if self.target == IOTCORE:
                _, self._operation = self._client.subscribe_to_iot_core(
                    topic_name=self.subscribe_topic, qos=model.QOS.AT_LEAST_ONCE,
                    on_stream_event=self._on_iot_core, on_stream_error=self._on_stream_error)
            else:
                _, self._operation = self._client.subscribe_to_topic(
                    topic=self.subscribe_topic, receive_mode=model.ReceiveMode.RECEIVE_MESSAGES_FROM_OTHERS,
                    on_stream_event=self._on_local, on_stream_error=self._on_stream_error)
        except TransportError:
            raise
        except Exception as exc:  # IPC errors (UnauthorizedError, ...) are the SDK's own types
            raise TransportError(f"cannot subscribe to {self.subscribe_topic!r} over IPC ({self.target}): "
                                 f"{describe_error(exc)}") from None
        log.info("subscribed to %s over Greengrass IPC (%s)", self.subscribe_topic, self.target)
        if on_connect is not None:
            on_connect()

    # -- inbound ----------------------------------------------------------------------------------------------
    def _on_iot_core(self, event: Any) -> None:
        msg = event.message
        self._deliver(Message(msg.topic_name, bytes(msg.payload or b""), getattr(msg, "response_topic", None),
                              _as_bytes(getattr(msg, "correlation_data", None)), time.perf_counter(),
                              retain=bool(getattr(msg, "retain", False))))

    def _on_local(self, event: Any) -> None:
        if event.binary_message is not None:
            payload = bytes(event.binary_message.message or b"")
            context = event.binary_message.context
        elif event.json_message is not None:
            payload = json.dumps(event.json_message.message).encode("utf-8")
            context = event.json_message.context
        else:
            return
        topic = getattr(context, "topic", None) or self.subscribe_topic
        self._deliver(Message(topic, payload, None, None, time.perf_counter()))

    def _deliver(self, message: Message) -> None:
        if self._receiving and self._handler is not None:
            self._handler(message)

    def _on_stream_error(self, error: Exception) -> bool:
        log.warning("IPC subscription stream error on %s: %s", self.subscribe_topic, describe_error(error))
        return False  # keep the stream open

    # -- outbound ---------------------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, correlation_data: bytes | None = None, retain: bool = False) -> None:
        self._check_open()
        if self._client is None:
            raise TransportError("the IPC transport is not started")
        model = self._model
        try:
            if self.target == IOTCORE:
                kwargs: dict[str, Any] = {"topic_name": topic, "qos": model.QOS.AT_LEAST_ONCE, "payload": bytes(payload)}
                if correlation_data is not None:
                    kwargs["correlation_data"] = bytes(correlation_data)
                if retain:
                    kwargs["retain"] = True
                self._client.publish_to_iot_core(**kwargs)
            else:
                message = model.PublishMessage(binary_message=model.BinaryMessage(message=bytes(payload)))
                self._client.publish_to_topic(topic=topic, publish_message=message)
        except Exception as exc:  # the SDK raises its own error types (UnauthorizedError, ServiceError, ...)
            raise TransportError(f"IPC publish to {topic!r} failed: {describe_error(exc)}") from None

    def stop_receiving(self) -> None:
        self._receiving = False
        operation, self._operation = self._operation, None
        if operation is not None:
            try:
                operation.close()
            except Exception as exc:  # closing an already-closed stream is not worth failing a drain over
                log.debug("closing the IPC subscription: %s", describe_error(exc))

    def close(self) -> None:
        if self._closed:
            return
        self.stop_receiving()
        self._closed = True
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> "IpcTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("the IPC transport is closed")


def _as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)
