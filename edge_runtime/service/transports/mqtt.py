"""MQTT transport over paho-mqtt: MQTT 5, QoS 1, persistent session, reconnect with backoff, last will, mutual TLS.

Why paho-mqtt and not awscrt (the client inside awsiotsdk): both speak MQTT 5 to a local Mosquitto over plain TCP
and to AWS IoT Core over mutual TLS, so the choice is about the device. paho-mqtt is pure Python (one ~100 kB
wheel, no native build for aarch64 or armv7), it is the project's ``mqtt`` extra already, and it exposes what the
service needs directly: manual acknowledgement (a request is acknowledged only after its reply was published, so
a request the service never answered is redelivered to its next session), session expiry and will properties,
``tls_set`` with PEM files. awscrt is a native extension of several MB whose value on this path (its own event
loop, AWS credential helpers) the service does not use; it is needed for Greengrass IPC anyway, and
:mod:`.ipc` uses it there, where the nucleus owns the MQTT connection.

URL forms: ``mqtt://HOST[:PORT]`` (plain TCP, default port 1883), ``mqtts://HOST[:PORT]`` (TLS, default 8883;
``ca`` verifies the broker, ``cert`` + ``key`` authenticate the device, as AWS IoT Core requires).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from ..errors import TransportClosedError, TransportError, TransportUnavailableError
from .base import ConnectHandler, Message, MessageHandler

__all__ = ["MqttTransport", "parse_broker_url"]

log = logging.getLogger(__name__)


def parse_broker_url(url: str) -> tuple[bool, str, int]:
    """``mqtt://host:1883`` -> ``(tls, host, port)``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise TransportError(f"broker URL {url!r} must look like mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    tls = parts.scheme == "mqtts"
    return tls, parts.hostname, parts.port or (8883 if tls else 1883)


def _no_delay(client: Any, userdata: Any, sock: Any) -> None:
    # Replies and acknowledgements are small writes: without TCP_NODELAY, Nagle's algorithm holds one back until
    # the broker's delayed ACK (~40 ms) arrives, which is 20x the whole round-trip budget.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as exc:
        log.debug("cannot set TCP_NODELAY: %s", exc)


def _import_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise TransportUnavailableError(
            "the MQTT transport needs paho-mqtt: pip install 'slm-intents[mqtt]'") from None
    return mqtt


class MqttTransport:
    """Connects to ``url`` as ``client_id``, subscribes to ``subscribe`` at QoS 1 and publishes at QoS 1.

    ``will`` is ``(topic, payload)``, published (retained) by the broker if the connection is lost without a
    DISCONNECT. The session survives ``session_expiry_s`` seconds of absence (``clean_start=False``), so
    requests sent meanwhile are delivered when the service comes back. ``receive_maximum`` (MQTT 5 Receive Maximum,
    1-65535) caps the requests the broker sends before they are acknowledged: the broker holds the rest and paces
    them (MQTT 5.0 section 3.1.2.11.3).
    """

    name = "mqtt"

    def __init__(self, url: str, *, client_id: str, subscribe: str, will: tuple[str, bytes] | None = None,
                 ca: str | None = None, cert: str | None = None, key: str | None = None, keepalive_s: int = 30,
                 session_expiry_s: int = 3600, reconnect_min_s: int = 1, reconnect_max_s: int = 30,
                 receive_maximum: int | None = None) -> None:
        self.url = url
        self.tls, self.host, self.port = parse_broker_url(url)
        if (ca or cert or key) and not self.tls:
            raise TransportError("ca / cert / key need an mqtts:// broker URL")
        self.client_id = client_id
        self.subscribe_topic = subscribe
        self.will = will
        self.ca, self.cert, self.key = ca, cert, key
        self.keepalive_s = keepalive_s
        self.session_expiry_s = session_expiry_s
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.receive_maximum = None if receive_maximum is None else max(1, min(int(receive_maximum), 65535))
        self.connections = 0
        self._client: Any = None
        self._handler: MessageHandler | None = None
        self._on_connect_cb: ConnectHandler | None = None
        self._receiving = False
        self._closed = False
        self._connected = threading.Event()
        self._pending: deque[Any] = deque()
        self._pending_lock = threading.Lock()

    # -- life cycle -------------------------------------------------------------------------------------------
    def start(self, on_message: MessageHandler, on_connect: ConnectHandler | None = None) -> None:
        """Connect in the background (retrying with backoff until it works) and start receiving."""
        self._check_open()
        if self._client is not None:
            raise TransportError("the MQTT transport is already started")
        mqtt = _import_paho()
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        client.enable_logger(log)
        # No in-flight cap: a capped client queues replies but still sends the request's PUBACK, so a crash
        # could lose a request the broker counts as delivered. Unbounded here means bounded by the service queue.
        client.max_inflight_messages_set(0)
        # A bug in a callback is logged by paho instead of ending its network thread (a silently dead service).
        client.suppress_exceptions = True
        if self.will is not None:
            client.will_set(self.will[0], self.will[1], qos=1, retain=True)
        if self.tls:
            try:
                client.tls_set(ca_certs=self.ca, certfile=self.cert, keyfile=self.key, cert_reqs=ssl.CERT_REQUIRED,
                               tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise TransportError(f"cannot set up TLS for {self.url}: {exc}") from None
        client.reconnect_delay_set(self.reconnect_min_s, self.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = _no_delay
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        if self.receive_maximum is not None:
            props.ReceiveMaximum = self.receive_maximum
        self._handler, self._on_connect_cb, self._receiving = on_message, on_connect, True
        self._client = client
        try:
            client.connect_async(self.host, self.port, keepalive=self.keepalive_s, clean_start=False, properties=props)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to {self.url}: {exc}") from None
        client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until the broker accepted the connection (True) or ``timeout`` passed (False)."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop_receiving(self) -> None:
        # No UNSUBSCRIBE: the persistent session keeps queueing requests for the next run, and messages
        # arriving from now on are left unacknowledged, so the broker redelivers them then.
        self._receiving = False

    def close(self, timeout: float = 2.0) -> None:
        """Wait (up to ``timeout``) for the broker to acknowledge published replies, then disconnect."""
        if self._closed:
            return
        self._receiving = False
        self._closed = True
        client = self._client
        if client is None:
            return
        deadline = time.monotonic() + timeout
        while self.connected and self._unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.005)
        client.disconnect()
        client.loop_stop()
        self._connected.clear()

    def __enter__(self) -> "MqttTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publishing -------------------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, correlation_data: bytes | None = None, retain: bool = False) -> None:
        self._check_open()
        if self._client is None:
            raise TransportError("the MQTT transport is not started")
        mqtt = _import_paho()
        properties = None
        if correlation_data is not None:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = bytes(correlation_data)
        try:
            info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        except ValueError as exc:  # paho refuses bad topics and oversized payloads with ValueError
            raise TransportError(f"cannot publish to {topic!r}: {exc}") from None
        # NO_CONN is fine: paho keeps QoS 1 messages and sends them once it has reconnected.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
        with self._pending_lock:
            self._pending.append(info)
            self._drop_acknowledged()

    def _unacknowledged(self) -> int:
        with self._pending_lock:
            self._drop_acknowledged()
            return sum(1 for info in self._pending if not _acknowledged(info))

    def _drop_acknowledged(self) -> None:
        """Forget the acknowledged publishes at the head of the pending queue (under ``_pending_lock``)."""
        while self._pending and _acknowledged(self._pending[0]):
            self._pending.popleft()

    # -- paho callbacks (network thread) ----------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self.url, reason_code)
            return
        self.connections += 1
        session = getattr(flags, "session_present", False)
        log.info("connected to %s as %s (session %s)", self.url, self.client_id, "resumed" if session else "new")
        client.subscribe(self.subscribe_topic, qos=1)
        self._connected.set()
        if self._on_connect_cb is not None:
            self._on_connect_cb()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if not self._closed:
            log.warning("lost the connection to %s (%s); reconnecting with backoff", self.url, reason_code)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if not self._receiving or self._handler is None:
            return
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        mid, qos = msg.mid, msg.qos
        self._handler(Message(msg.topic, bytes(msg.payload), response_topic, correlation, time.perf_counter(),
                              redeliverable=qos > 0, duplicate=bool(getattr(msg, "dup", False)),
                              _ack=lambda: self._ack(mid, qos), retain=bool(getattr(msg, "retain", False))))

    def _ack(self, mid: int, qos: int) -> None:
        if qos > 0 and self._client is not None and not self._closed:
            self._client.ack(mid, qos)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("the MQTT transport is closed")


def _acknowledged(info: Any) -> bool:
    """Whether the broker has acknowledged a QoS 1 publish.

    A message published while disconnected keeps paho's ``MQTT_ERR_NO_CONN`` code after paho has resent it on
    reconnecting, and ``is_published()`` raises for that code whatever happened since; the flag that the PUBACK
    sets is what tells then."""
    try:
        return bool(info.is_published())
    except RuntimeError:
        with info._condition:  # paho's own lock around the flag
            return bool(info._published)
