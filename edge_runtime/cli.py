"""``python -m edge_runtime``: sub-commands, each importing what it needs inside its handler."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

__all__ = ["main"]


def _predict(args: argparse.Namespace) -> int:
    from .classifier import IntentClassifier

    texts = list(args.texts) or [line.rstrip("\n") for line in sys.stdin]
    with IntentClassifier.from_bundle(args.bundle, backend=args.backend, threads=args.threads,
                                      threshold=args.threshold, top_k=args.top_k) as clf:
        for text, pred in zip(texts, clf.predict_batch(texts)):
            print(json.dumps({"text": text, **pred.to_dict(), "model": {"name": clf.name, "version": clf.version}},
                             ensure_ascii=False), flush=True)
    return 0


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
    parser = argparse.ArgumentParser(prog="python -m edge_runtime", description="On-device intent classification.")
    parser.add_argument("--log-level", default=None, help="logging level (default: WARNING; serve: INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify texts (arguments, or one per line on stdin); one JSON line each")
    p.add_argument("--bundle", required=True, help="edge bundle directory")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "dlr", "fake"])
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    p.add_argument("--threshold", type=float, default=None, help="below this confidence answer 'unknown'")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("texts", nargs="*")
    p.set_defaults(func=_predict)

    from .service.config import add_arguments  # dataclasses only: no model, no MQTT client

    p = sub.add_parser("serve", help="serve intent requests over MQTT or Greengrass IPC until SIGTERM",
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
