"""The inference service: requests from a transport, through the micro-batcher and the classifier, replies back.

Life cycle::

    service = IntentService(config, classifier, transport).start()   # status "online" (retained), requests flow
    ...
    service.drain(timeout=5)   # stop taking requests, answer those held, status "offline", disconnect

Every request gets exactly one reply or error reply on the reply topic, and is acknowledged once that reply was
published, whatever is raised while decoding, predicting or encoding it (an unexpected exception becomes an
``internal`` error reply), and the service stays up whatever it receives. A broker's in-flight window is small
(Mosquitto's ``max_inflight_messages`` is 20), so a message left unacknowledged would soon stop all delivery.
Two kinds of message are acknowledged and not answered, each counted: a retained request (``retained_ignored``:
requests are commands, and a retained one would be answered again at every start) and, with
``max_request_age_s``, a request whose ``ts`` is older than that (``expired``).

A reply goes to the request's MQTT 5 response topic (with its correlation data) when that topic lies under an
allowed prefix, else to ``cmd/intents/<thing>/response``; a response topic outside the prefixes gets a
``forbidden_topic`` error on the default topic, so a request cannot make the service publish anywhere else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from functools import partial
from typing import Any, Protocol, Sequence

from .batcher import MicroBatcher
from .config import ServiceConfig
from .errors import RequestError, ShuttingDownError, TransportError
from .protocol import ErrorCode, Request, Topics, decode_request, encode_error, encode_reply, encode_status, \
    reply_topic_allowed
from .transports.base import Message, Transport

__all__ = ["IntentService", "ServiceObserver", "offline_will"]

log = logging.getLogger(__name__)
#: How many answered requests are remembered to recognise redeliveries.
_ANSWERED_KEPT = 4096
#: What identifies a request across clients: its reply topic, correlation data and id.
_Key = tuple[str, "bytes | None", str]


class ServiceObserver(Protocol):
    """Sees every answered request and every error code (telemetry, drift); called after the reply went out.

    ``on_reply`` runs on a worker thread, one reply at a time in order of arrival; ``on_error`` on the thread that
    refused the request. Both must be quick and must not raise (an exception is logged and the service goes on).
    """

    def on_reply(self, request: Request, predictions: Sequence[Any], latency_ms: float) -> None: ...

    def on_error(self, code: str) -> None: ...


class IntentService:
    """Serves one classifier over one transport.

    ``classifier`` is an :class:`~edge_runtime.IntentClassifier` (or anything with ``predict_batch``, ``name``,
    ``version`` and ``backend.name``); the service does not close it.
    """

    def __init__(self, config: ServiceConfig, classifier: Any, transport: Transport, *,
                 observer: ServiceObserver | None = None) -> None:
        self.config = config
        self.observer = observer
        self.topics = Topics.for_thing(config.thing)
        self.transport = transport
        self.model = {"name": str(classifier.name), "version": str(classifier.version)}
        self.backend = str(getattr(getattr(classifier, "backend", None), "name", "unknown"))
        self._prefixes = config.allowed_reply_prefixes
        self._classifier = classifier
        # A swappable classifier names the model behind each call (see _predict); a plain one is always self.model.
        self._predict_with_model = getattr(classifier, "predict_with_model", None)
        self._batcher = MicroBatcher(self._predict, queue_size=config.queue_size, max_batch=config.max_batch,
                                     window_s=config.batch_window_s, workers=config.workers)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        # Requests answered lately: a broker redelivers a request (DUP) whose PUBACK it lost, e.g. across a broker
        # restart; the reply is already out (and retransmitted by the session if needed), so it is not answered again.
        # Keyed on reply topic, correlation data and id: two clients may well use the same ids.
        self._answered: OrderedDict[_Key, None] = OrderedDict()
        self._errors: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=2048)
        self._accepting = False
        self._state = "new"
        self._started_at: float | None = None
        self._stop = threading.Event()
        self._status_thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> "IntentService":
        if self._state != "new":
            raise RuntimeError(f"the service is {self._state}; start() runs once")
        self._batcher.start()
        self._started_at = time.monotonic()
        self._accepting = True
        self._state = "online"
        self.transport.start(self.handle, on_connect=self.publish_status)
        self._status_thread = threading.Thread(target=self._status_loop, name="intent-status", daemon=True)
        self._status_thread.start()
        log.info("serving %s v%s on %s (%s transport)", self.model["name"], self.model["version"],
                 self.topics.request, self.transport.name)
        return self

    def drain(self, timeout: float | None = None) -> bool:
        """Stop taking requests, answer the ones held (up to ``timeout`` s), say "offline", disconnect.

        Returns True when every held request was answered in time. Idempotent.
        """
        if self._state in ("offline", "new"):
            self._state = "offline"
            return True
        self._accepting = False
        self._state = "draining"
        self.transport.stop_receiving()
        drained = self._batcher.close(self.config.drain_timeout_s if timeout is None else timeout)
        if not drained:
            log.warning("drain timed out with %d request(s) still queued", self._batcher.depth)
        self._stop.set()
        if self._status_thread is not None:
            self._status_thread.join(2.0)
        self._state = "offline"
        self.publish_status()
        self.transport.close()
        log.info("drained (%s); counters %s", "complete" if drained else "timed out", dict(self._counts))
        return drained

    close = drain

    def __enter__(self) -> "IntentService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.drain()

    @property
    def state(self) -> str:
        return self._state

    # -- requests (transport receive thread) ------------------------------------------------------------------
    def handle(self, message: Message) -> None:
        """Take one request: refuse it with an error reply, or queue it for the model."""
        self._count("received")
        topic = self.topics.response
        try:
            topic, forbidden = self._reply_topic(message)
            self._take(message, topic, forbidden)
        except Exception as exc:  # a bug must still cost one error reply, never the acknowledgement
            log.error("unexpected error taking a request", exc_info=True)
            self._send_error(message, topic, RequestError(
                ErrorCode.INTERNAL.value, f"the service failed on this request ({type(exc).__name__})"))

    def _take(self, message: Message, topic: str, forbidden: bool) -> None:
        request: Request | None = None
        try:
            if message.retain:
                self._count("retained_ignored")
                message.ack()
                return
            if not self._accepting:
                raise ShuttingDownError()
            request = decode_request(message.payload, max_text_chars=self.config.max_text_chars,
                                     max_texts=self.config.max_texts, max_payload_bytes=self.config.max_payload_bytes)
            if message.duplicate and self._seen(self._key(topic, message, request)):
                self._count("duplicates_skipped")
                message.ack()
                return
            max_age = self.config.max_request_age_s
            if max_age > 0 and request.ts is not None and time.time() - request.ts > max_age:
                self._count("expired")
                message.ack()
                return
            if forbidden:
                raise RequestError(ErrorCode.FORBIDDEN_TOPIC.value,
                                   f"response topic {str(message.response_topic)[:200]!r} is outside the topics this "
                                   f"service answers on ({', '.join(self._prefixes)})", request.id)
            self._batcher.submit(request.texts, partial(self._answer, message, request, topic))
        except ShuttingDownError as exc:
            if message.redeliverable:
                # Left unacknowledged: the broker hands it to the next session instead.
                self._count("deferred")
                return
            self._send_error(message, topic, exc, request)
        except RequestError as exc:
            self._send_error(message, topic, exc, request)

    @staticmethod
    def _key(topic: str, message: Message, request: Request) -> _Key:
        return (topic, message.correlation_data, str(request.id))

    def _seen(self, key: _Key) -> bool:
        with self._lock:
            return key in self._answered

    def _reply_topic(self, message: Message) -> tuple[str, bool]:
        requested = message.response_topic
        if requested is None or requested == "":
            return self.topics.response, False
        if reply_topic_allowed(requested, self._prefixes):
            return requested, False
        return self.topics.response, True

    # -- model calls and replies (worker threads) -------------------------------------------------------------
    def _predict(self, texts: list[str]) -> list[tuple[dict[str, str], Any]]:
        """Each prediction with the model that made it: after a model swap on another worker, a batch of the old
        model may still be answered, and its replies name the old model."""
        if self._predict_with_model is None:
            label, predictions = self.model, self._classifier.predict_batch(texts)
        else:
            model, predictions = self._predict_with_model(texts)
            label = {"name": str(model.name), "version": str(model.version)}
        return [(label, p) for p in predictions]

    def _answer(self, message: Message, request: Request, topic: str,
                answers: Sequence[tuple[dict[str, str], Any]] | None, error: BaseException | None) -> None:
        if error is not None or answers is None:
            self._send_error(message, topic, RequestError(
                ErrorCode.INTERNAL.value, f"the model failed on this request ({type(error).__name__})", request.id))
            return
        latency_ms = (time.perf_counter() - message.received_at) * 1000.0
        try:
            model = answers[0][0] if answers else self.model
            predictions = [p for _, p in answers]
            payload = encode_reply(request, predictions, model, latency_ms)
        except Exception as exc:  # e.g. a score JSON cannot carry: an error reply, never silence
            log.error("cannot encode the reply to %r", request.id, exc_info=True)
            self._send_error(message, topic, RequestError(
                ErrorCode.INTERNAL.value, f"the reply could not be encoded ({type(exc).__name__})", request.id))
            return
        if self._publish(topic, payload, message):
            with self._lock:
                self._answered[self._key(topic, message, request)] = None
                if len(self._answered) > _ANSWERED_KEPT:
                    self._answered.popitem(last=False)
                self._counts["replied"] += 1
                self._counts["texts"] += len(request.texts)
                self._latencies.append(latency_ms)
            if self.observer is not None:
                self._observe(self.observer.on_reply, request, predictions, latency_ms)

    def _send_error(self, message: Message, topic: str, exc: RequestError, request: Request | None = None) -> None:
        with self._lock:
            self._counts["errors"] += 1
            self._errors[exc.code] += 1
        request_id = exc.request_id if exc.request_id is not None or request is None else request.id
        self._publish(topic, encode_error(request_id, exc.code, exc.message), message)
        if self.observer is not None:
            self._observe(self.observer.on_error, exc.code)

    def _observe(self, hook: Any, *args: Any) -> None:
        try:
            hook(*args)
        except Exception:  # an observer bug must not cost a reply or kill the transport's receive thread
            self._count("observer_failures")
            log.error("service observer failed", exc_info=True)

    def _publish(self, topic: str, payload: bytes, message: Message) -> bool:
        try:
            self.transport.publish(topic, payload, correlation_data=message.correlation_data)
        except TransportError as exc:
            # Not acknowledged: over MQTT the broker redelivers the request to the next session.
            self._count("publish_failures")
            log.warning("could not publish the reply on %s: %s", topic, exc)
            return False
        message.ack()
        return True

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    # -- status -----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Counters and health, as published on the status topic."""
        with self._lock:
            counts = dict(self._counts)
            errors = dict(self._errors)
            latencies = sorted(self._latencies)
        counters = {"received": counts.get("received", 0), "replied": counts.get("replied", 0),
                    "texts": counts.get("texts", 0), "errors": counts.get("errors", 0), "errors_by_code": errors,
                    "publish_failures": counts.get("publish_failures", 0), "deferred": counts.get("deferred", 0),
                    "duplicates_skipped": counts.get("duplicates_skipped", 0),
                    "retained_ignored": counts.get("retained_ignored", 0), "expired": counts.get("expired", 0)}
        counters.update(self._batcher.stats())
        latency = {f"p{q}": round(_percentile(latencies, q), 3) for q in (50, 95, 99)} if latencies else {}
        uptime = time.monotonic() - self._started_at if self._started_at is not None else 0.0
        return {"state": self._state, "thing": self.config.thing, "model": dict(self.model), "backend": self.backend,
                "uptime_s": round(uptime, 3), "counters": counters, "latency_ms": latency, "rss_mb": _rss_mb()}

    def publish_status(self) -> None:
        s = self.status()
        payload = encode_status(s.pop("state"), thing=s.pop("thing"), model=s.pop("model"), backend=s.pop("backend"),
                                uptime_s=s.pop("uptime_s"), counters=s.pop("counters"), **s)
        try:
            self.transport.publish(self.topics.status, payload, retain=True)
        except TransportError as exc:
            self._count("publish_failures")
            log.warning("could not publish the status: %s", exc)

    def _status_loop(self) -> None:
        while not self._stop.wait(self.config.status_interval_s):
            self.publish_status()


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def offline_will(thing: str) -> bytes:
    """The last will: what the status topic says when the connection is lost without a goodbye."""
    return encode_status("offline", thing=thing, reason="connection lost")
