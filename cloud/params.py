"""Pipeline parameters: ``pipelines/params.json`` loaded into one frozen object.

Every tunable lives in that file (labels, split ratios, hyper-parameters, gate, quantization, target), so
the local run and the SageMaker definition read the same values.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Params", "DEFAULT_PARAMS_PATH", "load_params"]

DEFAULT_PARAMS_PATH = Path(__file__).resolve().parents[1] / "pipelines" / "params.json"


@dataclass(frozen=True)
class Params:
    """The parsed params file; sections stay plain mappings (``params.train["epochs"]``)."""

    raw: Mapping[str, Any]

    @property
    def project(self) -> str:
        return str(self.raw.get("project", "slm-intents"))

    @property
    def model_name(self) -> str:
        return str(self.raw["model_name"])

    @property
    def model_package_group(self) -> str:
        return str(self.raw["model_package_group"])

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.raw["labels"])

    @property
    def data(self) -> Mapping[str, Any]:
        return self.raw["data"]

    @property
    def train(self) -> Mapping[str, Any]:
        return self.raw["train"]

    @property
    def evaluate(self) -> Mapping[str, Any]:
        return self.raw["evaluate"]

    @property
    def gate(self) -> Mapping[str, Any]:
        return self.raw["gate"]

    @property
    def compile(self) -> Mapping[str, Any]:
        return self.raw["compile"]

    def section_hash(self, *sections: str) -> str:
        """Stable hash of some sections (step caching keys on what a step reads)."""
        payload = {s: self.raw.get(s) for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.raw))


def load_params(path: str | os.PathLike[str] | None = None) -> Params:
    from .errors import CloudError

    p = Path(path) if path else DEFAULT_PARAMS_PATH
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CloudError(f"cannot read params file {p}: {exc}") from None
    missing = [k for k in ("model_name", "model_package_group", "labels", "data", "train", "evaluate", "gate", "compile")
               if k not in raw]
    if missing:
        raise CloudError(f"params file {p} lacks {missing}")
    return Params({k: v for k, v in raw.items() if not k.startswith("_")})
