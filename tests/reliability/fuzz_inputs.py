"""Hostile request payloads for the fuzz run: each is (payload bytes, the id a reply must echo or None)."""

from __future__ import annotations

import json
import random
from typing import Iterator

WRONG_VALUES = [None, True, False, 0, -1, 1.5, 10**30, float("1e308"), "", " ", [], {}, ["x"], {"a": 1}, [[[]]],
                "\u0000", "\ud800", "x" * 300]


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
             "truncated_json", "random_json", "valid"]
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
        else:
            yield kind, _json({"id": rid, "text": rng.choice(["play jazz", "book a table", "éàü 東京 🎵"])}), rid
