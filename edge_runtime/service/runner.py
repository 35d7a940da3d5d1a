"""``python -m edge_runtime serve``: load the config and the model, connect, serve until SIGTERM, drain, exit 0.

SIGTERM (what Greengrass and systemd send) and SIGINT both start the drain: stop taking requests, answer the ones
held (up to ``drain_timeout_s``), publish status "offline", disconnect, return 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from .config import ServiceConfig, TransportKind, from_sources
from .protocol import Topics
from .service import IntentService, offline_will
from .transports.base import Transport

__all__ = ["serve", "make_transport", "load_config"]

log = logging.getLogger(__name__)


def load_config(flags: Mapping[str, Any], *, file: str | None = None, env: Mapping[str, str] | None = None) -> ServiceConfig:
    """The service config from flags, file and environment, plus the Greengrass component configuration under IPC."""
    from .transports.ipc import read_component_configuration

    return from_sources(flags, file=file, env=env, component=read_component_configuration)


def make_transport(config: ServiceConfig) -> Transport:
    """The transport ``config`` asks for (nothing connects until ``start``)."""
    topics = Topics.for_thing(config.thing)
    if config.transport is TransportKind.IPC:
        from .transports.ipc import IpcTransport

        return IpcTransport(subscribe=topics.request, target=config.ipc_target.value)
    from .transports.mqtt import MqttTransport

    return MqttTransport(config.broker, client_id=config.mqtt_client_id, subscribe=topics.request,
                         will=(topics.status, offline_will(config.thing)), ca=config.ca, cert=config.cert,
                         key=config.key, keepalive_s=config.keepalive_s, session_expiry_s=config.session_expiry_s,
                         reconnect_min_s=config.reconnect_min_s, reconnect_max_s=config.reconnect_max_s)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(config: ServiceConfig, *, stop: threading.Event | None = None, transport: Transport | None = None,
          classifier: Any = None, observer: Any = None) -> int:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives; drain; return the exit code (0).

    ``transport`` and ``classifier`` default to the ones ``config`` describes (tests pass their own);
    ``observer`` (a :class:`~edge_runtime.service.service.ServiceObserver`) sees every reply and error.
    """
    from ..classifier import IntentClassifier

    stop = stop or threading.Event()
    t0 = time.perf_counter()
    own_classifier = classifier is None
    if classifier is None:
        classifier = IntentClassifier.from_bundle(config.bundle, backend=config.backend, threads=config.threads,
                                                  threshold=config.threshold, top_k=config.top_k,
                                                  max_batch=config.max_batch)
    try:
        transport = transport or make_transport(config)
        with _stop_on_signals(stop):
            service = IntentService(config, classifier, transport, observer=observer).start()
            log.info("ready in %.2f s: model %s v%s, backend %s, transport %s", time.perf_counter() - t0,
                     service.model["name"], service.model["version"], service.backend, transport.name)
            wait_connected = getattr(transport, "wait_connected", None)
            if wait_connected is not None and not wait_connected(10.0):
                log.warning("no connection to %s yet; retrying with backoff (requests queue in the broker meanwhile)",
                            config.broker)
            try:
                while not stop.wait(0.5):
                    pass
                log.info("stop requested: draining")
            finally:
                service.drain()
    finally:
        if own_classifier:
            classifier.close()
    return 0
