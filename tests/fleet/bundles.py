"""Bundles for the fleet tests: the tiny bundle with reference statistics measured on SNIPS validation texts."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SNIPS, build_tiny_bundle

#: texts from another domain: server logs and Cyrillic chatter (unknown words, other lengths)
OTHER_DOMAIN = [
    "ошибка сервера при подключении к базе данных номер {i}",
    "kernel panic not syncing vfs unable to mount root fs on unknown block {i}",
    "привет как дела что нового у тебя сегодня {i}",
    "segfault at 0000000000000{i} ip 00007f3b sp 00007ffd error 4 in libc so",
]


def snips_texts(split: str = "test", limit: int | None = None) -> list[str]:
    lines = [t.strip() for t in (SNIPS / split / "seq.in").read_text(encoding="utf-8").splitlines() if t.strip()]
    return lines[:limit] if limit else lines


def other_domain_texts(n: int) -> list[str]:
    return [OTHER_DOMAIN[i % len(OTHER_DOMAIN)].format(i=i) for i in range(n)]


def reference_bundle(root: Path, *, seed: int = 0, version: str = "1", reference_texts: list[str] | None = None) -> Path:
    """The tiny bundle (``seed`` picks the weights) carrying reference statistics from SNIPS valid texts.

    ``reference_texts`` replaces them: a bundle whose reference came from the wrong data drifts on real traffic.
    """
    from edge_runtime import IntentClassifier
    from edge_runtime.bundle import write_bundle
    from edge_runtime.telemetry import reference_stats

    base, _ = build_tiny_bundle(root.parent / f"{root.name}-base", seed=seed, version=version)
    with IntentClassifier.from_bundle(base.root, backend="onnxruntime", threads=1) as clf:
        reference = reference_stats(clf, reference_texts or snips_texts("valid"))
    m = base.manifest
    write_bundle(root, files={rel: base.path_of(rel) for rel in m.files}, name=m.name, version=m.version,
                 labels=list(m.labels), max_length=m.max_length, tokenizer=m.tokenizer, backends=dict(m.backends),
                 metrics=dict(m.metrics), lineage=dict(m.lineage), reference=reference)
    return root
