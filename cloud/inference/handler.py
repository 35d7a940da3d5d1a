"""The SageMaker inference handler of the FP32 checkpoint: ``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``.

How the SageMaker PyTorch serving container runs it (sagemaker-pytorch-inference-toolkit on TorchServe, with
sagemaker-inference-toolkit's ``Transformer``): at start it ``pip install``\\ s ``/opt/ml/model/code/requirements.txt``
and puts ``/opt/ml/model/code`` (the ``code/`` folder of ``model.tar.gz``) on ``PYTHONPATH``, imports the module
``SAGEMAKER_PROGRAM`` names (``inference.py``: :data:`cloud.aws.code.INFERENCE_SCRIPT`, which imports these four
functions), and calls ``model_fn("/opt/ml/model")`` once. Per request it calls
``input_fn(body, content_type)`` -> ``predict_fn(data, model)`` -> ``output_fn(prediction, accept)``; the body
arrives as ``str`` for exactly ``application/json`` (decoded as UTF-8), as ``bytes`` otherwise. A function
with one parameter more gets the request's TorchServe context as its last argument; ``output_fn`` takes it to
set the HTTP status of an error reply. The training job writes ``code/`` into its model directory
(:func:`cloud.aws.code.write_serving_code`), so the registered training artifact serves as it is.

JSON in and out, contract 4 (the device's shapes, :mod:`edge_runtime.service.protocol`)::

    {"id": "r1", "text": "play jazz"}             -> {"id", "intent", "confidence", "top", "model", "latency_ms"}
    {"id": "r2", "texts": ["play jazz", "..."]}   -> {"id", "results": [{"intent", "confidence", "top"}, ...], ...}
    {"inputs": ["play jazz", "..."]}              -> as ``texts`` ("id" optional): what ``cloud.shadow`` sends

A bad request gets the device's error reply ``{"id", "error": {"code", "message"}}`` with HTTP 400 (415 for a
content type other than JSON, 406 for an ``Accept`` other than JSON); the limits are the device's defaults
(:class:`edge_runtime.service.ServiceConfig`). The reply's ``model`` is ``SLM_MODEL_NAME`` / ``SLM_MODEL_VERSION``
of the container's environment (``python -m cloud.endpoint deploy`` sets the version).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CloudError

__all__ = ["ServingModel", "Rejected", "Answer", "model_fn", "input_fn", "predict_fn", "output_fn", "JSON",
           "MODEL_NAME_ENV", "MODEL_VERSION_ENV"]

JSON = "application/json"
MODEL_NAME_ENV = "SLM_MODEL_NAME"
MODEL_VERSION_ENV = "SLM_MODEL_VERSION"
TOKENIZER_FILE = "tokenizer.json"
TRAINING_LOG = "training_log.json"


@dataclass
class ServingModel:
    """What ``model_fn`` returns: the FP32 classifier, the device's tokenizer, and the reply's settings."""

    model: Any
    tokenizer: Any
    labels: tuple[str, ...]
    name: str
    version: str
    top_k: int = 3
    max_batch: int = 32

    def predict(self, texts: Sequence[str]) -> list[Any]:
        """One :class:`edge_runtime.classifier.Prediction` per text, the device's ``top`` decoding."""
        import torch

        from edge_runtime.classifier import Prediction

        out = []
        for start in range(0, len(texts), self.max_batch):
            enc = self.tokenizer.encode(list(texts[start:start + self.max_batch]))
            with torch.inference_mode():
                logits = self.model(input_ids=torch.from_numpy(enc.input_ids),
                                    attention_mask=torch.from_numpy(enc.attention_mask),
                                    token_type_ids=torch.from_numpy(enc.token_type_ids)).logits.float().numpy()
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = z / z.sum(axis=1, keepdims=True)
            for row in probs:
                top = tuple((self.labels[i], float(row[i])) for i in np.argsort(-row, kind="stable")[: self.top_k])
                out.append(Prediction(top[0][0], top[0][1], top))
        return out


@dataclass(frozen=True)
class Rejected:
    """A request refused before the model: the device's error reply and the HTTP status it goes out with."""

    request_id: str | int | None
    code: str
    message: str
    status: int = 400


@dataclass(frozen=True)
class Answer:
    """What ``predict_fn`` returns for a valid request."""

    request: Any
    predictions: list[Any]
    model: dict[str, str]
    latency_ms: float


def _max_length(model_dir: Path) -> int:
    log = model_dir / TRAINING_LOG
    try:
        return int(json.loads(log.read_text(encoding="utf-8"))["config"]["max_length"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CloudError(f"{log}: cannot read the max_length the model was trained with ({exc!r}); "
                         "the folder must be a cloud.train checkpoint") from None


def model_fn(model_dir: str) -> ServingModel:
    """Load the checkpoint ``cloud.train`` wrote (``config.json``, weights, ``tokenizer.json``, ``training_log.json``)."""
    from edge_runtime.tokenizer import IntentTokenizer

    from ..modeling import load_classifier

    root = Path(model_dir)
    for name in ("config.json", TOKENIZER_FILE, TRAINING_LOG):
        if not (root / name).is_file():
            raise CloudError(f"{root} has no {name}: model_fn needs the checkpoint cloud.train writes")
    model = load_classifier(root)
    id2label = model.config.id2label
    labels = tuple(str(id2label[i]) for i in range(model.config.num_labels))
    defaults = _device_defaults()
    return ServingModel(
        model=model, tokenizer=IntentTokenizer(root / TOKENIZER_FILE, _max_length(root)), labels=labels,
        name=os.environ.get(MODEL_NAME_ENV) or root.name, version=os.environ.get(MODEL_VERSION_ENV, ""),
        top_k=max(1, min(defaults["top_k"], len(labels))), max_batch=defaults["max_batch"])


def _device_defaults() -> dict[str, Any]:
    """The device service's default settings (one place for the limits: its configuration's fields)."""
    from edge_runtime.service import ServiceConfig

    return {f.name: f.default for f in dataclasses.fields(ServiceConfig)}


def _limits() -> dict[str, int]:
    d = _device_defaults()
    return {k: d[k] for k in ("max_text_chars", "max_texts", "max_payload_bytes")}


def _inputs_form(payload: bytes) -> tuple[bytes, bool] | None:
    """``{"inputs": [...]}`` (or one string) rewritten as a contract-4 ``texts`` request; None for other bodies."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None  # decode_request names the problem
    if not isinstance(data, dict) or "inputs" not in data or "text" in data or "texts" in data:
        return None
    inputs = data["inputs"]
    has_id = isinstance(data.get("id"), str)
    request = {"id": data["id"] if has_id else "inputs", "texts": [inputs] if isinstance(inputs, str) else inputs}
    return json.dumps(request, ensure_ascii=False).encode("utf-8"), has_id


def input_fn(request_body: str | bytes, content_type: str | None) -> Any:
    """The body as a validated :class:`edge_runtime.service.Request`, or :class:`Rejected` saying why not."""
    from edge_runtime.service import RequestError, decode_request

    media = (content_type or JSON).split(";", 1)[0].strip().lower()
    if media != JSON:
        return Rejected(None, "bad_request", f"content type {content_type!r} is not supported: send {JSON}", 415)
    payload = request_body.encode("utf-8", "surrogatepass") if isinstance(request_body, str) else bytes(request_body)
    limits = _limits()
    try:
        if len(payload) <= limits["max_payload_bytes"] and (rewritten := _inputs_form(payload)) is not None:
            body, has_id = rewritten
            request = decode_request(body, **limits)
            return request if has_id else dataclasses.replace(request, id=None)
        return decode_request(payload, **limits)
    except RequestError as exc:
        return Rejected(exc.request_id, exc.code, exc.message)


def predict_fn(data: Any, model: ServingModel) -> Any:
    """Classify the request's texts; a :class:`Rejected` request passes through untouched."""
    if isinstance(data, Rejected):
        return data
    started = time.perf_counter()
    predictions = model.predict(data.texts)
    return Answer(data, predictions, {"name": model.name, "version": model.version},
                  (time.perf_counter() - started) * 1000.0)


def output_fn(prediction: Any, accept: str | None, context: Any = None) -> tuple[bytes, str]:
    """The JSON reply and its content type; with the TorchServe ``context``, an error reply's HTTP status is set."""
    from edge_runtime.service import encode_error, encode_reply

    accepted = {media.split(";", 1)[0].strip().lower() for media in (accept or JSON).split(",")}
    if not accepted & {JSON, "*/*", "application/*"}:
        request_id = getattr(getattr(prediction, "request", None), "id", None)
        prediction = Rejected(request_id, "bad_request", f"Accept {accept!r} cannot be served: this model replies "
                                                         f"{JSON}", 406)
    if isinstance(prediction, Rejected):
        if context is not None:
            context.set_response_status(prediction.status, _PHRASES.get(prediction.status, "Bad Request"))
        return encode_error(prediction.request_id, prediction.code, prediction.message), JSON
    return encode_reply(prediction.request, prediction.predictions, prediction.model, prediction.latency_ms), JSON


_PHRASES = {400: "Bad Request", 406: "Not Acceptable", 415: "Unsupported Media Type"}
