"""The Rust ``tokenizers`` WordPiece tokenizer, set up for dynamic padding.

The packaged MiniLM ``tokenizer.json`` pads every text to 128 tokens; fixed padding makes inference about
twice as slow for SNIPS-length utterances, so padding is turned off and each batch is padded to its
longest member instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import BundleError, InputError

__all__ = ["IntentTokenizer", "Encoding", "MODEL_INPUTS"]

#: Inputs a BERT-style encoder may declare, in the order the exporter writes them.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Characters per token kept before tokenizing: bounds the work a 100k-character text costs while
#: leaving far more text than ``max_length`` tokens can hold.
_CHARS_PER_TOKEN = 64


@dataclass(frozen=True)
class Encoding:
    """A padded batch: ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, shape [batch, seq])."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    @property
    def token_type_ids(self) -> np.ndarray:
        return np.zeros_like(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return self.attention_mask.sum(axis=1)

    def feeds(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The arrays for exactly the inputs ``names`` a model declares."""
        out = {}
        for name in names:
            if name not in MODEL_INPUTS:
                raise BundleError(f"the model declares input {name!r}; the tokenizer provides {list(MODEL_INPUTS)}")
            out[name] = getattr(self, name)
        return out


class IntentTokenizer:
    """Wraps :class:`tokenizers.Tokenizer`; ``encode(["play jazz"])`` returns an :class:`Encoding`."""

    def __init__(self, path: str | os.PathLike[str], max_length: int) -> None:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(os.fspath(path))
        except Exception as exc:  # the Rust error type is not importable; re-raise as ours
            raise BundleError(f"cannot read tokenizer {path}: {exc}") from None
        tok.no_padding()
        tok.enable_truncation(max_length)
        self._tok = tok
        self.max_length = max_length
        self.pad_id = tok.token_to_id("[PAD]") or 0
        self.unk_id = tok.token_to_id("[UNK]")
        self._max_chars = max_length * _CHARS_PER_TOKEN

    def encode(self, texts: Sequence[str]) -> Encoding:
        if isinstance(texts, str):
            raise InputError("encode() takes a list of texts, not a single string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is {type(text).__name__}, expected str")
        # One text at a time (~20 us each), never encode_batch: its worker pool saves ~60 us on a batch of 5, then
        # spins on the cores the model's threads need (in the service at 500 requests/s its two threads took 4.8%
        # of the CPU; the bench's batch-8 throughput alone loses ~3% without it).
        rows = [self._tok.encode(t[: self._max_chars], add_special_tokens=True).ids for t in texts]
        if len(rows) == 1:  # one text (the device's usual request): no padding, so no fill-and-copy loop
            ids = np.array(rows, dtype=np.int64)
            return Encoding(ids, np.ones_like(ids))
        width = max(map(len, rows), default=0)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for row, tokens in enumerate(rows):
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = 1
        return Encoding(ids, mask)

    def unknown_rate(self, encoding: Encoding) -> np.ndarray:
        """Share of real word-piece tokens (special tokens excluded) that are ``[UNK]``, per text."""
        if self.unk_id is None:
            return np.zeros(len(encoding.input_ids))
        unk = (encoding.input_ids == self.unk_id).sum(axis=1)
        words = np.maximum(encoding.lengths - 2, 1)
        return unk / words
