"""Shadow comparison in the cloud: the device's sampled answers against the cloud reference model.

With ``sample_rate`` > 0 in the service configuration, devices publish ``samples`` messages on
``dt/intents/<thing>/telemetry`` (the raw text with the device's intent, confidence and top labels). Gather them
(an IoT rule to S3 writes one message per line; ``python -m cloud.shadow collect`` does it from a local broker)
and score them with the reference model:

    python -m cloud.shadow collect --broker mqtt://127.0.0.1:1883 --seconds 60   # .store/slm-intents/shadow/samples.jsonl
    python -m cloud.shadow compare --model .store/slm-intents/models/<run>      # report: .store/slm-intents/shadow/report
    python -m cloud.shadow compare --samples s.jsonl --bundle edge/fp32 --out shadow-report/
    python -m cloud.shadow compare --endpoint intents-fp32 --region eu-west-1

The reference is the cloud's FP32 checkpoint (``--model``, needs the ``cloud`` extra): the teacher, i.e. the
trained model a distilled device model learned from. A run folder of the store (``models/<run>/``, holding
``checkpoint/`` = the teacher and ``student/`` = the distilled model that ships) resolves to its ``checkpoint/``;
a checkpoint folder is taken as it is (give ``models/<run>/student`` to compare with the student's FP32 instead).
Other references: any edge bundle (``--bundle``) or a SageMaker endpoint (``--endpoint``, JSON
``{"inputs": [...]}`` in, ``{"results": [{"intent", "confidence"}]}`` out as :mod:`cloud.inference.handler`
replies, or ``[{"label", "score"}]`` or ``{"predictions": [...]}``); ``python -m cloud.endpoint deploy`` serves
the teacher the registered version records (``artifacts.teacher_model``), or the registered model itself when it
was not distilled (``--serve package`` serves the student of a distilled version).

``compare`` writes ``shadow.json`` (agreement, per-class disagreement, confusion pairs, confidence deltas, per
device and model version), ``report.md`` and ``shadow.png``, prints the JSON summary, and exits 1 when
``--min-agreement`` is given and not met.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .clihelp import HelpFormatter
from .errors import CloudError
from .store import DEFAULT_STORE, Store

__all__ = ["load_samples", "compare", "bundle_scorer", "model_scorer", "endpoint_scorer", "reference_checkpoint",
           "render_report", "main"]

#: in a run folder of the store (``models/<run>/``): the trained model (the teacher) and the distilled student
TEACHER_DIR, STUDENT_DIR = "checkpoint", "student"
_CHECKPOINT_FILE = "config.json"

#: a scorer maps texts to (intent, confidence) pairs, one per text
Scorer = Callable[[Sequence[str]], list[tuple[str, float]]]


def load_samples(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every sample in the ``samples`` messages of JSON-lines files (or folders of ``*.jsonl`` / ``*.json``).

    Each sample gets the ``thing`` and ``model`` of its message. Lines of other message types are skipped.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(x for x in p.rglob("*") if x.suffix in (".jsonl", ".json") and x.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise CloudError(f"no samples at {p}")
    out: list[dict[str, Any]] = []
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                raise CloudError(f"{f}:{n} is not JSON") from None
            if not isinstance(msg, dict) or msg.get("type") != "samples":
                continue
            for s in msg.get("samples", []):
                if isinstance(s, dict) and isinstance(s.get("text"), str) and "intent" in s:
                    out.append({**s, "thing": msg.get("thing"), "model": msg.get("model") or {}})
    return out


def compare(samples: Sequence[Mapping[str, Any]], scorer: Scorer, *, max_examples: int = 20) -> dict[str, Any]:
    """Agreement of the device's answers with ``scorer``'s on the same texts.

    ``per_class`` is keyed by the reference's label (how often the device disagreed when the reference said X);
    ``confidence_delta`` is the device's confidence minus the reference's, over the texts where both agree.
    """
    if not samples:
        raise CloudError("no samples to compare (is sampling enabled on the devices? sample_rate > 0)")
    ref = scorer([s["text"] for s in samples])
    if len(ref) != len(samples):
        raise CloudError(f"the reference returned {len(ref)} answers for {len(samples)} texts")
    agree = np.array([s["intent"] == r[0] for s, r in zip(samples, ref)])
    per_class: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "disagree": 0})
    pairs: Counter[str] = Counter()
    deltas, by_thing, by_version = [], defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    examples = []
    for s, (label, conf), ok in zip(samples, ref, agree):
        per_class[label]["n"] += 1
        key_t, key_v = str(s.get("thing")), str((s.get("model") or {}).get("version"))
        by_thing[key_t][0] += 1
        by_version[key_v][0] += 1
        if ok:
            deltas.append(float(s["confidence"]) - float(conf))
            by_thing[key_t][1] += 1
            by_version[key_v][1] += 1
            continue
        per_class[label]["disagree"] += 1
        pairs[f"{label}->{s['intent']}"] += 1
        if len(examples) < max_examples:
            examples.append({"text": s["text"], "device": {"intent": s["intent"], "confidence": s["confidence"]},
                             "reference": {"intent": label, "confidence": round(conf, 6)}, "thing": s.get("thing")})
    for v in per_class.values():
        v["rate"] = round(v["disagree"] / v["n"], 4)
    d = np.asarray(deltas) if deltas else np.zeros(1)
    return {
        "n": len(samples),
        "agreement": round(float(agree.mean()), 4),
        "per_class": dict(sorted(per_class.items())),
        "pairs": dict(pairs.most_common()),
        "confidence_delta": {"mean": round(float(d.mean()), 4), "p50": round(float(np.percentile(d, 50)), 4),
                             "p95_abs": round(float(np.percentile(np.abs(d), 95)), 4), "n": len(deltas),
                             "values": [round(x, 4) for x in deltas]},
        "by_thing": {k: {"n": n, "agreement": round(a / n, 4)} for k, (n, a) in sorted(by_thing.items())},
        "by_model_version": {k: {"n": n, "agreement": round(a / n, 4)} for k, (n, a) in sorted(by_version.items())},
        "examples": examples,
    }


# -- reference scorers ----------------------------------------------------------------------------------------------
def bundle_scorer(bundle_dir: str | Path, *, backend: str = "onnxruntime") -> Scorer:
    """Score with an edge bundle (an FP32 ONNX bundle, or any other) through the device path."""
    from edge_runtime import IntentClassifier

    def score(texts: Sequence[str]) -> list[tuple[str, float]]:
        with IntentClassifier.from_bundle(bundle_dir, backend=backend) as clf:
            return [(p.top[0][0], float(p.confidence)) for p in clf.predict_batch(list(texts))]
    return score


def reference_checkpoint(model: str | Path) -> Path:
    """The checkpoint ``--model`` names: a checkpoint folder (``config.json``) as it is, a store run folder
    ``models/<run>/`` as its ``checkpoint/`` (the teacher, not the ``student/`` that ships)."""
    path = Path(model)
    if (path / _CHECKPOINT_FILE).is_file():
        return path
    if (path / TEACHER_DIR / _CHECKPOINT_FILE).is_file():
        return path / TEACHER_DIR
    raise CloudError(f"{path}: neither a checkpoint folder ({_CHECKPOINT_FILE}) nor a run folder of the store "
                     f"with {TEACHER_DIR}/ (the teacher)")


def model_scorer(model_dir: str | Path, *, max_length: int = 40) -> Scorer:
    """Score with the FP32 PyTorch checkpoint of ``cloud.train`` (needs the ``cloud`` extra)."""
    def score(texts: Sequence[str]) -> list[tuple[str, float]]:
        from .modeling import load_classifier
        from .train import predict_logits, tokenize

        model = load_classifier(Path(model_dir))
        logits = predict_logits(model, tokenize(list(texts), Path(model_dir) / "tokenizer.json", max_length))
        z = logits - logits.max(1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        labels = model.config.id2label
        return [(str(labels[int(i)]), float(p[int(i)])) for p, i in zip(probs, probs.argmax(1))]
    return score


def endpoint_scorer(endpoint: str, *, region: str | None = None, client: Any = None, batch: int = 32) -> Scorer:
    """Score with a SageMaker real-time endpoint serving the FP32 model."""
    def score(texts: Sequence[str]) -> list[tuple[str, float]]:
        from .aws.clients import call, make_client

        runtime = client or make_client("sagemaker-runtime", region=region)
        out: list[tuple[str, float]] = []
        for start in range(0, len(texts), batch):
            chunk = list(texts[start:start + batch])
            resp = call(runtime.invoke_endpoint, EndpointName=endpoint, ContentType="application/json",
                        Accept="application/json", Body=json.dumps({"inputs": chunk}).encode())
            body = json.loads(resp["Body"].read())
            # cloud.inference.handler replies like the device ({"results": [...]}); other servers use "predictions"
            preds = body.get("results", body.get("predictions", body)) if isinstance(body, dict) else body
            if not isinstance(preds, list) or len(preds) != len(chunk):
                raise CloudError(f"endpoint {endpoint} returned {str(body)[:200]!r} for {len(chunk)} texts")
            for p in preds:
                p = p[0] if isinstance(p, list) else p
                out.append((str(p.get("label", p.get("intent"))), float(p.get("score", p.get("confidence", 0.0)))))
        return out
    return score


# -- outputs --------------------------------------------------------------------------------------------------------
def render_report(result: Mapping[str, Any], reference: str) -> str:
    lines = [f"# Shadow comparison: devices vs {reference}", "",
             f"- samples: {result['n']}", f"- agreement: {result['agreement']:.2%}",
             f"- confidence delta (device - reference, where they agree): mean {result['confidence_delta']['mean']:+.4f}, "
             f"p95 |delta| {result['confidence_delta']['p95_abs']:.4f}", "",
             "| reference label | samples | disagreements | rate |", "|---|---:|---:|---:|"]
    for label, v in result["per_class"].items():
        lines.append(f"| {label} | {v['n']} | {v['disagree']} | {v['rate']:.2%} |")
    if result["pairs"]:
        lines += ["", "Most frequent disagreements (reference -> device): "
                  + ", ".join(f"{k} ({v})" for k, v in list(result["pairs"].items())[:10])]
    lines += ["", "| device | samples | agreement |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['n']} | {v['agreement']:.2%} |" for k, v in result["by_thing"].items()]
    return "\n".join(lines) + "\n\n![agreement](shadow.png)\n"


def _plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    labels = list(result["per_class"])
    a.barh(labels, [result["per_class"][k]["rate"] for k in labels], color="tab:red")
    a.set_xlim(0, 1)
    a.set_title(f"disagreement per reference class (agreement {result['agreement']:.1%})")
    b.hist(result["confidence_delta"]["values"] or [0.0], bins=30, color="tab:blue")
    b.set_title("confidence delta, device - reference")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(result: Mapping[str, Any], out_dir: Path, reference: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "shadow.json").write_text(json.dumps({**result, "reference": reference}, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_report(result, reference))
    _plot(result, out_dir / "shadow.png")


# -- collect --------------------------------------------------------------------------------------------------------
def collect(broker: str, out: Path, *, seconds: float, topic: str = "dt/intents/+/telemetry",
            max_messages: int | None = None) -> int:
    """Subscribe to ``topic`` on a local broker and append ``samples`` messages to ``out``; returns how many."""
    import queue
    import time

    import paho.mqtt.client as mqtt

    from edge_runtime.service.transports.mqtt import parse_broker_url

    tls, host, port = parse_broker_url(broker)
    if tls:
        raise CloudError("collect speaks plain mqtt:// to a local broker; use an IoT rule to S3 for AWS IoT Core")
    inbox: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_message = lambda c, u, m: inbox.put(bytes(m.payload))
    client.connect(host, port)
    client.loop_start()
    n = 0
    deadline = time.monotonic() + seconds
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8") as f:
            while time.monotonic() < deadline and (max_messages is None or n < max_messages):
                try:
                    payload = inbox.get(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
                except queue.Empty:
                    continue
                try:
                    msg = json.loads(payload)
                except json.JSONDecodeError:
                    continue
                if isinstance(msg, dict) and msg.get("type") == "samples":
                    f.write(json.dumps(msg, ensure_ascii=False) + "\n")
                    n += 1
    finally:
        client.disconnect()
        client.loop_stop()
    return n


# -- CLI ------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="python -m cloud.shadow", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="score sampled device answers with the cloud reference model",
                       formatter_class=HelpFormatter)
    c.add_argument("--store", default=DEFAULT_STORE, help="store whose shadow/ holds the defaults")
    c.add_argument("--samples", nargs="+", default=None,
                   help="JSON-lines files or folders of telemetry messages (default: <store>/slm-intents/shadow/samples.jsonl)")
    ref = c.add_mutually_exclusive_group(required=True)
    ref.add_argument("--model", help="the cloud reference, the teacher: its FP32 checkpoint folder (cloud.train "
                                     "output), or a run folder <store>/slm-intents/models/<run>, read as its "
                                     "checkpoint/ (not its student/)")
    ref.add_argument("--bundle", help="an edge bundle folder as the reference (e.g. the FP32 ONNX one)")
    ref.add_argument("--endpoint", help="SageMaker endpoint serving the FP32 model (cloud.endpoint deploy serves "
                                        "the version's teacher by default; --serve package the student)")
    c.add_argument("--region", default=None, help="AWS region of the endpoint (default: AWS_REGION, then AWS_DEFAULT_REGION)")
    c.add_argument("--out", default=None,
                   help="folder for shadow.json, report.md, shadow.png (default: <store>/slm-intents/shadow/report)")
    c.add_argument("--min-agreement", type=float, default=None, help="exit 1 below this agreement (0-1)")
    k = sub.add_parser("collect", help="gather 'samples' telemetry messages from a local broker into a file",
                       formatter_class=HelpFormatter)
    k.add_argument("--store", default=DEFAULT_STORE, help="store whose shadow/ holds the default output")
    k.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL")
    k.add_argument("--topic", default="dt/intents/+/telemetry", help="topic filter of the telemetry")
    k.add_argument("--seconds", type=float, default=60.0, help="how long to listen")
    k.add_argument("--max-messages", type=int, default=None, help="stop after this many messages")
    k.add_argument("--out", default=None, help="JSON-lines file (default: <store>/slm-intents/shadow/samples.jsonl)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shadow_dir = Store(Path(args.store)).shadow()
    if args.out is None:
        args.out = str(shadow_dir / ("samples.jsonl" if args.command == "collect" else "report"))
    if args.command == "compare" and not args.samples:
        args.samples = [str(shadow_dir / "samples.jsonl")]
    try:
        if args.command == "collect":
            n = collect(args.broker, Path(args.out), seconds=args.seconds, topic=args.topic,
                        max_messages=args.max_messages)
            print(json.dumps({"messages": n, "out": args.out}))
            return 0
        if args.bundle:
            scorer, reference = bundle_scorer(args.bundle), f"bundle {args.bundle}"
        elif args.model:
            checkpoint = reference_checkpoint(args.model)
            scorer, reference = model_scorer(checkpoint), f"FP32 model {checkpoint}"
        else:
            scorer, reference = endpoint_scorer(args.endpoint, region=args.region), f"endpoint {args.endpoint}"
        result = compare(load_samples(args.samples), scorer)
        write_outputs(result, Path(args.out), reference)
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: result[k] for k in ("n", "agreement", "per_class", "pairs")}
    summary["confidence_delta"] = {k: v for k, v in result["confidence_delta"].items() if k != "values"}
    summary["out"] = args.out
    print(json.dumps(summary))
    if args.min_agreement is not None and result["agreement"] < args.min_agreement:
        print(f"agreement {result['agreement']:.2%} is below {args.min_agreement:.2%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
