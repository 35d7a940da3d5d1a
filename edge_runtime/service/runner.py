"""``python -m edge_runtime serve``: load the config and the model, connect, serve until SIGTERM, drain, exit 0.

SIGTERM (what Greengrass and systemd send) and SIGINT both start the drain: stop taking requests, answer the ones
held (up to ``drain_timeout_s``), publish status "offline", disconnect, return 0.

The model is loaded the way every later update is (:func:`.reload.load_verified`): the bundle is copied into a
private directory, the copy verified (signature when ``bundle_public_key`` is set, nothing unlisted, every sha256)
and loaded, so the bytes that run are the bytes that were checked. SIGHUP, or a change seen in the bundle directory
every ``bundle_poll_s`` seconds, updates the model without a restart (:mod:`.reload`): on a thread of its own (the
main thread keeps watching for SIGTERM), the new bundle is loaded the same way beside the serving one, then swapped
in at the next batch; a bundle that fails is refused and the old model keeps serving. SIGUSR1 dumps every thread's
stack to stderr (see :mod:`edge_runtime.cli`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

from .config import ServiceConfig, TransportKind, from_sources
from .protocol import Topics
from .service import IntentService, offline_will
from .transports.base import Transport

__all__ = ["serve", "make_transport", "load_config", "fleet_observers"]

log = logging.getLogger(__name__)
#: How often the main thread looks at the stop flags while serving.
_POLL_S = 0.1
#: How long the exit waits for a model update still loading.
_UPDATE_JOIN_S = 5.0


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

    # Receive Maximum = the queue: the broker never has more requests unacknowledged at the service than the queue
    # holds, so a backlog (after a broker restart, or a long absence) is paced instead of refused as "overloaded".
    return MqttTransport(config.broker, client_id=config.mqtt_client_id, subscribe=topics.request,
                         will=(topics.status, offline_will(config.thing)), ca=config.ca, cert=config.cert,
                         key=config.key, keepalive_s=config.keepalive_s, session_expiry_s=config.session_expiry_s,
                         reconnect_min_s=config.reconnect_min_s, reconnect_max_s=config.reconnect_max_s,
                         receive_maximum=config.queue_size)


def fleet_observers(config: ServiceConfig, classifier: Any, transport: Transport) -> tuple[Any, list[Any]]:
    """The telemetry publisher (``telemetry_interval`` > 0) and the shadow runner (``shadow_bundle``), started.

    Returns ``(observer, parts)``: the observer to hand the service (None when neither is configured) and the
    parts to close after the drain, in that order.
    """
    from .shadow import ShadowRunner
    from .telemetry import ObserverChain, TelemetryOptions, TelemetryPublisher

    parts: list[Any] = []
    shadow = None
    if config.shadow_bundle:
        from .reload import load_verified

        # A candidate runs on the device too: it is loaded (and signed) like the serving model.
        candidate, cleanup = load_verified(config.shadow_bundle, public_key=config.bundle_public_key,
                                           backend=config.backend, threads=1, threshold=config.threshold,
                                           top_k=config.top_k, max_batch=config.max_batch)
        try:
            shadow = ShadowRunner(candidate, serving_model={"name": str(classifier.name),
                                                            "version": str(classifier.version)},
                                  queue_size=config.shadow_queue_size, include_texts=config.sample_rate > 0,
                                  own_candidate=True, cleanup=cleanup).start()
        except BaseException:
            candidate.close()
            cleanup()
            raise
        parts.append(shadow)
        log.info("shadow: candidate %s v%s runs beside the serving model", candidate.name, candidate.version)
    telemetry = None
    if config.telemetry_interval > 0:
        telemetry = TelemetryPublisher(TelemetryOptions.from_config(config), classifier, transport,
                                       sources=[shadow] if shadow is not None else []).start()
        parts.append(telemetry)
        log.info("telemetry every %.0f s on %s (spool %s, sampling %s)", config.telemetry_interval, telemetry.topic,
                 telemetry.spool.path, config.sample_rate or "off")
    observers = [o for o in (telemetry, shadow) if o is not None]
    if not observers:
        return None, parts
    return (observers[0] if len(observers) == 1 else ObserverChain(*observers)), parts


class _Signals:
    """What SIGTERM/SIGINT asked for, as a plain attribute.

    A Python signal handler runs in the main thread between any two bytecodes, including while that thread holds
    a lock, so a handler must take none: ``threading.Event.set`` takes the event's lock, and calling it from the
    handler deadlocks whenever the signal lands while the main thread is inside ``Event.wait`` holding it.
    """

    def __init__(self) -> None:
        self.stop = False
        self.reload = False

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stop = True

    def _on_reload(self, signum: int, frame: Any) -> None:
        self.reload = True


@contextmanager
def _catch_signals() -> Iterator[_Signals]:
    signals = _Signals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return
    handlers = {signal.SIGTERM: signals._on_stop, signal.SIGINT: signals._on_stop, signal.SIGHUP: signals._on_reload}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield signals
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(config: ServiceConfig, *, stop: threading.Event | None = None, transport: Transport | None = None,
          classifier: Any = None, observer: Any = None) -> int:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives; drain; return the exit code (0).

    ``transport`` and ``classifier`` default to the ones ``config`` describes (tests pass their own);
    ``observer`` (a :class:`~edge_runtime.service.service.ServiceObserver`) sees every reply and error.
    """
    stop = stop or threading.Event()
    # Signals are caught from the start: a SIGTERM while the model loads still ends in a clean exit 0.
    with _catch_signals() as signals:
        return _serve(config, stop, signals, transport, classifier, observer)


def _serve(config: ServiceConfig, stop: threading.Event, signals: _Signals, transport: Transport | None,
           classifier: Any, observer: Any) -> int:
    from .reload import BundleReloader, SwappableClassifier, load_verified

    t0 = time.perf_counter()
    own_classifier = classifier is None
    reloader = None
    updater = None
    # Watched from before the load: a change made while the model loads is noticed too.
    watch = _BundleWatch(config.bundle) if own_classifier and config.bundle_poll_s > 0 else None
    if classifier is None:
        initial, cleanup = load_verified(config.bundle, public_key=config.bundle_public_key, **_load_options(config))
        classifier = SwappableClassifier(initial, cleanup=cleanup)
    fleet: list[Any] = []
    try:
        transport = transport or make_transport(config)
        if observer is None:
            observer, fleet = fleet_observers(config, classifier, transport)
        service = IntentService(config, classifier, transport, observer=observer).start()
        if own_classifier:
            classifier.on_swap = partial(_follow_swap, fleet)
            reloader = BundleReloader(classifier, service=service, public_key=config.bundle_public_key,
                                      **_load_options(config))
            updater = _Updater(reloader, config.bundle)
        log.info("ready in %.2f s: model %s v%s, backend %s, transport %s", time.perf_counter() - t0,
                 service.model["name"], service.model["version"], service.backend, transport.name)
        wait_connected = getattr(transport, "wait_connected", None)
        if wait_connected is not None and not wait_connected(10.0):
            log.warning("no connection to %s yet; retrying with backoff (requests queue in the broker meanwhile)",
                        config.broker)
        next_look = time.monotonic() + config.bundle_poll_s
        try:
            # Polled, not waited on: see _Signals. is_set() reads the flag without the event's lock.
            while not (signals.stop or stop.is_set()):
                time.sleep(_POLL_S)
                if updater is None or updater.busy:
                    continue  # a request made meanwhile (SIGHUP, a change) is taken once the update is done
                if signals.reload:
                    signals.reload = False
                    updater.start("SIGHUP", watch)
                elif watch is not None and time.monotonic() >= next_look:
                    next_look = time.monotonic() + config.bundle_poll_s
                    if watch.settled_change():
                        updater.start("a change in the bundle directory", watch)
            log.info("stop requested: draining")
        finally:
            service.drain()
            if updater is not None and not updater.join(_UPDATE_JOIN_S):
                log.warning("a model update was still loading at exit; it is abandoned")
    finally:
        for part in fleet:  # shadow first (its last comparisons), then telemetry (the last window, into the spool)
            part.close()
        if own_classifier:
            classifier.close()
    return 0


def _follow_swap(fleet: Sequence[Any], new: Any) -> None:
    """After a model swap: the fleet parts that describe the serving model (telemetry's reference) follow it."""
    for part in fleet:
        set_model = getattr(part, "set_model", None)
        if set_model is not None:
            set_model(new)


def _load_options(config: ServiceConfig) -> dict[str, Any]:
    return {"backend": config.backend, "threads": config.threads, "callers": config.workers,
            "threshold": config.threshold, "top_k": config.top_k, "max_batch": config.max_batch}


class _Updater:
    """Runs one model update at a time on its own thread, so that a slow or stuck load never keeps the main thread
    from SIGTERM."""

    def __init__(self, reloader: Any, bundle: str) -> None:
        self.reloader, self.bundle = reloader, bundle
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, why: str, watch: "_BundleWatch | None") -> None:
        log.info("model update requested by %s: loading %s", why, self.bundle)
        if watch is not None:
            watch.accept()  # tried once per state: a refused bundle is tried again only once it changes again
        self._thread = threading.Thread(target=self._run, name="bundle-update", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.reloader.load(self.bundle)
        except Exception as exc:  # noqa: BLE001 - the reloader has logged why it refused the bundle
            log.debug("model update from %s refused: %r", self.bundle, exc)

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.busy


class _BundleWatch:
    """Notices that the bundle directory changed: the symlink's target, or a file's name, size or mtime.

    A change is reported once it has held still for one look (a deployment still writing files is not loaded
    half-way), and each state is reported once.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._accepted = self._last = self._state()

    def _state(self) -> tuple[Any, ...]:
        try:
            real = os.path.realpath(self.path)
            with os.scandir(real) as entries:
                files = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file())
            return (real, tuple(files))
        except OSError as exc:
            return ("unreadable", str(exc))

    def settled_change(self) -> bool:
        state = self._state()
        settled = state == self._last
        self._last = state
        return settled and state != self._accepted

    def accept(self) -> None:
        self._accepted = self._last = self._state()
