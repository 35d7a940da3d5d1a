"""Hostile request payloads for the fuzz run: each is (payload bytes, the id a reply must echo or None)."""

from __future__ import annotations

import json
import random
from typing import Iterator

WRONG_VALUES = [None, True, False, 0, -1, 1.5, 10**30, float("1e308"), "", " ", [], {}, ["x"], {"a": 1}, [[[]]],
                "\u0000", "\ud800", "x" * 300]
#: Numbers JSON can write and Python cannot take as they are: an integer of more than 4300 digits makes
#: ``json.loads`` raise ValueError (sys.get_int_max_str_digits), a float beyond 1.8e308 parses to inf.
HUGE_INTS = [b"1" * 4301, b"-" + b"9" * 5000, b"1" * 20000]
OVERFLOW_FLOATS = [b"1e400", b"-1e400", b"1" + b"0" * 400 + b".5", b"1e-400"]
#: Every field a request may carry; a hostile value is put in one of them.
FIELDS = ["id", "text", "texts", "ts", "extra"]


def _with_field(rid: str, field: str, raw: bytes) -> bytes:
    """A request whose ``field`` holds the raw JSON ``raw`` (which ``json.dumps`` may not be able to write)."""
    base = {"id": b'"' + rid.encode() + b'"', "text": b'"play jazz"'}
    if field == "texts":
        del base["text"]
        raw = b'["play", ' + raw + b"]"
    base[field if field != "extra" else "unknown"] = raw
    return b"{" + b",".join(b'"' + k.encode() + b'":' + v for k, v in base.items()) + b"}"


def _json(obj: object) -> bytes:
    text = json.dumps(obj, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate travels as a JSON escape ("\\ud800"), as a real client sends it
        return json.dumps(obj).encode("ascii")


def fuzz_inputs(count: int, seed: int = 0) -> Iterator[tuple[str, bytes, str | None]]:
    """``count`` inputs: (kind, payload, expected reply id or None when the id is not usable)."""
    rng = random.Random(seed)
    kinds = ["random_bytes", "invalid_utf8", "deep_json", "wrong_types", "big_payload", "many_texts", "control_chars",
             "truncated_json", "random_json", "huge_int", "overflow_float", "deep_field", "valid"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        rid = f"fz-{i}"
        if kind == "random_bytes":
            yield kind, rng.randbytes(rng.randrange(0, 400)), None
        elif kind == "invalid_utf8":
            body = _json({"id": rid, "text": "play jazz"})
            cut = rng.randrange(len(body))
            yield kind, body[:cut] + bytes([rng.choice([0x80, 0xC0, 0xFF, 0xFE, 0xED])]) + body[cut:], None
        elif kind == "deep_json":
            depth = rng.choice([100, 1000, 5000, 20000])
            if rng.random() < 0.5:
                yield kind, b"[" * depth + b"]" * depth, None
            else:
                yield kind, b'{"id":"' + rid.encode() + b'","text":' + b"[" * depth + b"]" * depth + b"}", None
        elif kind == "wrong_types":
            field = rng.choice(["id", "text", "texts", "both", "extra"])
            bad = rng.choice(WRONG_VALUES)
            if field == "id":
                yield kind, _json({"id": bad, "text": "play jazz"}), None
            elif field == "text":
                yield kind, _json({"id": rid, "text": bad}), rid
            elif field == "texts":
                yield kind, _json({"id": rid, "texts": rng.choice([bad, [bad], ["ok", bad]])}), rid
            elif field == "both":
                yield kind, _json({"id": rid, "text": "a", "texts": ["b"]}), rid
            else:
                yield kind, _json({"id": rid}), rid
        elif kind == "big_payload":
            size = rng.choice([65537, 300_000, 1 << 20])
            yield kind, _json({"id": rid, "text": "a" * size}), None
        elif kind == "many_texts":
            n = rng.choice([33, 1000, 10_000])
            yield kind, _json({"id": rid, "texts": ["play"] * n}), rid
        elif kind == "control_chars":
            chars = "".join(chr(rng.choice([0, 1, 7, 8, 9, 10, 13, 27, 127, 0x200B, 0xFEFF, 0x202E, 0x10FFFF]))
                            for _ in range(rng.randrange(1, 40)))
            # A text of control characters only is "empty" after strip() or is classified; both answer once.
            yield kind, _json({"id": rid, "text": rng.choice([chars, "play " + chars + " jazz"])}), rid
        elif kind == "truncated_json":
            body = _json({"id": rid, "texts": ["play jazz", "book a table"]})
            yield kind, body[: rng.randrange(1, len(body))], None
        elif kind == "random_json":
            obj = rng.choice([[1, 2], "s", 3, None, {"id": rid, "text": "x" * rng.randrange(0, 600)},
                              {"id": rid, "text": "play", "unknown": {"deep": [1] * 50}}])
            yield kind, _json(obj), rid if isinstance(obj, dict) else None
        elif kind == "huge_int":
            # not JSON Python can read: bad_json, and the id cannot be read either
            yield kind, _with_field(rid, rng.choice(FIELDS), rng.choice(HUGE_INTS)), None
        elif kind == "overflow_float":
            field = rng.choice(FIELDS)
            yield kind, _with_field(rid, field, rng.choice(OVERFLOW_FLOATS)), None if field == "id" else rid
        elif kind == "deep_field":
            field, depth = rng.choice(FIELDS), rng.choice([20, 500, 5000, 40000])
            value = b"[" * depth + b"]" * depth if rng.random() < 0.5 else b'{"a":' * depth + b"1" + b"}" * depth
            # beyond the interpreter's recursion limit the payload is bad_json, its id unread
            yield kind, _with_field(rid, field, value), None if field == "id" or depth > 100 else rid
        else:
            yield kind, _json({"id": rid, "text": rng.choice(["play jazz", "book a table", "éàü 東京 🎵"])}), rid
