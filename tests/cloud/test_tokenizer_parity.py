"""The device tokenizer gives exactly the ids and masks of transformers' tokenizer for the same model."""

from __future__ import annotations

import pytest

from tests.conftest import SNIPS

pytest.importorskip("transformers")


@pytest.mark.skipif(not (SNIPS / "test" / "seq.in").is_file(), reason="SNIPS data not beside the checkout")
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_ids_and_masks_equal_transformers_on_snips(split):
    from transformers import AutoTokenizer

    from cloud.compile import base_model_dir
    from edge_runtime.tokenizer import IntentTokenizer

    texts = (SNIPS / split / "seq.in").read_text(encoding="utf-8").splitlines()
    ours = IntentTokenizer(base_model_dir() / "tokenizer.json", max_length=40)
    theirs = AutoTokenizer.from_pretrained(base_model_dir())
    for start in range(0, len(texts), 512):
        chunk = texts[start:start + 512]
        enc = ours.encode(chunk)
        ref = theirs(chunk, padding="longest", truncation=True, max_length=40, return_tensors="np")
        assert enc.input_ids.tolist() == ref["input_ids"].tolist()
        assert enc.attention_mask.tolist() == ref["attention_mask"].tolist()
        assert enc.token_type_ids.tolist() == ref["token_type_ids"].tolist()
