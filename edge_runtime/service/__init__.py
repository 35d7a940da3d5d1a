"""The on-device inference service (contract 4): intent requests over MQTT or Greengrass IPC, replies, status.

Imports nothing heavy: paho-mqtt and awsiotsdk load when their transport starts, the model when ``serve`` runs.

Example::

    from edge_runtime.service import IntentService, FakeTransport, from_sources

    config = from_sources({"bundle": "edge/3", "thing": "kitchen-pi"}, env={})
    with IntentClassifier.from_bundle(config.bundle) as clf:
        transport = FakeTransport(request_topic=Topics.for_thing("kitchen-pi").request)
        service = IntentService(config, clf, transport).start()
        transport.deliver({"id": "r1", "text": "play jazz"})
"""

from __future__ import annotations

from .batcher import MicroBatcher
from .config import IpcTarget, ServiceConfig, TransportKind, from_sources
from .errors import (
    ConfigError,
    OverloadedError,
    RequestError,
    ServiceError,
    ShuttingDownError,
    TransportClosedError,
    TransportError,
    TransportUnavailableError,
)
from .protocol import ErrorCode, Request, Topics, decode_request, encode_error, encode_reply
from .runner import serve
from .service import IntentService
from .transports import FakeTransport, Message, Published, Transport

__all__ = [
    "ConfigError",
    "ErrorCode",
    "FakeTransport",
    "IntentService",
    "IpcTarget",
    "Message",
    "MicroBatcher",
    "OverloadedError",
    "Published",
    "Request",
    "RequestError",
    "ServiceConfig",
    "ServiceError",
    "ShuttingDownError",
    "Topics",
    "Transport",
    "TransportClosedError",
    "TransportError",
    "TransportKind",
    "TransportUnavailableError",
    "decode_request",
    "encode_error",
    "encode_reply",
    "from_sources",
    "serve",
]
