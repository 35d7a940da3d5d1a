"""The train step's auxiliary slot loss and the head helper it uses."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cloud.errors import CloudError  # noqa: E402
from cloud.modeling import build_classifier, load_classifier, logits_and_states  # noqa: E402
from cloud.train import TrainConfig, train  # noqa: E402
from tests.cloud.conftest import write_tiny_csv  # noqa: E402
from tests.conftest import LABELS  # noqa: E402


def _rows(tmp_path):
    with write_tiny_csv(tmp_path / "d.csv", per_label=12).open() as fh:
        rows = [(r["text"], r["intent"]) for r in csv.DictReader(fh)]
    # a tag per word: numbers (the {n} of the templates) are the slot
    tags = [["B-number" if any(c.isdigit() for c in w) else "O" for w in text.split()] for text, _ in rows]
    return rows, tags


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_logits_and_states_give_the_models_own_logits(tiny_base_model, pooling):
    torch.manual_seed(0)
    model = build_classifier(tiny_base_model, LABELS, pooling).eval()
    x = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
    m = (x > 0).long()
    with torch.no_grad():
        logits, states = logits_and_states(model, x, m, torch.zeros_like(x))
        expected = model(input_ids=x, attention_mask=m, token_type_ids=torch.zeros_like(x)).logits
    assert torch.equal(logits, expected) and states.shape == (2, 5, model.config.hidden_size)


def test_the_slot_loss_shapes_the_encoder_and_leaves_a_plain_classifier(tiny_base_model, tmp_path):
    # Given training rows with one slot tag per word
    rows, tags = _rows(tmp_path)
    config = TrainConfig(base_model=str(tiny_base_model), epochs=1, batch_size=16, max_length=24, threads=1,
                         max_steps=6, learning_rate=1e-3, slot_loss_weight=0.0)
    # When trained with and without the auxiliary slot loss (same seed, same batches)
    with_slots = train(rows, rows[:20], LABELS, tmp_path / "slots", TrainConfig(**{**config.__dict__,
                                                                                    "slot_loss_weight": 1.0}),
                       progress=False, slots=tags)
    plain = train(rows, rows[:20], LABELS, tmp_path / "plain", config, progress=False, slots=tags)
    # Then the slot loss changed the encoder, the log names the tags, and the checkpoint is a plain classifier
    a = load_classifier(with_slots.model_dir).state_dict()
    b = load_classifier(plain.model_dir).state_dict()
    assert set(a) == set(b), "no slot head in the saved checkpoint"
    assert not np.allclose(a["bert.encoder.layer.0.output.dense.weight"].numpy(),
                           b["bert.encoder.layer.0.output.dense.weight"].numpy())
    log = json.loads((tmp_path / "slots" / "training_log.json").read_text())
    assert log["slot_tags"] == ["B-number", "O"] and log["slot_rows"] == len(rows)
    assert all(np.isfinite(v.numpy()).all() for v in a.values())
    assert json.loads((tmp_path / "plain" / "training_log.json").read_text())["slot_tags"] == []


def test_slot_rows_must_pair_with_training_rows(tiny_base_model, tmp_path):
    rows, tags = _rows(tmp_path)
    config = TrainConfig(base_model=str(tiny_base_model), epochs=1, max_steps=1, slot_loss_weight=1.0, threads=1)
    with pytest.raises(CloudError, match="slot tag rows for"):
        train(rows, rows[:5], LABELS, tmp_path / "m", config, progress=False, slots=tags[:-1])
