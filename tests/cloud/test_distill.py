"""The distill step: a shallower student of the fine-tuned teacher, initialised from its layers, taught by its logits."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cloud.errors import CloudError  # noqa: E402
from cloud.modeling import architecture, build_student, load_classifier, student_layers  # noqa: E402
from cloud.params import DistillParams  # noqa: E402
from cloud.steps import oos_layer_of  # noqa: E402
from cloud.train import TrainConfig, _kd_loss, predict_logits, tokenize, train  # noqa: E402
from tests.cloud.conftest import write_tiny_csv  # noqa: E402
from tests.conftest import LABELS  # noqa: E402


def _rows(tmp_path):
    with write_tiny_csv(tmp_path / "d.csv", per_label=30).open() as fh:
        return [(r["text"], r["intent"]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def teacher(tiny_base_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    rows = _rows(tmp)
    config = TrainConfig(base_model=str(tiny_base_model), epochs=15, batch_size=16, max_length=24, threads=1,
                         learning_rate=4e-3, min_steps=0, ema_decay=0.0)
    return train(rows, rows[:30], LABELS, tmp / "teacher", config, progress=False), rows, config


def test_teacher_layer_rules():
    assert student_layers("spread", 1, 6) == [6]
    assert student_layers("spread", 3, 6) == [2, 4, 6]
    assert student_layers("spread", 4, 6) == [2, 3, 4, 6]  # round half to even: 1.5 -> 2, 4.5 -> 4
    assert student_layers("bottom", 3, 6) == [1, 2, 3]
    assert student_layers("2,5", 2, 6) == [2, 5]
    for rule, n in [("1,7", 2, ), ("1", 2), ("a,b", 2), ("spread", 7)]:
        with pytest.raises(ValueError):
            student_layers(rule, n, 6)


def test_kd_loss_is_zero_for_the_teachers_own_logits_and_grows_with_the_gap():
    t = torch.tensor([[3.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    assert float(_kd_loss(t, t, 2.0)) == pytest.approx(0.0, abs=1e-7)
    near, far = t + torch.tensor([[0.0, 0.5, 0.0]]), t.flip(1)
    assert 0 < float(_kd_loss(near, t, 2.0)) < float(_kd_loss(far, t, 2.0))


def test_the_student_starts_as_the_teachers_chosen_layers(teacher):
    result, _, _ = teacher
    model = load_classifier(result.model_dir)
    student = build_student(model, [2])
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    t, s = model.state_dict(), student.state_dict()
    assert torch.equal(s["bert.encoder.layer.0.output.dense.weight"], t["bert.encoder.layer.1.output.dense.weight"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    assert architecture(student.config) == {"layers": 1, "hidden_size": 32, "attention_heads": 2,
                                            "intermediate_size": 64, "pooling": "cls", "distilled_from_layers": [2]}
    # deep copies: training the student leaves the teacher alone
    with torch.no_grad():
        student.bert.encoder.layer[0].output.dense.weight.add_(1.0)
    assert torch.equal(model.state_dict()["bert.encoder.layer.1.output.dense.weight"],
                       t["bert.encoder.layer.1.output.dense.weight"])


@pytest.mark.parametrize("hidden_weight", [0.0, 1.0])
def test_distilling_trains_a_one_layer_student_that_follows_the_teacher(teacher, tmp_path, hidden_weight):
    # Given a fine-tuned 2-layer teacher
    result, rows, config = teacher
    # When a 1-layer student is distilled from it (from its top layer) on the teacher's logits alone
    distill = DistillParams(layers=1, teacher_layers="spread", epochs=6, learning_rate=4e-3, kd_weight=1.0,
                            hidden_weight=hidden_weight)
    student = train(rows, rows[:30], LABELS, tmp_path / "student", config, progress=False,
                    teacher=result.model_dir, distill=distill)
    # Then it is a 1-layer classifier of the same labels that answers like its teacher (it never saw a label)
    model = load_classifier(student.model_dir)
    assert model.config.num_hidden_layers == 1 and model.config.distilled_from_layers == [2]
    ids = tokenize([t for t, _ in rows], student.model_dir / "tokenizer.json", 24)
    agree = (predict_logits(model, ids).argmax(1) == predict_logits(load_classifier(result.model_dir), ids).argmax(1))
    assert agree.mean() >= 0.9
    log = json.loads((student.model_dir / "training_log.json").read_text())
    assert log["teacher_layers"] == [2] and log["distill"]["hidden_weight"] == hidden_weight
    assert log["config"]["learning_rate"] == 4e-3 and len(log["history"]) == 6
    assert all(np.isfinite(h["train_loss"]) for h in log["history"])
    # and its word embeddings are the teacher's (distill.freeze_embeddings), its layers are not
    t_state = load_classifier(result.model_dir).state_dict()
    s_state = model.state_dict()
    key = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(s_state[key], t_state[key])
    assert not torch.equal(s_state["bert.encoder.layer.0.output.dense.weight"],
                           t_state["bert.encoder.layer.1.output.dense.weight"])
    # and the out-of-scope vector's layer maps to the student's
    assert oos_layer_of(student.model_dir, 3) == 1 and oos_layer_of(result.model_dir, 1) == 1


def test_a_teacher_of_other_labels_is_refused(teacher, tmp_path):
    result, rows, config = teacher
    with pytest.raises(CloudError, match="labels"):
        train(rows, rows[:30], list(reversed(LABELS)), tmp_path / "s", config, progress=False,
              teacher=result.model_dir, distill=DistillParams(layers=1))


def test_several_teachers_teach_their_mean_logits(teacher, tmp_path):
    # Given two teachers (the fine-tuned one, and a second one trained with another seed)
    result, rows, config = teacher
    second = train(rows, rows[:30], LABELS, tmp_path / "t2", TrainConfig(**{**config.__dict__, "seed": 7}),
                   progress=False)
    ids = tokenize([t for t, _ in rows], result.model_dir / "tokenizer.json", 24)
    mean = (predict_logits(load_classifier(result.model_dir), ids)
            + predict_logits(load_classifier(second.model_dir), ids)) / 2
    # When a student learns from both on their logits alone
    student = train(rows, rows[:30], LABELS, tmp_path / "s", config, progress=False,
                    teacher=[result.model_dir, second.model_dir],
                    distill=DistillParams(layers=1, epochs=6, learning_rate=4e-3, kd_weight=1.0))
    # Then it starts from the first teacher and answers like the teachers' mean
    log = json.loads((student.model_dir / "training_log.json").read_text())
    assert log["teachers"] == [str(result.model_dir), str(second.model_dir)]
    answers = predict_logits(load_classifier(student.model_dir), ids).argmax(1)
    assert (answers == mean.argmax(1)).mean() >= 0.9
