"""``python -m edge_runtime ask``: send requests to a device's intent service and print each reply as one JSON line.

Each text becomes one contract 4 request ``{"id", "text"}`` on ``cmd/intents/<thing>/request`` (MQTT 5, QoS 1).
By default it carries an MQTT 5 response topic of this client's own, ``cmd/intents/<thing>/response/<client id>``,
and its id as correlation data, so concurrent requesters never see each other's replies (and the requester policy
of infra/iot.yaml lets a requester read only its own); ``--default-reply-topic`` sends no response topic and
reads the thing's ``cmd/intents/<thing>/response`` instead, matching replies by id.

Exit status: 0 when every request got a reply, 1 when any got an error reply (``{"id", "error": {...}}``, printed
like a reply), 3 when some got none within ``--timeout`` seconds, 2 for bad arguments or a broker that refused.
On AWS IoT Core the client id must be the requester's thing name (``--client-id``), its certificate carrying the
``slm-intents-requester`` policy.

Example::

    python -m edge_runtime ask --broker mqtt://127.0.0.1:1883 --thing kitchen-pi "play some jazz" "rain tomorrow?"
"""

from __future__ import annotations

import json
import queue
import secrets
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence, TextIO

from .service.errors import TransportError, TransportUnavailableError
from .service.protocol import Topics
from .service.transports.mqtt import parse_broker_url

__all__ = ["AskOptions", "ask", "reply_topic", "EXIT_OK", "EXIT_ERROR_REPLY", "EXIT_TIMEOUT"]

EXIT_OK, EXIT_ERROR_REPLY, EXIT_TIMEOUT = 0, 1, 3


def reply_topic(thing: str, client_id: str) -> str:
    """The MQTT 5 response topic a requester asks for: below the thing's reply topic, named after the requester."""
    return f"{Topics.for_thing(thing).response}/{client_id}"


@dataclass(frozen=True)
class AskOptions:
    broker: str
    thing: str
    texts: tuple[str, ...]
    client_id: str = ""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    timeout_s: float = 10.0
    default_reply_topic: bool = False

    @property
    def mqtt_client_id(self) -> str:
        return self.client_id or f"edge-intents-ask-{secrets.token_hex(4)}"


def _import_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise TransportUnavailableError("ask needs paho-mqtt: pip install 'slm-intents[mqtt]'") from None
    return mqtt


def ask(options: AskOptions, out: TextIO | None = None) -> int:
    """Send one request per text, print each reply (arrival order) to ``out`` (stdout), return the exit status."""
    mqtt = _import_paho()
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    tls, host, port = parse_broker_url(options.broker)
    if (options.ca or options.cert or options.key) and not tls:
        raise TransportError("--ca / --cert / --key need an mqtts:// broker URL")
    if (options.cert is None) != (options.key is None):
        raise TransportError("mutual TLS needs both --cert and --key")
    if not options.texts:
        raise TransportError("nothing to ask: give one or more texts")
    client_id = options.mqtt_client_id
    topics = Topics.for_thing(options.thing)
    listen = topics.response if options.default_reply_topic else reply_topic(options.thing, client_id)
    run = secrets.token_hex(4)
    ids = [f"ask-{run}-{i}" for i in range(len(options.texts))]

    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, flags, rc, props: events.put(("connect", rc))
    client.on_subscribe = lambda c, u, mid, rcs, props: events.put(("subscribe", rcs))
    client.on_message = lambda c, u, msg: events.put(("message", msg))
    # AWS IoT Core answers an operation its policy denies by closing the connection
    client.on_disconnect = lambda c, u, flags, rc, props: events.put(("disconnect", rc))
    if tls:
        try:
            client.tls_set(ca_certs=options.ca, certfile=options.cert, keyfile=options.key,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TransportError(f"cannot set up TLS for {options.broker}: {exc}") from None
    deadline = time.monotonic() + options.timeout_s

    def wait(kind: str) -> Any:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                got, value = events.get(timeout=left)
            except queue.Empty:
                return None
            if got == kind:
                return value
            if got == "disconnect":
                raise TransportError(f"{options.broker} closed the connection ({value}): are this client id and its "
                                     "certificate allowed to connect, subscribe and publish there?")

    try:
        client.connect(host, port, keepalive=30, clean_start=True)
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot connect to {options.broker}: {exc}") from None
    client.loop_start()
    try:
        rc = wait("connect")
        if rc is None:
            print(f"error: no answer from {options.broker} within {options.timeout_s:g} s", file=sys.stderr)
            return EXIT_TIMEOUT
        if rc.is_failure:
            raise TransportError(f"{options.broker} refused the connection as {client_id!r}: {rc}")
        client.subscribe(listen, qos=1)
        granted = wait("subscribe")
        if granted is None or any(r.is_failure for r in granted):
            raise TransportError(f"cannot subscribe to {listen} ({granted or 'no SUBACK'}): is this client allowed?")
        for request_id, text in zip(ids, options.texts):
            props = None
            if not options.default_reply_topic:
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = listen
                props.CorrelationData = request_id.encode()
            client.publish(topics.request, json.dumps({"id": request_id, "text": text}), qos=1, properties=props)
        return _collect(ids, wait, out or sys.stdout, options.timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()


def _collect(ids: Sequence[str], wait: Any, out: TextIO, timeout_s: float) -> int:
    waiting = set(ids)
    status = EXIT_OK
    while waiting:
        msg = wait("message")
        if msg is None:
            print(f"error: no reply to {len(waiting)} of {len(ids)} request(s) within {timeout_s:g} s "
                  "(is the service running and subscribed for this thing?)", file=sys.stderr)
            return EXIT_TIMEOUT
        try:
            reply = json.loads(msg.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # not a reply of contract 4
        if not isinstance(reply, dict) or reply.get("id") not in waiting:
            continue  # another requester's reply on the shared default topic, or a redelivered one
        waiting.discard(reply["id"])
        print(json.dumps(reply, ensure_ascii=False), file=out, flush=True)
        if "error" in reply:
            status = EXIT_ERROR_REPLY
    return status
