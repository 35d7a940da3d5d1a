"""The tokenizer wrapper: dynamic padding, truncation, int64 feeds, and awkward text."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import BundleError, InputError
from edge_runtime.tokenizer import IntentTokenizer


@pytest.fixture(scope="module")
def tok(tiny_bundle) -> IntentTokenizer:
    bundle, _ = tiny_bundle
    return IntentTokenizer(bundle.path_of("tokenizer.json"), max_length=16)


def test_batch_is_padded_to_its_longest_text_not_to_the_file_setting(tok):
    enc = tok.encode(["play jazz", "book a table for two people tonight"])
    assert enc.input_ids.dtype == np.int64 and enc.attention_mask.dtype == np.int64
    assert enc.input_ids.shape == (2, 9)  # [CLS] 7 words [SEP]; the file's padding to 128 is off
    assert enc.attention_mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert enc.input_ids[0, 4:].tolist() == [0] * 5


def test_long_text_is_truncated_to_max_length(tok):
    enc = tok.encode(["play " * 50_000])  # 250k characters
    assert enc.input_ids.shape == (1, 16)
    assert enc.input_ids[0, -1] == 3  # still ends with [SEP]


@pytest.mark.parametrize("text", ["", "   \t\n ", "play 🎵 jazz 🎷", "play\x00\x07 jazz\x1b[31m", "play 音楽 джаз موسيقى",
                                  "e\u0301te\u0301", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace")])
def test_awkward_texts_encode(tok, text):
    enc = tok.encode([text])
    assert enc.input_ids.shape[0] == 1 and 2 <= enc.input_ids.shape[1] <= 16
    assert enc.input_ids[0, 0] == 2


def test_unknown_words_are_counted(tok):
    enc = tok.encode(["play jazz", "play жжж"])
    assert tok.unknown_rate(enc).tolist() == [0.0, 0.5]


def test_feeds_hold_exactly_the_declared_inputs(tok):
    enc = tok.encode(["play jazz"])
    assert list(enc.feeds(["input_ids", "attention_mask"])) == ["input_ids", "attention_mask"]
    feeds = enc.feeds(["input_ids", "attention_mask", "token_type_ids"])
    assert feeds["token_type_ids"].tolist() == [[0, 0, 0, 0]]
    with pytest.raises(BundleError, match="pixel_values"):
        enc.feeds(["pixel_values"])


def test_bad_input_types(tok):
    with pytest.raises(InputError, match="list of texts"):
        tok.encode("play jazz")
    with pytest.raises(InputError, match="text 1 is int"):
        tok.encode(["ok", 3])


def test_unreadable_tokenizer_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{}")
    with pytest.raises(BundleError, match="cannot read tokenizer"):
        IntentTokenizer(path, 16)
