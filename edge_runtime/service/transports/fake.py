"""An in-memory transport for tests: deliver requests by hand, read what the service published.

Example::

    transport = FakeTransport()
    service = IntentService(config, classifier, transport).start()
    transport.deliver(b'{"id": "r1", "text": "play jazz"}')
    reply = transport.wait_for(1)[0]          # a Published(topic, payload, correlation_data, retain)
    reply.json()["intent"]
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import TransportClosedError, TransportError
from .base import ConnectHandler, Message, MessageHandler

__all__ = ["FakeTransport", "Published"]


@dataclass(frozen=True)
class Published:
    """One message the service published."""

    topic: str
    payload: bytes
    correlation_data: bytes | None = None
    retain: bool = False

    def json(self) -> Any:
        return json.loads(self.payload)


class FakeTransport:
    """A :class:`~edge_runtime.service.transports.base.Transport` that keeps everything in lists.

    ``published`` holds what the service sent, ``acked`` the messages it acknowledged, ``undelivered`` the
    messages offered after :meth:`stop_receiving`. ``fail_publish`` makes the next publishes raise.
    ``will`` is what :meth:`drop` publishes, like a broker's last will on a lost connection.
    """

    name = "fake"

    def __init__(self, *, request_topic: str = "cmd/intents/test/request", redeliverable: bool = False,
                 will: tuple[str, bytes] | None = None) -> None:
        self.request_topic = request_topic
        self.redeliverable = redeliverable
        self.will = will
        self.published: list[Published] = []
        self.acked: list[Message] = []
        self.undelivered: list[Message] = []
        self.fail_publish = 0
        self._handler: MessageHandler | None = None
        self._on_connect: ConnectHandler | None = None
        self._receiving = False
        self._closed = False
        self._cond = threading.Condition()

    def start(self, on_message: MessageHandler, on_connect: ConnectHandler | None = None) -> None:
        self._check_open()
        self._handler, self._on_connect, self._receiving = on_message, on_connect, True
        if on_connect is not None:
            on_connect()

    def deliver(self, payload: bytes | str | dict, *, topic: str | None = None, response_topic: str | None = None,
                correlation_data: bytes | None = None, duplicate: bool = False, retain: bool = False) -> Message:
        """Hand one request to the service (as the transport's receive thread would); ``duplicate`` and ``retain``
        are the MQTT DUP and RETAIN flags."""
        self._check_open()
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        holder: list[Message] = []
        msg = Message(topic or self.request_topic, payload, response_topic, correlation_data, time.perf_counter(),
                      self.redeliverable, lambda: self._record_ack(holder[0]), duplicate, retain)
        holder.append(msg)
        if not self._receiving or self._handler is None:
            self.undelivered.append(msg)
            return msg
        self._handler(msg)
        return msg

    def _record_ack(self, msg: Message) -> None:
        with self._cond:
            self.acked.append(msg)
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes, *, correlation_data: bytes | None = None, retain: bool = False) -> None:
        self._check_open()
        with self._cond:
            if self.fail_publish > 0:
                self.fail_publish -= 1
                raise TransportError(f"fake publish to {topic} failed")
            self.published.append(Published(topic, bytes(payload), correlation_data, retain))
            self._cond.notify_all()

    def wait_for(self, count: int, *, topic: str | None = None, timeout: float = 5.0) -> list[Published]:
        """Block until ``count`` messages were published (on ``topic``, if given); return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [p for p in self.published if topic is None or p.topic == topic]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} messages published on {topic or 'any topic'}")
                self._cond.wait(left)

    def on(self, topic: str) -> list[Published]:
        with self._cond:
            return [p for p in self.published if p.topic == topic]

    def reconnect(self) -> None:
        """Simulate a reconnection (calls ``on_connect`` again)."""
        if self._on_connect is not None:
            self._on_connect()

    def drop(self) -> None:
        """Simulate a lost connection: the broker publishes the last will."""
        if self.will is not None:
            with self._cond:
                self.published.append(Published(self.will[0], self.will[1], None, True))
                self._cond.notify_all()

    def stop_receiving(self) -> None:
        self._receiving = False

    def close(self) -> None:
        self._receiving = False
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("the fake transport is closed")

    def __enter__(self) -> "FakeTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
