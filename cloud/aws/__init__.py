"""cloud.aws: the same pipeline and interfaces on AWS - SageMaker Pipelines, S3, Neo, Greengrass.

Nothing here imports boto3 or the SageMaker SDK at import time (``pip install 'slm-intents[aws]'`` brings them);
each function imports what it uses. Importing the package loads :mod:`cloud.aws.errors` only; its other names load
their module when first used. Modules:

- :mod:`cloud.aws.pipeline`: the SageMaker Pipelines definition (SDK 3.x) and ``upsert`` / ``start`` / ``status``
- :mod:`cloud.aws.s3store`: :class:`S3Store`, contract 2's key layout in a bucket (``Store.at("s3://...")``)
- :mod:`cloud.aws.neo`: SageMaker Neo compilation into the edge bundle's ``dlr`` backend, with fallback
- :mod:`cloud.aws.greengrass`: component versions and staged (canary -> fleet) deployments
- :mod:`cloud.aws.telemetry`: device telemetry as infra/telemetry.yaml's IoT rule stores it in S3, for the rollout gates
- :mod:`cloud.aws.code`, :mod:`cloud.aws.entry`, :mod:`cloud.aws.steps`: what the SageMaker jobs run
- :mod:`cloud.registry.sagemaker`: the SageMaker Model Registry backend (``open_registry("sagemaker")``)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AwsCallFailed, AwsError, DeploymentBlocked, DependencyMissing, NeoCompileFailed

# The other names load their module on first use (PEP 562): importing the package must not import a submodule,
# or ``python -m cloud.aws.greengrass`` finds that module in sys.modules before runpy executes it (RuntimeWarning)
_LAZY = {"RolloutConfig": "greengrass", "NeoConfig": "neo", "NeoResult": "neo", "NeoTarget": "neo",
         "PipelineConfig": "pipeline", "build_pipeline": "pipeline", "definition": "pipeline", "start": "pipeline",
         "status": "pipeline", "upsert": "pipeline", "S3Store": "s3store"}

if TYPE_CHECKING:
    from .greengrass import RolloutConfig
    from .neo import NeoConfig, NeoResult, NeoTarget
    from .pipeline import PipelineConfig, build_pipeline, definition, start, status, upsert
    from .s3store import S3Store


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AwsCallFailed",
    "AwsError",
    "DependencyMissing",
    "DeploymentBlocked",
    "NeoCompileFailed",
    "NeoConfig",
    "NeoResult",
    "NeoTarget",
    "PipelineConfig",
    "RolloutConfig",
    "S3Store",
    "build_pipeline",
    "definition",
    "start",
    "status",
    "upsert",
]
