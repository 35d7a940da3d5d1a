"""Errors of the inference service, a branch of the runtime's tree under :class:`~edge_runtime.errors.EdgeRuntimeError`.

::

    EdgeRuntimeError
    └── ServiceError                 the service cannot be configured, connected or used
        ├── ConfigError              a configuration value is missing, unknown or malformed (names field and source)
        ├── TransportError           the broker / Greengrass IPC refused or failed an operation
        │   ├── TransportUnavailableError  the transport's library is not installed (names the extra)
        │   └── TransportClosedError       the transport was used after close()
        └── RequestError             one request cannot be served; carries the wire error ``code`` and the request id
            ├── OverloadedError      the bounded queue is full
            └── ShuttingDownError    the service is draining and takes no new requests

A :class:`RequestError` never stops the service: it becomes an error reply on the reply topic.
"""

from __future__ import annotations

from ..errors import EdgeRuntimeError

__all__ = [
    "ServiceError",
    "ConfigError",
    "TransportError",
    "TransportUnavailableError",
    "TransportClosedError",
    "RequestError",
    "OverloadedError",
    "ShuttingDownError",
]


class ServiceError(EdgeRuntimeError):
    """Base class of the service's errors."""


class ConfigError(ServiceError, ValueError):
    """A configuration value is missing, unknown or malformed."""


class TransportError(ServiceError):
    """A transport operation (connect, subscribe, publish) failed."""


class TransportUnavailableError(TransportError):
    """The transport's library (paho-mqtt, awsiotsdk) is not installed."""


class TransportClosedError(TransportError):
    """The transport was used after :meth:`close`."""


class RequestError(ServiceError):
    """A request that gets an error reply. ``code`` is an :class:`~edge_runtime.service.protocol.ErrorCode` value."""

    def __init__(self, code: str, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.request_id = request_id


class OverloadedError(RequestError):
    """The request queue is full; the client should retry later."""

    def __init__(self, message: str = "the request queue is full; retry later", request_id: str | int | None = None) -> None:
        super().__init__("overloaded", message, request_id)


class ShuttingDownError(RequestError):
    """The service is draining: it answers what it holds and takes nothing new."""

    def __init__(self, message: str = "the service is shutting down; retry later",
                 request_id: str | int | None = None) -> None:
        super().__init__("shutting_down", message, request_id)
