"""The transport interface: how requests reach the service and how its replies and status leave.

A transport moves bytes on topics; it knows nothing of the protocol. Implementations: :mod:`.mqtt` (paho-mqtt to
a broker, plain TCP or mutual TLS), :mod:`.ipc` (Greengrass IPC) and :mod:`.fake` (in memory, for tests).

Delivery contract:

- :meth:`Transport.start` connects, subscribes to the request topic (QoS 1) and calls ``on_message`` for each
  request, in arrival order, from one thread. ``on_connect`` (optional) is called after every (re)connection.
- A :class:`Message` is acknowledged with :meth:`Message.ack` once its reply has been handed to
  :meth:`Transport.publish`. Where the transport can (MQTT, ``redeliverable``), a message never acknowledged is
  delivered again to the next session, so a request that arrives while the service shuts down is not lost.
- :meth:`Transport.publish` sends at QoS 1 and raises :class:`~edge_runtime.service.errors.TransportError` when the
  message cannot be sent or queued.
- :meth:`Transport.stop_receiving` stops delivery to ``on_message`` (publishing still works): the first step of a drain.
- :meth:`Transport.close` disconnects; any use after it raises
  :class:`~edge_runtime.service.errors.TransportClosedError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

__all__ = ["Message", "Transport", "MessageHandler", "ConnectHandler"]


def _no_ack() -> None:
    return None


@dataclass(frozen=True)
class Message:
    """One inbound request as the transport received it."""

    topic: str
    payload: bytes
    #: MQTT 5 response topic and correlation data of the request, when it carried them.
    response_topic: str | None = None
    correlation_data: bytes | None = None
    #: ``time.perf_counter()`` when the transport received it; latency is measured from here.
    received_at: float = field(default_factory=time.perf_counter)
    #: True when an unacknowledged message is delivered again to the next session (MQTT QoS 1, persistent session).
    redeliverable: bool = False
    _ack: Callable[[], None] = field(default=_no_ack, repr=False, compare=False)
    #: True when the broker says this is a redelivery (MQTT DUP flag) of a message it sent before.
    duplicate: bool = False
    #: True when the broker sent a retained message (on subscribing), not one published now.
    retain: bool = False

    def ack(self) -> None:
        """Acknowledge the message (MQTT PUBACK); call after its reply was published."""
        self._ack()


MessageHandler = Callable[[Message], None]
ConnectHandler = Callable[[], None]


@runtime_checkable
class Transport(Protocol):
    """Moves requests in and replies out; see the module docstring for the delivery contract."""

    name: str

    def start(self, on_message: MessageHandler, on_connect: ConnectHandler | None = None) -> None: ...

    def publish(self, topic: str, payload: bytes, *, correlation_data: bytes | None = None,
                retain: bool = False) -> None: ...

    def stop_receiving(self) -> None: ...

    def close(self) -> None: ...
