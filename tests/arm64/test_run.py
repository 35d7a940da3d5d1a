"""The runner's pure parts (subset, batching, options) and the shared predict path on the tiny bundle (x86)."""

from __future__ import annotations

import numpy as np

from bench.arm64 import guest
from bench.arm64.run import _max_texts, plan_batches, select
from tests.conftest import LABELS, reference_logits


def test_subset_is_spread_over_every_intent():
    labels = [LABELS[i % 7] for i in range(700)]
    chosen = select(700, labels, 140)
    assert len(chosen) == 140 and chosen == sorted(set(chosen))
    assert {labels[i] for i in chosen} == set(LABELS)
    assert select(700, labels, None) == list(range(700)) == select(700, None, 1000)


def test_batches_hold_every_text_once_grouped_by_length():
    texts = ["a b c d e", "a", "a b", "a b c", "x"] * 20
    batches = plan_batches(texts, range(len(texts)), size=32)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(100)) and all(len(b) <= 32 for b in batches)
    lengths = [len(texts[i].split()) for i in flat]
    assert lengths == sorted(lengths)


def test_max_texts_options():
    cpus = ["neoverse-n1", "cortex-a72"]
    assert _max_texts([], cpus) == {"neoverse-n1": 234, "cortex-a72": 100}
    assert _max_texts(["all"], cpus) == {"neoverse-n1": None, "cortex-a72": None}
    assert _max_texts(["cortex-a72=70", "neoverse-n1=350"], cpus) == {"neoverse-n1": 350, "cortex-a72": 70}


def test_predict_returns_the_public_intents_and_the_backend_logits(tiny_bundle):
    # Given the tiny bundle and two batches over four texts (one text left out)
    bundle, weights = tiny_bundle
    texts = ["play some jazz", "book a table for two tonight", "will it rain", "not run"]
    # When the shared predict path runs them
    out = guest.predict(str(bundle.root), texts, [[0, 2], [1]])
    # Then intents come from predict_batch and logits equal the reference computation, per text
    assert out["intents"][3] is None and out["logits"][3] is None
    from edge_runtime import IntentClassifier

    with IntentClassifier.from_bundle(bundle.root, backend="onnxruntime", threads=1) as clf:
        assert out["intents"][:3] == [p.intent for p in clf.predict_batch(texts[:3])]
        enc = clf.tokenizer.encode(texts[:3])
    want = reference_logits(weights, enc.input_ids, enc.attention_mask)
    np.testing.assert_allclose(np.array(out["logits"][:3]), want, rtol=1e-5, atol=1e-5)
    assert out["labels"] == list(LABELS)
