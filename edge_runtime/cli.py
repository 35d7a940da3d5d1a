"""``python -m edge_runtime``: sub-commands, each importing what it needs inside its handler."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

__all__ = ["main"]


def _predict(args: argparse.Namespace) -> int:
    """One JSON line per text, in order: the answer, or ``"error": {"code", "message"}`` with the code the service's
    error reply would carry (``empty_text``, ``text_too_long``, ``bad_encoding``; ``internal`` when the model fails
    on it). Exit 1 when any text was refused."""
    from .classifier import IntentClassifier

    texts = args.texts or _stdin_texts()
    refused = 0
    with IntentClassifier.from_bundle(args.bundle, backend=args.backend, threads=args.threads,
                                      threshold=args.threshold, top_k=args.top_k,
                                      out_of_scope=not args.no_out_of_scope) as clf:
        model = {"name": clf.name, "version": clf.version}
        chunk: list[str] = []
        for text in [*texts, None]:  # None: the end, flush the last chunk
            if text is not None:
                chunk.append(text)
            if chunk and (text is None or len(chunk) >= clf.max_batch):
                for shown, body in zip(chunk, _answers(clf, chunk, args.max_text_chars)):
                    refused += "error" in body
                    print(json.dumps({"text": _printable(shown), **body, "model": model}, ensure_ascii=False,
                                     allow_nan=False), flush=True)
                chunk = []
    return 1 if refused else 0


def _stdin_texts() -> list[str]:
    # Bytes, so that a line that is not UTF-8 is refused on its own (bad_encoding) instead of ending the run.
    lines = []
    for raw in sys.stdin.buffer:
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        lines.append(raw.removesuffix(b"\r").decode("utf-8", "surrogateescape"))
    return lines


def _answers(clf: Any, texts: list[str], max_text_chars: int) -> list[dict[str, Any]]:
    """Each text's answer or error body, by the service's rules (:func:`~edge_runtime.service.protocol.check_text`)."""
    from .service.errors import RequestError
    from .service.protocol import check_text

    bodies: list[dict[str, Any] | None] = []
    for text in texts:
        try:
            check_text(text, max_text_chars)
            bodies.append(None)
        except RequestError as exc:
            bodies.append({"error": {"code": exc.code, "message": exc.message}})
    todo = [i for i, b in enumerate(bodies) if b is None]
    for i, body in zip(todo, _classify(clf, [texts[i] for i in todo]), strict=True):
        bodies[i] = body
    return [b for b in bodies if b is not None]


def _classify(clf: Any, texts: list[str]) -> list[dict[str, Any]]:
    from .errors import EdgeRuntimeError
    from .service.protocol import ErrorCode

    if not texts:
        return []
    try:
        return [p.to_dict() for p in clf.predict_batch(texts)]
    except EdgeRuntimeError as exc:  # the model failed on this batch: find the text(s) it failed on
        if len(texts) > 1:
            return [body for t in texts for body in _classify(clf, [t])]
        return [{"error": {"code": ErrorCode.INTERNAL.value, "message": str(exc)}}]


def _printable(text: str) -> str:
    """``text`` as UTF-8 can carry it (an undecodable byte or a lone surrogate becomes U+FFFD)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _serve(args: argparse.Namespace) -> int:
    import faulthandler
    import signal

    from .service.config import flags_from_namespace

    # ``kill -USR1 <pid>`` writes every thread's stack to stderr: how to see where a stuck service is waiting.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from .service.runner import load_config, serve

    config = load_config(flags_from_namespace(args), file=args.config_file)
    logging.getLogger().setLevel(config.log_level.upper())
    return serve(config)


def _ask(args: argparse.Namespace) -> int:
    from .ask import AskOptions, ask

    texts = tuple(args.texts) or tuple(line.rstrip("\n") for line in sys.stdin if line.strip())
    return ask(AskOptions(broker=args.broker, thing=args.thing, texts=texts, client_id=args.client_id or "",
                          ca=args.ca, cert=args.cert, key=args.key, timeout_s=args.timeout,
                          default_reply_topic=args.default_reply_topic))


def build_parser() -> argparse.ArgumentParser:
    from ._argparse import HelpFormatter
    from .service.config import ServiceConfig

    parser = argparse.ArgumentParser(prog="python -m edge_runtime", description="On-device intent classification.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--log-level", default=None, help="logging level (default: WARNING; serve: INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify texts (arguments, or one per line on stdin); one JSON line each",
                       formatter_class=HelpFormatter,
                       description="Classify texts: one JSON line each, in order. A text the service would refuse "
                                   "gets an error line with the service's code (empty_text, text_too_long, "
                                   "bad_encoding) and the exit status is 1.")
    p.add_argument("--bundle", required=True, help="edge bundle directory")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "dlr", "fake"],
                   help="inference backend")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    p.add_argument("--threshold", type=float, default=None, help="below this confidence answer 'unknown'")
    p.add_argument("--top-k", type=int, default=3, help="labels listed in 'top'")
    p.add_argument("--no-out-of-scope", action="store_true",
                   help="answer the best label even where the bundle's out-of-scope detector says 'unknown'")
    p.add_argument("--max-text-chars", type=int, default=ServiceConfig.__dataclass_fields__["max_text_chars"].default,
                   help="longest text accepted, in characters (text_too_long above), as serve")
    p.add_argument("texts", nargs="*", help="texts to classify (none: one per line on stdin)")
    p.set_defaults(func=_predict)

    from .service.config import add_arguments  # dataclasses only: no model, no MQTT client

    p = sub.add_parser("serve", help="serve intent requests over MQTT or Greengrass IPC until SIGTERM",
                       formatter_class=HelpFormatter,
                       description="Serve contract 4: requests on cmd/intents/<thing>/request, replies on "
                                   "cmd/intents/<thing>/response, status on dt/intents/<thing>/status. Settings come "
                                   "from flags, --config FILE, EDGE_INTENTS_* variables and, under Greengrass IPC, "
                                   "the component configuration.")
    add_arguments(p)
    p.set_defaults(func=_serve)

    p = sub.add_parser("ask", help="send texts to a device's service over MQTT; print each reply as one JSON line",
                       description="Send each text as a request on cmd/intents/<thing>/request and print each reply "
                                   "(or error reply) as one JSON line. Exit status: 0 all replied, 1 an error reply, "
                                   "3 no reply within --timeout, 2 bad arguments or a refused connection.")
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    p.add_argument("--thing", required=True, metavar="NAME", help="thing name of the device to ask")
    p.add_argument("--ca", default=None, metavar="FILE", help="CA certificate (PEM) of the broker (mqtts://)")
    p.add_argument("--cert", default=None, metavar="FILE", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--key", default=None, metavar="FILE", help="client private key (PEM) for mutual TLS")
    p.add_argument("--client-id", default=None, metavar="ID",
                   help="MQTT client id (default: edge-intents-ask-<random>; on AWS IoT Core the requester's thing name)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for all replies (default 10)")
    p.add_argument("--default-reply-topic", action="store_true",
                   help="no MQTT 5 response topic: read replies on cmd/intents/<thing>/response")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (default: one per line on stdin)")
    p.set_defaults(func=_ask)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=(args.log_level or "WARNING").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .errors import EdgeRuntimeError

    try:
        return int(args.func(args))
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
