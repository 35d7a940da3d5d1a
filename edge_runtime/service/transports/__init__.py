"""Transports: one small protocol (:class:`Transport`), one module per implementation.

:class:`FakeTransport` ships here for tests. The MQTT and IPC transports are imported from their modules
(``edge_runtime.service.transports.mqtt`` / ``.ipc``); their libraries load only when one is started.
"""

from __future__ import annotations

from .base import ConnectHandler, Message, MessageHandler, Transport
from .fake import FakeTransport, Published

__all__ = ["ConnectHandler", "FakeTransport", "Message", "MessageHandler", "Published", "Transport"]
