"""The artifact store (contract 2): a local directory in the S3 key layout, or ``s3://bucket``.

Key layout under ``<store>/<project>/``::

    raw/                      the input data as read
    processed/                train.csv, val.csv, test.csv  (text,intent)
    validation/<run>/         Great Expectations results and Data Docs
    models/<run>/             fine-tuned checkpoint, ONNX exports
    evaluation/<run>/         metrics.json, confusion_matrix.png, report.md
    edge/<version>/           the edge bundle directory and bundle.zip
    registry.sqlite           the local model registry
    cache/                    step-cache records
    greengrass/<version>/     the Greengrass components of a registry version (recipes/, artifacts/, build.json)
    keys/                     bundle signing keys made by ``cloud.signing keygen`` (signing.key is mode 0600)
    rollouts/                 rollout state files (``cloud.rollout plan``; rollout.json by default)
    shadow/                   telemetry samples (samples.jsonl, ``cloud.shadow collect``) and shadow reports

Commands write here (or where the user says), never into the working directory by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from .aws.s3store import S3Store

__all__ = ["Store", "DEFAULT_STORE", "PROJECT"]

DEFAULT_STORE = ".store"
PROJECT = "slm-intents"


@dataclass(frozen=True)
class Store:
    """Paths of one local store. ``Store(".store").edge("3")`` -> ``.store/slm-intents/edge/3``."""

    root: Path
    project: str = PROJECT

    @classmethod
    def at(cls, location: str | os.PathLike[str] | None = None) -> "Union[Store, S3Store]":
        """A local store, or for ``s3://bucket[/prefix]`` the S3 store with the same key layout
        (:class:`cloud.aws.s3store.S3Store`; boto3 is imported only when it first talks to S3)."""
        loc = os.fspath(location or DEFAULT_STORE)
        if loc.startswith("s3://"):
            from .aws.s3store import S3Store

            return S3Store.from_uri(loc)
        return cls(Path(loc))

    @property
    def base(self) -> Path:
        return self.root / self.project

    @property
    def uri(self) -> str:
        return self.root.resolve().as_uri()

    def raw(self) -> Path:
        return self.base / "raw"

    def processed(self) -> Path:
        return self.base / "processed"

    def validation(self, run: str) -> Path:
        return self.base / "validation" / run

    def models(self, run: str) -> Path:
        return self.base / "models" / run

    def evaluation(self, run: str) -> Path:
        return self.base / "evaluation" / run

    def edge(self, version: str) -> Path:
        return self.base / "edge" / str(version)

    def cache(self) -> Path:
        return self.base / "cache"

    def greengrass(self, version: str) -> Path:
        return self.base / "greengrass" / str(version)

    def keys(self) -> Path:
        return self.base / "keys"

    def rollouts(self) -> Path:
        return self.base / "rollouts"

    def shadow(self) -> Path:
        return self.base / "shadow"

    @property
    def registry_db(self) -> Path:
        return self.base / "registry.sqlite"

    @property
    def last_run(self) -> Path:
        return self.root / "last-run.json"
