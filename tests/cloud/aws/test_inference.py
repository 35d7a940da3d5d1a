"""The SageMaker inference handler, called the way the PyTorch serving container calls it.

:class:`Toolkit` replays sagemaker-inference-toolkit's ``Transformer`` (src/sagemaker_inference/transformer.py,
aws/sagemaker-inference-toolkit@f79853d): the module is imported by the name ``SAGEMAKER_PROGRAM`` gives (``.py``
cut off) from ``/opt/ml/model/code`` on the path; ``model_fn(model_dir)`` once; per request the body is decoded as
UTF-8 only for exactly ``application/json`` / ``text/csv``, an absent or ``*/*`` Accept becomes
``application/json``, each function gets the TorchServe context as one more argument when its signature has one
more parameter, and a tuple result is ``(body, content type)``. What stays unproven here: TorchServe itself
(its HTTP front, workers, timeouts) and the ``pip install`` of ``code/requirements.txt`` in the real image.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.conftest import LABELS  # noqa: E402

TEXTS = ["add song 12 to my playlist", "book a table for four people", "will it rain in new york", "play jazz"]


class Context:
    """The parts of TorchServe's ``ts.context.Context`` the toolkit and the handler use."""

    def __init__(self, model_dir: Path, headers: dict[str, str]) -> None:
        self.system_properties = {"model_dir": str(model_dir)}
        self.request_processor = [self]
        self._headers = headers
        self.status: tuple[int, str] | None = None
        self.content_type: str | None = None

    def get_request_properties(self) -> dict[str, str]:
        return self._headers

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type = value


class Toolkit:
    """sagemaker-inference-toolkit's Transformer, reduced to what it does with a user module."""

    def __init__(self, module, model_dir: Path) -> None:
        self.module, self.model_dir = module, model_dir
        self.model = module.model_fn(str(model_dir))

    @staticmethod
    def _run(fn, *args, context):
        n = len(inspect.signature(fn).parameters)
        if n == len(args):
            return fn(*args)
        assert n == len(args) + 1, f"{fn.__name__} takes {n} arguments but {len(args)} were given"
        return fn(*args, context)

    def invoke(self, body: bytes, content_type: str | None = "application/json", accept: str | None = None):
        headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v is not None}
        context = Context(self.model_dir, headers)
        accept = headers.get("Accept")
        if not accept or accept == "*/*":
            accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/json")
        data = body.decode("utf-8") if content_type in ("application/json", "text/csv") else body
        m = self.module
        result = self._run(m.output_fn, self._run(m.predict_fn, self._run(m.input_fn, data, content_type,
                                                                           context=context),
                                                  self.model, context=context), accept, context=context)
        response, response_type = result if isinstance(result, tuple) else (result, accept)
        context.set_response_content_type(0, response_type)
        return (context.status or (200, "OK"))[0], json.loads(response), context.content_type


def write_checkpoint(root: Path, base: Path, max_length: int = 24) -> Path:
    """What cloud.train leaves in its model directory: the classifier, tokenizer.json, training_log.json."""
    import shutil

    from cloud.modeling import build_classifier

    torch.manual_seed(3)
    build_classifier(base, LABELS).save_pretrained(root)
    shutil.copyfile(base / "tokenizer.json", root / "tokenizer.json")
    (root / "training_log.json").write_text(json.dumps({"config": {"max_length": max_length}, "labels": LABELS}))
    return root


@pytest.fixture(scope="module")
def checkpoint(tiny_base_model, tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"), tiny_base_model)


@pytest.fixture(scope="module")
def toolkit(checkpoint):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLM_MODEL_NAME", "snips-intents")
        mp.setenv("SLM_MODEL_VERSION", "7")
        mp.setenv("SAGEMAKER_PROGRAM", "inference.py")
        module = importlib.import_module("cloud.inference.handler")
        yield Toolkit(module, checkpoint)


def reference(checkpoint: Path, texts):
    """The FP32 answers along cloud.train's own path (predict_logits on the device tokenizer's ids)."""
    import numpy as np

    from cloud.modeling import load_classifier
    from cloud.train import predict_logits, tokenize

    logits = predict_logits(load_classifier(checkpoint), tokenize(list(texts), checkpoint / "tokenizer.json", 24))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return [(LABELS[int(p.argmax())], float(p.max())) for p in probs]


def test_one_text_gets_the_device_reply_with_the_fp32_answer(toolkit, checkpoint):
    # Given the handler loaded by model_fn, When one text is posted as JSON
    status, reply, content_type = toolkit.invoke(json.dumps({"id": "r1", "text": TEXTS[0]}).encode())
    # Then the reply has the device's fields (contract 4) and the checkpoint's FP32 answer
    assert status == 200 and content_type == "application/json"
    assert set(reply) == {"id", "intent", "confidence", "top", "model", "latency_ms"}
    assert reply["id"] == "r1" and reply["model"] == {"name": "snips-intents", "version": "7"}
    (intent, confidence), = reference(checkpoint, TEXTS[:1])
    assert reply["intent"] == intent and reply["confidence"] == pytest.approx(confidence, abs=1e-5)
    assert [t["intent"] for t in reply["top"]][0] == intent and len(reply["top"]) == 3
    assert reply["top"][0]["confidence"] >= reply["top"][1]["confidence"] >= reply["top"][2]["confidence"]


def test_texts_get_results_in_order_equal_to_one_by_one(toolkit, checkpoint):
    status, reply, _ = toolkit.invoke(json.dumps({"id": "b", "texts": TEXTS}).encode(), accept="*/*")
    assert status == 200 and reply["id"] == "b" and len(reply["results"]) == len(TEXTS)
    assert [(r["intent"], pytest.approx(r["confidence"], abs=1e-5)) for r in reply["results"]] == reference(checkpoint,
                                                                                                             TEXTS)
    status, alone, _ = toolkit.invoke(json.dumps({"id": "x", "text": TEXTS[2]}).encode(),
                                      accept="text/html, application/json;q=0.9")  # a list with JSON in it
    assert status == 200
    assert reply["results"][2]["intent"] == alone["intent"]
    assert reply["results"][2]["confidence"] == pytest.approx(alone["confidence"], abs=1e-5)


def test_shadow_compare_scores_with_the_handlers_replies(toolkit, checkpoint):
    import io

    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    from cloud import shadow

    # Given device samples, and an endpoint whose replies are what this handler answers to shadow's request
    samples = [{"text": t, "intent": i, "confidence": c, "thing": "pi-1", "model": {"version": "7"}}
               for t, (i, c) in zip(TEXTS, reference(checkpoint, TEXTS))]
    request = json.dumps({"inputs": TEXTS}).encode()
    status, reply, _ = toolkit.invoke(request)
    assert status == 200 and reply["id"] is None
    body = json.dumps(reply).encode()
    client = boto3.client("sagemaker-runtime", region_name="eu-west-1", aws_access_key_id="x",
                          aws_secret_access_key="y")
    with Stubber(client) as stub:
        stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(body), len(body)),
                                              "ContentType": "application/json"},
                          {"EndpointName": "slm-intents-7", "ContentType": "application/json",
                           "Accept": "application/json", "Body": request})
        # When cloud.shadow compares them, Then it reads the handler's reply: the same model agrees everywhere
        result = shadow.compare(samples, shadow.endpoint_scorer("slm-intents-7", client=client))
        stub.assert_no_pending_responses()
    assert result["n"] == len(TEXTS) and result["agreement"] == 1.0


@pytest.mark.parametrize(("body", "content_type", "accept", "status", "code", "echo"), [
    (b'{"id": "r1", "text": ', "application/json", None, 400, "bad_json", None),
    (b'{"text": "play jazz"}', "application/json", None, 400, "bad_request", None),
    (b'{"id": "r2", "text": "   "}', "application/json", None, 400, "empty_text", "r2"),
    (json.dumps({"id": "r3", "texts": ["play jazz"] * 33}).encode(), "application/json", None, 400,
     "too_many_texts", "r3"),
    (json.dumps({"id": "r4", "text": "x" * 513}).encode(), "application/json", None, 400, "text_too_long", "r4"),
    (b"play jazz", "text/csv", None, 415, "bad_request", None),
    (json.dumps({"id": "r5", "text": "play jazz"}).encode(), "application/json", "text/csv", 406, "bad_request", "r5"),
    (json.dumps({"id": "r6", "text": "play jazz"}).encode("utf-16"), "application/x-npy", None, 415, "bad_request",
     None),
])
def test_a_bad_request_gets_the_devices_error_reply_and_a_4xx(toolkit, body, content_type, accept, status, code, echo):
    got_status, reply, content_type_out = toolkit.invoke(body, content_type, accept)
    assert (got_status, reply["error"]["code"], reply["id"]) == (status, code, echo)
    assert reply["error"]["message"] and content_type_out == "application/json"
    # the handler keeps serving
    assert toolkit.invoke(json.dumps({"id": "ok", "text": "play jazz"}).encode())[0] == 200


def test_model_fn_names_what_a_folder_lacks(tmp_path, checkpoint):
    import shutil

    from cloud.errors import CloudError
    from cloud.inference.handler import model_fn

    shutil.copytree(checkpoint, tmp_path / "m")
    (tmp_path / "m" / "training_log.json").unlink()
    with pytest.raises(CloudError, match="has no training_log.json"):
        model_fn(str(tmp_path / "m"))


def test_the_train_job_packs_the_handler_and_it_serves_from_the_model_folder_alone(tmp_path, tiny_csv,
                                                                                   tiny_base_model, monkeypatch):
    """The SageMaker training job's model folder (model.tar.gz) holds code/; a fresh interpreter whose only
    project code is that folder's code/ (like the serving container's PYTHONPATH) imports SAGEMAKER_PROGRAM and
    answers."""
    from cloud.aws.code import SERVING_ENVIRONMENT
    from cloud.aws.steps import run_step
    from tests.cloud.conftest import make_params

    params = make_params(tmp_path, tiny_base_model, **{"train.epochs": 1, "train.max_steps": 2})
    assert run_step("prepare", ["--data", str(tiny_csv), "--out", str(tmp_path / "prep"), "--params", str(params)]) == 0
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(tmp_path / "prep" / "processed"))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    assert run_step("train", ["--params", str(params), "--threads", "1"]) == 0
    code = tmp_path / "model" / "code"
    assert (code / SERVING_ENVIRONMENT["SAGEMAKER_PROGRAM"]).is_file()
    pins = (code / "requirements.txt").read_text().split()
    import transformers

    assert f"transformers=={transformers.__version__}" in pins
    script = tmp_path / "serve.py"
    script.write_text(
        "import importlib, os, sys\n"
        "sys.path.insert(0, os.environ['CODE'])  # the container's PYTHONPATH; -I keeps the checkout off the path\n"
        "mod = importlib.import_module(os.environ['SAGEMAKER_PROGRAM'][:-3])\n"
        "import cloud\n"
        "assert cloud.__file__.startswith(os.environ['CODE']), cloud.__file__\n"
        "model = mod.model_fn(os.environ['MODEL'])\n"
        "data = mod.input_fn('{\"id\": \"a\", \"text\": \"play jazz\"}', 'application/json')\n"
        "body, content_type = mod.output_fn(mod.predict_fn(data, model), 'application/json')\n"
        "print(body.decode())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(SERVING_ENVIRONMENT, CODE=str(code), MODEL=str(tmp_path / "model"), SLM_MODEL_VERSION="3")
    out = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    reply = json.loads(out.stdout.strip().splitlines()[-1])
    assert reply["id"] == "a" and reply["intent"] in LABELS and reply["model"]["version"] == "3"
