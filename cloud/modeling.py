"""Classification heads on the MiniLM encoder.

``cls``: transformers' ``BertForSequenceClassification`` (pooler on the [CLS] token).
``mean``: mean of the token states under the attention mask, then dropout and a linear layer. all-MiniLM-L6-v2
was trained as a sentence encoder with mean pooling, so its mean-pooled states are the representation it
learned; its [CLS] pooler is a leftover of pre-training.

Both save and load with ``save_pretrained`` / :func:`load_classifier`; the head kind is in ``config.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

__all__ = ["POOLINGS", "architecture", "build_classifier", "build_student", "load_classifier", "logits_and_states",
           "student_layers", "with_features"]

POOLINGS = ("cls", "mean")


def _mean_pool_class() -> type:
    import torch
    from transformers import BertModel, BertPreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutput

    class BertMeanPoolForSequenceClassification(BertPreTrainedModel):
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.num_labels = config.num_labels
            self.bert = BertModel(config, add_pooling_layer=False)
            self.dropout = torch.nn.Dropout(config.classifier_dropout or config.hidden_dropout_prob)
            self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
            self.post_init()

        def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                    **kwargs: Any) -> Any:
            logits, _ = logits_and_states(self, input_ids, attention_mask, token_type_ids)
            return SequenceClassifierOutput(logits=logits)

    return BertMeanPoolForSequenceClassification


def logits_and_states(model: Any, input_ids: Any, attention_mask: Any, token_type_ids: Any,
                      *, hidden: bool = False) -> tuple[Any, ...]:
    """The intent logits and the encoder's token states of either head kind, from one encoder pass.

    ``logits`` equals ``model(...).logits``; the token states feed the auxiliary slot head during training.
    ``hidden``: a third item, every layer's hidden states (embeddings first), for distillation.
    """
    out = model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                     output_hidden_states=hidden)
    states = out.last_hidden_state
    if getattr(model.config, "pooling", "cls") == "mean":
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    else:
        pooled = out.pooler_output
    logits = model.classifier(model.dropout(pooled))
    return (logits, states, out.hidden_states) if hidden else (logits, states)


def with_features(model: Any, layer: int) -> Any:
    """A module whose one output is ``[logits | v]``, ``v`` the L2-normalized mean of encoder layer ``layer``'s hidden
    states under the attention mask: the sentence vector the out-of-scope detector reads (:mod:`edge_runtime.oos`).

    An early layer keeps more of what fine-tuning on the in-scope intents discards (bench/oos_compare.py).
    """
    import torch

    layers = model.config.num_hidden_layers
    if not 0 < layer <= layers:
        raise ValueError(f"the out-of-scope vector's layer must be 1..{layers}, got {layer}")

    class LogitsAndFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                  output_hidden_states=True)
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            if getattr(self.model.config, "pooling", "cls") == "mean":
                pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            else:
                pooled = out.pooler_output
            logits = self.model.classifier(self.model.dropout(pooled))
            mean = (out.hidden_states[layer] * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            vector = mean / mean.norm(dim=1, keepdim=True).clamp(min=1e-12)
            return torch.cat([logits, vector], dim=1)

    return LogitsAndFeatures().eval()


def build_classifier(base: Path, labels: Sequence[str], pooling: str = "cls") -> Any:
    """A classifier with a fresh head on the encoder weights in ``base``."""
    from transformers import AutoModelForSequenceClassification

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    # local_files_only: ``base`` is always a directory (the packaged checkpoint or a path), never a hub download
    kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
              "label2id": {label: i for i, label in enumerate(labels)}, "local_files_only": True}
    if pooling == "cls":
        return AutoModelForSequenceClassification.from_pretrained(base, **kwargs)  # nosec B615 # local_files_only
    model = _mean_pool_class().from_pretrained(base, **kwargs)
    model.config.pooling = "mean"
    return model


def load_classifier(model_dir: Path, *, eager: bool = False) -> Any:
    """Load a fine-tuned classifier of either kind; ``eager`` picks the attention that exports and quantizes cleanly."""
    import json

    from transformers import AutoModelForSequenceClassification

    kwargs = {"attn_implementation": "eager"} if eager else {}
    config = json.loads((Path(model_dir) / "config.json").read_text())
    cls = _mean_pool_class() if config.get("pooling") == "mean" else AutoModelForSequenceClassification
    return cls.from_pretrained(model_dir, local_files_only=True, **kwargs).eval()


def student_layers(rule: str, layers: int, teacher_layers: int) -> list[int]:
    """The 1-based teacher layers a ``layers``-deep student starts from (``distill.teacher_layers``).

    >>> student_layers("spread", 2, 6), student_layers("bottom", 2, 6), student_layers("1,6", 2, 6)
    ([3, 6], [1, 2], [1, 6])
    """
    if not 0 < layers <= teacher_layers:
        raise ValueError(f"a student of {layers} layers from a teacher of {teacher_layers}: 1..{teacher_layers}")
    if rule == "spread":
        return [round((i + 1) * teacher_layers / layers) for i in range(layers)]
    if rule == "bottom":
        return list(range(1, layers + 1))
    try:
        chosen = [int(x) for x in rule.split(",")]
    except ValueError:
        raise ValueError(f"teacher layers {rule!r}: spread, bottom or comma-separated numbers") from None
    if len(chosen) != layers or not all(0 < x <= teacher_layers for x in chosen):
        raise ValueError(f"teacher layers {rule!r}: {layers} numbers in 1..{teacher_layers} needed")
    return chosen


def build_student(teacher: Any, layers: Sequence[int]) -> Any:
    """A copy of ``teacher`` (a classifier of either head kind) keeping only the 1-based encoder ``layers``.

    Embeddings, pooler and head are the teacher's; the student's config records where its layers came from
    (``distilled_from_layers``) and its own depth.
    """
    import copy

    import torch

    student = copy.deepcopy(teacher)
    student.bert.encoder.layer = torch.nn.ModuleList(copy.deepcopy(teacher.bert.encoder.layer[i - 1]) for i in layers)
    student.config.num_hidden_layers = len(layers)
    student.config.distilled_from_layers = list(layers)
    return student


def architecture(config: Any) -> dict[str, Any]:
    """What the bundle manifest records of a model (``architecture``): depth, width, heads, where it came from."""
    out = {"layers": int(config.num_hidden_layers), "hidden_size": int(config.hidden_size),
           "attention_heads": int(config.num_attention_heads), "intermediate_size": int(config.intermediate_size),
           "pooling": getattr(config, "pooling", "cls")}
    if getattr(config, "distilled_from_layers", None):
        out["distilled_from_layers"] = list(config.distilled_from_layers)
    return out
