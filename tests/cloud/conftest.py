"""Fixtures of the training side: a tiny BERT base model, a small CSV data set and params that fit CI."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from tests.conftest import LABELS, REPO, write_tiny_tokenizer

TEMPLATES = {
    "AddToPlaylist": ["add song {n} to my playlist", "add the album {n} to my jazz playlist", "put track {n} on my playlist"],
    "BookRestaurant": ["book a table for {n} people", "book a restaurant for two at {n}", "reserve table {n} tonight"],
    "GetWeather": ["will it rain in city {n}", "what is the weather in {n}", "snow tomorrow in new york {n}"],
    "PlayMusic": ["play some music by artist {n}", "play jazz number {n}", "play the song {n} please"],
    "RateBook": ["rate this book {n} stars", "rate the novel {n} five stars", "give book {n} three stars"],
    "SearchCreativeWork": ["find the movie called {n}", "search for the album {n}", "find the film {n}"],
    "SearchScreeningEvent": ["show the movie schedule at cinema {n}", "what movies are at cinema {n}", "film schedule {n} tonight"],
}


def write_tiny_csv(path: Path, per_label: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for label in LABELS:
        for i in range(per_label):
            template = TEMPLATES[label][i % len(TEMPLATES[label])]
            rows.append((template.format(n=f"{rng.randrange(10**6)}x{i}"), label))
    rng.shuffle(rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "intent"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with the tiny WordPiece tokenizer, saved like the packaged MiniLM."""
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny-bert")
    tok = write_tiny_tokenizer(root / "tokenizer.json")
    vocab = json.loads(tok.read_text())["model"]["vocab"]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return write_tiny_csv(tmp_path_factory.mktemp("data") / "intents.csv")


def make_params(tmp_path: Path, base_model: Path, **overrides) -> Path:
    """pipelines/params.json with CI-sized training; ``overrides`` set "section.key" values."""
    params = json.loads((REPO / "pipelines" / "params.json").read_text())
    params["train"].update(base_model=str(base_model), epochs=5, batch_size=16, learning_rate=4e-3, max_length=24,
                           warmup_ratio=0.1, min_steps=0, ema_decay=0.0)
    params["evaluate"]["bootstrap_samples"] = 50
    params["gate"]["min_macro_f1"] = 0.5
    params["gate"]["max_int8_drop"] = 0.2
    params["compile"]["quantization"]["calibration_samples"] = 40
    params["compile"]["min_agreement"] = 0.8
    params["compile"]["oos_layer"] = 1  # the tiny BERT has 2 layers
    params["distill"].update(layers=1, epochs=5, learning_rate=4e-3)  # a 1-layer student of the 2-layer teacher
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        params[section][key] = value
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    return path
