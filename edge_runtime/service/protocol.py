"""The wire protocol of contract 4: topic names, request decoding and validation, reply and error encoding.

This module is the one place for the topic strings and the JSON shapes; transports move bytes, the service
moves :class:`Request` objects.

Topics (AWS IoT topic design: ``cmd/`` request-response, ``dt/`` data), ``<thing>`` being the thing name::

    cmd/intents/<thing>/request     requests in
    cmd/intents/<thing>/response    replies and error replies out (or the request's MQTT 5 response topic,
                                    when it lies under an allowed prefix)
    dt/intents/<thing>/telemetry    telemetry out
    dt/intents/<thing>/status       status and health out (retained); the last will says "offline"

Request: ``{"id": "r1", "text": "play jazz"}`` or ``{"id": "r2", "texts": ["play jazz", "rate this book"]}``;
optionally ``"ts"``, when the request was made (seconds since the epoch): with ``max_request_age_s`` set, an older
request is not answered (it is a command nobody waits for any more).
Reply: ``{"id", "intent", "confidence", "top", "model": {"name", "version"}, "latency_ms"}``, or
``{"id", "results": [{"intent", "confidence", "top"}, ...], "model", "latency_ms"}`` for ``texts``.
Error: ``{"id": <id or null>, "error": {"code": "<ErrorCode>", "message": "..."}}``.

Example::

    req = decode_request(b'{"id": "r1", "text": "play jazz"}', max_text_chars=512, max_texts=32,
                         max_payload_bytes=65536)
    req.texts           # ('play jazz',)
"""

from __future__ import annotations

import enum
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .errors import RequestError

__all__ = [
    "REQUEST_TOPIC",
    "RESPONSE_TOPIC",
    "TELEMETRY_TOPIC",
    "STATUS_TOPIC",
    "MAX_ID_CHARS",
    "ErrorCode",
    "Topics",
    "Request",
    "decode_request",
    "encode_reply",
    "encode_error",
    "encode_status",
    "reply_topic_allowed",
    "valid_thing_name",
    "check_text",
]

#: Topic templates; ``{thing}`` is the thing name (``{iot:thingName}`` in Greengrass recipes).
REQUEST_TOPIC = "cmd/intents/{thing}/request"
RESPONSE_TOPIC = "cmd/intents/{thing}/response"
TELEMETRY_TOPIC = "dt/intents/{thing}/telemetry"
STATUS_TOPIC = "dt/intents/{thing}/status"
#: Longest request id echoed back; longer ids are refused (``bad_request``).
MAX_ID_CHARS = 256


class ErrorCode(str, enum.Enum):
    """The ``error.code`` of an error reply."""

    BAD_JSON = "bad_json"                    # payload is not JSON
    BAD_ENCODING = "bad_encoding"            # payload (or a text) is not valid UTF-8
    BAD_REQUEST = "bad_request"              # not an object, missing/invalid id, wrong types, text and texts both/neither
    EMPTY_TEXT = "empty_text"                # a text is empty or only whitespace
    TEXT_TOO_LONG = "text_too_long"          # a text has more than max_text_chars characters
    TOO_MANY_TEXTS = "too_many_texts"        # texts has more than max_texts items
    PAYLOAD_TOO_LARGE = "payload_too_large"  # payload has more than max_payload_bytes bytes
    FORBIDDEN_TOPIC = "forbidden_topic"      # the MQTT 5 response topic lies outside the allowed prefixes
    OVERLOADED = "overloaded"                # the request queue is full
    SHUTTING_DOWN = "shutting_down"          # the service is draining
    INTERNAL = "internal"                    # the model failed on this request (the service stays up)

    @classmethod
    def parse(cls, value: "str | ErrorCode") -> "ErrorCode":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown error code {value!r}; known: {[c.value for c in cls]}") from None


def valid_thing_name(name: str) -> bool:
    """AWS IoT thing names: 1-128 of letters, digits, ``:``, ``_``, ``-`` (so never an MQTT wildcard or ``/``)."""
    return (isinstance(name, str) and 0 < len(name) <= 128
            and all(c.isascii() and (c.isalnum() or c in ":_-") for c in name))


@dataclass(frozen=True)
class Topics:
    """The topics of one thing. ``Topics.for_thing("kitchen-pi")``."""

    thing: str
    request: str
    response: str
    telemetry: str
    status: str

    @classmethod
    def for_thing(cls, thing: str) -> "Topics":
        """Topics with ``thing`` filled in; ``for_thing("{iot:thingName}")`` gives the recipe's resources."""
        return cls(thing=thing, request=REQUEST_TOPIC.format(thing=thing), response=RESPONSE_TOPIC.format(thing=thing),
                   telemetry=TELEMETRY_TOPIC.format(thing=thing), status=STATUS_TOPIC.format(thing=thing))


def reply_topic_allowed(topic: str, prefixes: Iterable[str]) -> bool:
    """True when ``topic`` equals an allowed prefix or lies below it (``prefix/...``).

    A request must not make the service publish outside its own topics: wildcards, ``$`` system topics,
    empty levels and anything outside ``prefixes`` are refused.
    """
    if not topic or len(topic.encode("utf-8", "surrogatepass")) > 1024:
        return False
    if topic.startswith("$") or "+" in topic or "#" in topic or "\x00" in topic or "//" in topic or topic.endswith("/"):
        return False
    return any(topic == p or topic.startswith(p.rstrip("/") + "/") for p in prefixes if p)


@dataclass(frozen=True)
class Request:
    """A decoded, validated request. ``batch`` is True for the ``texts`` form (reply has ``results``)."""

    id: str
    texts: tuple[str, ...]
    batch: bool = False
    #: ``ts`` of the request (seconds since the epoch), when it has one.
    ts: float | None = None


def _error(code: ErrorCode, message: str, request_id: Any = None) -> RequestError:
    return RequestError(code.value, message, request_id)


def _echo_id(value: Any) -> str | int | None:
    """The id to echo in an error reply: a usable string or an int, else null."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10**18 else None
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and _utf8_ok(value):
        return value
    return None


def _utf8_ok(text: str) -> bool:
    # JSON escapes can carry lone surrogates ("\ud800"), which are not UTF-8 and which the Rust tokenizer refuses.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_request(payload: bytes, *, max_text_chars: int, max_texts: int, max_payload_bytes: int) -> Request:
    """Parse and validate one request; raise :class:`RequestError` with the wire error code otherwise.

    The checks run cheapest first, so an oversized payload is refused before it is decoded.
    """
    if len(payload) > max_payload_bytes:
        raise _error(ErrorCode.PAYLOAD_TOO_LARGE, f"payload has {len(payload)} bytes; the limit is {max_payload_bytes}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(ErrorCode.BAD_ENCODING, f"payload is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _error(ErrorCode.BAD_JSON, f"payload is not JSON (line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise _error(ErrorCode.BAD_JSON, "payload is not JSON (nested too deeply)") from None
    except ValueError as exc:  # an integer of more than sys.get_int_max_str_digits() (4300) digits, and the like
        raise _error(ErrorCode.BAD_JSON, f"payload is not usable JSON ({str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise _error(ErrorCode.BAD_REQUEST, f"request must be a JSON object, got {type(data).__name__}")
    raw_id = data.get("id")
    echo = _echo_id(raw_id)
    if "id" not in data or raw_id is None:
        raise _error(ErrorCode.BAD_REQUEST, "request has no 'id'")
    if not isinstance(raw_id, str) or echo is None:
        raise _error(ErrorCode.BAD_REQUEST, f"'id' must be a non-empty UTF-8 string of at most {MAX_ID_CHARS} characters",
                     echo)
    ts = data.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts)
                           or abs(ts) > 1e11):
        raise _error(ErrorCode.BAD_REQUEST, "'ts' must be a number: when the request was made, in seconds since the "
                     "epoch", raw_id)
    has_text, has_texts = "text" in data, "texts" in data
    if has_text == has_texts:
        raise _error(ErrorCode.BAD_REQUEST, "request needs exactly one of 'text' (a string) or 'texts' (a list of strings)",
                     raw_id)
    if has_text:
        check_text(data["text"], max_text_chars, request_id=raw_id)
        return Request(raw_id, (data["text"],), batch=False, ts=None if ts is None else float(ts))
    texts = data["texts"]
    if not isinstance(texts, list):
        raise _error(ErrorCode.BAD_REQUEST, f"'texts' must be a list of strings, got {type(texts).__name__}", raw_id)
    if not texts:
        raise _error(ErrorCode.EMPTY_TEXT, "'texts' is empty", raw_id)
    if len(texts) > max_texts:
        raise _error(ErrorCode.TOO_MANY_TEXTS, f"'texts' has {len(texts)} items; the limit is {max_texts}", raw_id)
    for i, item in enumerate(texts):
        check_text(item, max_text_chars, index=i, request_id=raw_id)
    return Request(raw_id, tuple(texts), batch=True, ts=None if ts is None else float(ts))


def check_text(value: Any, max_chars: int, *, index: int | None = None, request_id: str | None = None) -> None:
    """Raise :class:`RequestError` (``bad_request``, ``empty_text``, ``text_too_long``, ``bad_encoding``) unless
    ``value`` is a text the service classifies; ``predict`` applies the same rule."""
    name = "'text'" if index is None else f"texts[{index}]"
    if not isinstance(value, str):
        raise _error(ErrorCode.BAD_REQUEST, f"{name} must be a string, got {type(value).__name__}", request_id)
    if not value.strip():
        raise _error(ErrorCode.EMPTY_TEXT, f"{name} is empty", request_id)
    if len(value) > max_chars:
        raise _error(ErrorCode.TEXT_TOO_LONG, f"{name} has {len(value)} characters; the limit is {max_chars}", request_id)
    if not _utf8_ok(value):
        raise _error(ErrorCode.BAD_ENCODING, f"{name} is not valid UTF-8 (lone surrogate escape)", request_id)


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode_reply(request: Request, predictions: Sequence[Any], model: Mapping[str, str], latency_ms: float) -> bytes:
    """The reply to ``request``; ``predictions`` are :class:`~edge_runtime.classifier.Prediction` (``to_dict()``)."""
    if len(predictions) != len(request.texts):
        raise ValueError(f"{len(predictions)} predictions for {len(request.texts)} texts")
    body: dict[str, Any] = {"id": request.id}
    if request.batch:
        body["results"] = [p.to_dict() for p in predictions]
    else:
        body.update(predictions[0].to_dict())
    body["model"] = {"name": model["name"], "version": model["version"]}
    body["latency_ms"] = round(latency_ms, 3)
    return _dumps(body)


def encode_error(request_id: str | int | None, code: "ErrorCode | str", message: str) -> bytes:
    """An error reply; ``request_id`` is None when the request's id could not be read."""
    return _dumps({"id": _echo_id(request_id), "error": {"code": ErrorCode.parse(code).value, "message": message}})


def encode_status(state: str, *, thing: str, model: Mapping[str, str] | None = None, backend: str | None = None,
                  uptime_s: float | None = None, counters: Mapping[str, Any] | None = None,
                  **extra: Any) -> bytes:
    """The status message (``online``, ``draining``, ``offline``); also the last will, with only state and thing."""
    body: dict[str, Any] = {"state": state, "thing": thing, "ts": round(time.time(), 3)}
    if model is not None:
        body["model"] = {"name": model["name"], "version": model["version"]}
    if backend is not None:
        body["backend"] = backend
    if uptime_s is not None:
        body["uptime_s"] = round(uptime_s, 3)
    if counters is not None:
        body["counters"] = dict(counters)
    body.update(extra)
    return _dumps(body)
