"""Telemetry and drift alerts from the running service, with store and forward.

:class:`TelemetryPublisher` is a :class:`~edge_runtime.service.service.ServiceObserver`: the service hands it every
answered request after the reply went out; a background thread tokenizes the texts again for length and
unknown-token rate (so the reply path pays only an append to a bounded queue), aggregates a
:class:`~edge_runtime.telemetry.TelemetryWindow`, and every ``interval_s`` closes the window, judges it against the
bundle's reference statistics and publishes on ``dt/intents/<thing>/telemetry``.

Every outgoing message is written to the :class:`~edge_runtime.telemetry.Spool` (SQLite, bounded, durable) first
and removed only once the transport took it while connected, so messages produced while the broker is away are
delivered in order after the reconnection (also after a restart of the service); beyond the bound the oldest are
dropped and the count is reported in every telemetry message (``spool.dropped``).

Messages on the telemetry topic carry a ``type``:

``telemetry``     the window: counts per intent, confidence and length histograms, low-confidence and [UNK] rates,
                  latency p50/p95, errors, RSS, model, drift signals, spool state
``drift_alert``   the window crossed a configured drift threshold (``alerts``: signal, metric, value, threshold)
``samples``       sampled inputs with the device's outputs (only when ``sample_rate`` > 0: raw texts never leave
                  the device otherwise), for ``python -m cloud.shadow compare``
``shadow``        a candidate bundle's disagreements with the serving one (see :mod:`.shadow`)

Example::

    publisher = TelemetryPublisher(TelemetryOptions(thing="pi-1", interval_s=60, spool_path="spool.sqlite"),
                                   classifier, transport).start()
    service = IntentService(config, classifier, transport, observer=publisher).start()
    ...
    service.drain(); publisher.close()
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..telemetry import DriftMonitor, DriftThresholds, Spool, SpoolError, TelemetryWindow
from .errors import TransportError
from .protocol import Request, Topics
from .transports.base import Transport

__all__ = ["TelemetryOptions", "TelemetryPublisher", "ObserverChain", "MESSAGE_TYPES"]

log = logging.getLogger(__name__)

MESSAGE_TYPES = ("telemetry", "drift_alert", "samples", "shadow")


@dataclass(frozen=True)
class TelemetryOptions:
    """What the publisher needs from the service configuration.

    thing: the thing name (fills the topic).
    interval_s: seconds between telemetry messages.
    spool_path: the SQLite store-and-forward file.
    spool_max_messages: the spool's bound; beyond it the oldest messages are dropped (and counted).
    sample_rate: fraction of requests whose raw texts are published with the outputs (0: never).
    max_samples: most samples kept per window.
    thresholds: the drift thresholds.
    queue_size: most answered requests waiting for aggregation; beyond it they are counted as ``skipped``.
    """

    thing: str
    interval_s: float = 60.0
    spool_path: str = "telemetry-spool.sqlite"
    spool_max_messages: int = 10_000
    sample_rate: float = 0.0
    max_samples: int = 100
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    queue_size: int = 10_000
    seed: int | None = None

    @classmethod
    def from_config(cls, config: Any) -> "TelemetryOptions":
        """Options from a :class:`~edge_runtime.service.config.ServiceConfig`."""
        return cls(thing=config.thing, interval_s=config.telemetry_interval,
                   spool_path=config.spool_path or default_spool_path(config.thing),
                   spool_max_messages=config.spool_max_messages, sample_rate=config.sample_rate,
                   max_samples=config.max_samples,
                   thresholds=DriftThresholds(psi=config.drift_psi, js=config.drift_js,
                                              unknown_token_rate_delta=config.drift_unknown_rate_delta,
                                              min_requests=config.drift_min_requests))


def default_spool_path(thing: str) -> str:
    """Where the spool lives when the configuration names no file: the system temp folder.

    On a device set ``spool_path`` (Greengrass: ``SpoolPath`` under the component's work folder) so the queue
    survives a reboot too.
    """
    import tempfile
    from pathlib import Path

    return str(Path(tempfile.gettempdir()) / "edge-intents" / thing / "telemetry-spool.sqlite")


class ObserverChain:
    """Several observers behind one: each sees every reply and error; one that raises does not stop the others."""

    def __init__(self, *observers: Any) -> None:
        self.observers = [o for o in observers if o is not None]

    def on_reply(self, request: Request, predictions: Sequence[Any], latency_ms: float) -> None:
        for o in self.observers:
            try:
                o.on_reply(request, predictions, latency_ms)
            except Exception:  # an observer bug must not hide the others' data
                log.error("observer %s failed", type(o).__name__, exc_info=True)

    def on_error(self, code: str) -> None:
        for o in self.observers:
            try:
                o.on_error(code)
            except Exception:
                log.error("observer %s failed", type(o).__name__, exc_info=True)


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


class TelemetryPublisher:
    """Aggregates answered requests, publishes windows and drift alerts through a durable spool.

    ``classifier`` gives the labels, tokenizer, model name/version and the bundle's reference statistics. A context
    manager; :meth:`close` publishes the last (partial) window into the spool, tries one flush and closes the spool.
    """

    def __init__(self, options: TelemetryOptions, classifier: Any, transport: Transport, *,
                 spool: Spool | None = None, sources: Sequence[Any] = ()) -> None:
        if options.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if not 0.0 <= options.sample_rate <= 1.0:
            raise ValueError("sample_rate must be between 0 and 1")
        self.options = options
        self.topic = Topics.for_thing(options.thing).telemetry
        self.transport = transport
        self.labels = tuple(classifier.labels)
        self.tokenizer = classifier.tokenizer
        self.model = {"name": str(classifier.name), "version": str(classifier.version)}
        reference = getattr(getattr(getattr(classifier, "bundle", None), "manifest", None), "reference", None) or {}
        self.monitor = DriftMonitor(reference, options.thresholds)
        self.spool = spool if spool is not None else Spool(options.spool_path,
                                                            max_messages=options.spool_max_messages)
        self._rng = random.Random(options.seed)  # nosec B311 # picks samples, no secret
        self._queue: deque[tuple[tuple[str, ...], tuple[Any, ...], float]] = deque()
        self._errors: deque[str] = deque(maxlen=options.queue_size)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._window = TelemetryWindow(self.labels)
        self._samples: list[dict[str, Any]] = []
        self._seq = 0
        self._skipped = 0
        self._spool_failures: dict[str, int] = {}
        self._published = 0
        #: texts the service reported so far (answered requests)
        self.observed = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.last_window: dict[str, Any] | None = None
        #: objects with ``window_messages() -> list[dict]`` (the shadow runner): spooled at each window
        self.sources = list(sources)

    # -- observer hooks (service threads: cheap, never raise) ----------------------------------------------------
    def on_reply(self, request: Request, predictions: Sequence[Any], latency_ms: float) -> None:
        with self._lock:
            self.observed += len(request.texts)
            if len(self._queue) >= self.options.queue_size:
                self._skipped += len(request.texts)
                return
            self._queue.append((request.texts, tuple(predictions), latency_ms))

    def on_error(self, code: str) -> None:
        self._errors.append(code)

    def set_model(self, classifier: Any) -> None:
        """After a model hot-swap: close the window of the old model, then judge against the new one's reference."""
        self.publish_window()
        self.labels = tuple(classifier.labels)
        self.tokenizer = classifier.tokenizer
        self.model = {"name": str(classifier.name), "version": str(classifier.version)}
        reference = getattr(getattr(getattr(classifier, "bundle", None), "manifest", None), "reference", None) or {}
        self.monitor = DriftMonitor(reference, self.options.thresholds)
        self._window = TelemetryWindow(self.labels)
        self._wake.set()

    # -- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> "TelemetryPublisher":
        if self._closed:
            raise RuntimeError("the telemetry publisher is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="intent-telemetry", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Publish the last window into the spool, try to deliver, close the spool. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 5.0)
        try:
            self.publish_window()
            self.flush()
        finally:
            self._closed = True
            self.spool.close()

    def __enter__(self) -> "TelemetryPublisher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        from .shadow import _lower_priority

        _lower_priority()
        next_window = time.monotonic() + self.options.interval_s
        # Poll the spool often enough that a reconnection is noticed quickly, but never busy-wait.
        poll = min(1.0, self.options.interval_s)
        while not self._stop.is_set():
            self._wake.wait(max(0.0, min(poll, next_window - time.monotonic())))
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._aggregate()
                if time.monotonic() >= next_window:
                    next_window += self.options.interval_s * max(1, int((time.monotonic() - next_window)
                                                                        // self.options.interval_s) + 1)
                    self.publish_window()
                self.flush()
            except Exception:  # the telemetry thread must outlive a bad record or a spool hiccup
                log.error("telemetry cycle failed", exc_info=True)

    # -- aggregation ---------------------------------------------------------------------------------------------
    def _aggregate(self) -> None:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
        errors = []
        while self._errors:
            errors.append(self._errors.popleft())
        for code in errors:
            self._window.add_error(code)
        if not items:
            return
        texts = [t for texts, _, _ in items for t in texts]
        enc = self.tokenizer.encode(texts)
        lengths = enc.lengths.tolist()
        unknown = self.tokenizer.unknown_rate(enc).tolist()
        i = 0
        for req_texts, predictions, latency_ms in items:
            for text, pred in zip(req_texts, predictions):
                self._window.add(pred, latency_ms, int(lengths[i]), float(unknown[i]))
                i += 1
                if self.options.sample_rate > 0 and len(self._samples) < self.options.max_samples \
                        and self._rng.random() < self.options.sample_rate:
                    self._samples.append({"text": text, **pred.to_dict()})

    def publish_window(self) -> dict[str, Any]:
        """Close the current window now: spool its telemetry (and drift alert, samples); return the telemetry body."""
        self._aggregate()
        window, self._window = self._window, TelemetryWindow(self.labels)
        samples, self._samples = self._samples, []
        with self._lock:
            skipped, self._skipped = self._skipped, 0
        self._seq += 1
        body = window.snapshot()
        drift = self.monitor.evaluate(body)
        body = {"type": "telemetry", "thing": self.options.thing, "seq": self._seq, "ts": round(time.time(), 3),
                **body, "model": dict(self.model), "rss_mb": _rss_mb(), "drift": drift,
                "skipped": skipped, "spool": self._spool_state(), "sampling": self.options.sample_rate > 0}
        self._put(body)
        if drift["alerts"]:
            log.warning("drift alert: %s", ", ".join(f"{a['signal']} {a['metric']}={a['value']}" for a in drift["alerts"]))
            self._put({"type": "drift_alert", "thing": self.options.thing, "seq": self._seq, "ts": body["ts"],
                       "model": dict(self.model), "window": body["window"], "alerts": drift["alerts"],
                       "signals": drift["signals"]})
        for source in self.sources:
            for message in source.window_messages():
                self._put({**message, "thing": self.options.thing, "seq": self._seq, "ts": body["ts"]})
        if samples:
            self._put({"type": "samples", "thing": self.options.thing, "seq": self._seq, "ts": body["ts"],
                       "model": dict(self.model), "samples": samples})
        self.last_window = body
        return body

    def put(self, body: Mapping[str, Any]) -> None:
        """Spool one more message for the telemetry topic (the shadow runner publishes this way)."""
        self._put(body)
        self._wake.set()

    def _put(self, body: Mapping[str, Any]) -> None:
        try:
            self.spool.put(self.topic, _dumps(body))
        except SpoolError as exc:
            # A full or read-only disk costs this message, not the service; the count goes out with the next window.
            with self._lock:
                self._spool_failures[exc.condition] = self._spool_failures.get(exc.condition, 0) + 1
            log.error("telemetry not stored: %s", exc)

    def _spool_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = {"pending": self.spool.pending, "dropped": self.spool.dropped,
                                     "recreated": self.spool.recreated, "durable": self.spool.durable}
        except SpoolError as exc:
            state = {"error": exc.condition}
        with self._lock:
            state["store_failures"] = dict(self._spool_failures)
        return state

    # -- delivery ------------------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return bool(getattr(self.transport, "connected", True))

    def flush(self, batch: int = 100) -> int:
        """Deliver spooled messages in order while the transport is connected; returns how many went out."""
        sent = 0
        with self._flush_lock:
            while self.connected:
                try:
                    rows = self.spool.peek(batch)
                except SpoolError as exc:
                    log.error("cannot read the telemetry spool: %s", exc)
                    return sent
                if not rows:
                    break
                done: list[int] = []
                for msg_id, topic, payload in rows:
                    if not self.connected:
                        break
                    try:
                        self.transport.publish(topic, payload)
                    except TransportError as exc:
                        log.info("telemetry kept in the spool (%s)", exc)
                        break
                    done.append(msg_id)
                try:
                    self.spool.ack(done)
                except SpoolError as exc:
                    log.error("cannot update the telemetry spool: %s", exc)
                    return sent
                sent += len(done)
                if len(done) < len(rows):
                    break
        self._published += sent
        return sent

    @property
    def published(self) -> int:
        """Messages delivered to the transport so far."""
        return self._published


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)
