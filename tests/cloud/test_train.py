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


def _small(tiny_base_model, **kw) -> TrainConfig:
    base = dict(base_model=str(tiny_base_model), epochs=1, batch_size=16, max_length=24, threads=1,
                learning_rate=3e-3, slot_loss_weight=0.0, min_steps=0, ema_decay=0.0)
    return TrainConfig(**{**base, **kw})


def test_the_schedule_has_a_floor_in_optimizer_steps(tiny_base_model, tmp_path):
    # Given 84 rows (6 steps an epoch) and 1 epoch asked for, but a floor of 20 steps
    rows, _ = _rows(tmp_path)
    result = train(rows, rows[:14], LABELS, tmp_path / "m", _small(tiny_base_model, min_steps=20), progress=False)
    # Then training ran 4 epochs (24 steps), the first whole number of epochs past the floor
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4] and result.history[-1]["steps"] == 24
    assert json.loads((tmp_path / "m" / "training_log.json").read_text())["epochs_planned"] == 4


def test_early_stopping_ends_training_after_patience_epochs_without_a_better_score(tiny_base_model, tmp_path):
    # Given a learning rate of 0: the validation score never improves after epoch 1
    rows, _ = _rows(tmp_path)
    config = _small(tiny_base_model, epochs=8, patience=2, learning_rate=0.0)
    result = train(rows, rows[:14], LABELS, tmp_path / "m", config, progress=False)
    # Then the later epochs tie, each tie keeps the later epoch, so it runs out of patience only if scores drop;
    # with equal scores it trains to the end and keeps the last epoch
    assert result.best_epoch == len(result.history)
    # and with a score that cannot improve (select on accuracy, stop after 1 epoch without a better one)
    worse = train(rows, rows[:14], LABELS, tmp_path / "w", _small(tiny_base_model, epochs=8, patience=1,
                                                                   learning_rate=5e-1), progress=False)
    assert len(worse.history) < 8 and len(worse.history) - worse.best_epoch == 1


@pytest.mark.parametrize("balance", ["weighted", "sampled"])
def test_class_balance_changes_what_the_model_learns_from_an_imbalanced_set(tiny_base_model, tmp_path, balance):
    # Given one intent with most of the rows
    rows, _ = _rows(tmp_path)
    heavy = [r for r in rows if r[1] == LABELS[0]] * 8 + rows
    plain = train(heavy, rows[:14], LABELS, tmp_path / "p", _small(tiny_base_model, max_steps=8), progress=False)
    balanced = train(heavy, rows[:14], LABELS, tmp_path / "b", _small(tiny_base_model, max_steps=8,
                                                                      class_balance=balance), progress=False)
    # Then the balanced run's weights differ from the plain one's (same seed, same steps)
    a, b = load_classifier(plain.model_dir).state_dict(), load_classifier(balanced.model_dir).state_dict()
    assert not np.allclose(a["classifier.weight"].numpy(), b["classifier.weight"].numpy())


def test_ema_saves_the_averaged_weights(tiny_base_model, tmp_path):
    rows, _ = _rows(tmp_path)
    raw = train(rows, rows[:14], LABELS, tmp_path / "raw", _small(tiny_base_model, epochs=2), progress=False)
    ema = train(rows, rows[:14], LABELS, tmp_path / "ema", _small(tiny_base_model, epochs=2, ema_decay=0.9),
                progress=False)
    a, b = load_classifier(raw.model_dir).state_dict(), load_classifier(ema.model_dir).state_dict()
    assert set(a) == set(b)
    w_raw, w_ema = a["classifier.weight"].numpy(), b["classifier.weight"].numpy()
    assert not np.allclose(w_raw, w_ema) and np.isfinite(w_ema).all()
