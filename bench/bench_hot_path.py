"""The device hot path, piece by piece: tokenize, infer, end to end (batch 1 and 32)."""

from __future__ import annotations

import itertools

from edge_runtime.bench import UTTERANCES

UTTERANCE = UTTERANCES[0]  # 12 words


def test_tokenize_one(benchmark, classifier):
    enc = benchmark(classifier.tokenizer.encode, [UTTERANCE])
    assert enc.input_ids.shape[0] == 1


def test_infer_one(benchmark, classifier):
    feeds = classifier.tokenizer.encode([UTTERANCE]).feeds(classifier.backend.input_names)
    logits = benchmark(classifier.backend.run, feeds)
    assert logits.shape == (1, len(classifier.labels))


def test_predict_one(benchmark, classifier):
    texts = itertools.cycle(UTTERANCES)
    pred = benchmark(lambda: classifier.predict(next(texts)))
    assert pred.intent in classifier.labels


def test_predict_batch32(benchmark, classifier):
    batch = list(UTTERANCES[:32])
    preds = benchmark(classifier.predict_batch, batch)
    assert len(preds) == 32
