"""What the emulated aarch64 interpreter runs; the x86 side runs :func:`predict` too, so both compute alike.

Imports only what the device has (numpy, edge_runtime and its dependencies), inside the functions::

    python3-qemu bench/arm64/guest.py imports --json OUT
    python3-qemu bench/arm64/guest.py predict --bundle DIR --input IN.json --output OUT.json

``IN.json`` holds ``texts`` and ``batches`` (lists of indices into ``texts``, run in that order); ``OUT.json``
gets, per text, the intent from :meth:`IntentClassifier.predict_batch` and the logits its backend returned.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["RUNTIME_MODULES", "imports", "predict", "main"]

#: Imported by the imports check, each one a device dependency (edge_runtime last: it needs the others).
RUNTIME_MODULES = ("numpy", "onnxruntime", "tokenizers", "psutil", "edge_runtime")


class _RecordingBackend:
    """Wraps a classifier's backend and keeps the logits of every call; the public path stays in charge."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name
        self.input_names = inner.input_names
        self.calls: list[Any] = []

    def run(self, feeds: Mapping[str, Any]) -> Any:
        out = self._inner.run(feeds)
        self.calls.append(out)
        return out

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:  # threads, providers, ... of the real backend
        return getattr(self._inner, name)


def imports() -> dict[str, Any]:
    """Import every runtime module; report the machine, the versions and onnxruntime's providers."""
    import importlib
    import importlib.metadata as md
    import platform

    timings = {}
    for mod in RUNTIME_MODULES:
        t = time.perf_counter()
        importlib.import_module(mod)
        timings[mod] = round(time.perf_counter() - t, 3)
    import onnxruntime

    versions = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            versions[name.lower().replace("_", "-").replace(".", "-")] = dist.version
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "providers": onnxruntime.get_available_providers(),
        "import_s": timings,
        "versions": dict(sorted(versions.items())),
    }


def predict(bundle: str, texts: Sequence[str], batches: Sequence[Sequence[int]], *, threads: int = 1) -> dict[str, Any]:
    """Run ``batches`` through ``IntentClassifier.predict_batch``; intents and logits per text (``None`` if not run)."""
    import numpy as np

    from edge_runtime import IntentClassifier

    t0 = time.perf_counter()
    clf = IntentClassifier.from_bundle(bundle, backend="onnxruntime", threads=threads)
    load_s = time.perf_counter() - t0
    recorder = _RecordingBackend(clf.backend)
    clf.backend = recorder
    intents: list[str | None] = [None] * len(texts)
    logits: list[list[float] | None] = [None] * len(texts)
    t1 = time.perf_counter()
    with clf:
        for batch in batches:
            recorder.calls.clear()
            preds = clf.predict_batch([texts[i] for i in batch])
            rows = np.concatenate([np.asarray(c, dtype=np.float32) for c in recorder.calls])
            if rows.shape[0] != len(batch):
                raise RuntimeError(f"the backend returned {rows.shape[0]} rows for a batch of {len(batch)}")
            for i, pred, row in zip(batch, preds, rows):
                intents[i] = pred.intent
                logits[i] = [float(x) for x in row]
    return {"intents": intents, "logits": logits, "labels": list(clf.labels), "load_s": round(load_s, 3),
            "predict_s": round(time.perf_counter() - t1, 3), "threads": threads}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guest.py", description="arm64 proof: the emulated side")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("imports")
    p.add_argument("--json", type=Path, required=True)
    p = sub.add_parser("predict")
    p.add_argument("--bundle", required=True)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "imports":
        result = imports()
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    else:
        spec = json.loads(args.input.read_text(encoding="utf-8"))
        result = predict(args.bundle, spec["texts"], spec["batches"], threads=args.threads)
        args.output.write_text(json.dumps(result) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
