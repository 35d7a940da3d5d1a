"""The model registry: model package groups, numbered versions, approval and lifecycle (SageMaker semantics).

The backend is a parameter: ``"local"`` is a SQLite file in the store (:class:`SqliteRegistry`); ``"sagemaker"``
is the SageMaker Model Registry behind the same :class:`ModelRegistry` interface
(:class:`cloud.registry.sagemaker.SageMakerRegistry`, needs ``pip install 'slm-intents[aws]'``).

Example::

    from cloud.registry import open_registry

    with open_registry(store=".store") as reg:
        pkg = reg.register("slm-intents-snips", {"int8": {"macro_f1": 0.98}}, {"run_id": "r1"},
                           {"bundle": "file:///.../edge/1"})
        reg.approve(pkg.group, pkg.version, "alice", "reviewed the evaluation report")
        prod = reg.latest("slm-intents-snips", stage="Prod")
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import RegistryError
from ..store import Store
from .base import (
    Action,
    ApprovalStatus,
    HistoryEvent,
    ModelPackage,
    ModelPackageGroup,
    ModelRegistry,
    Stage,
)
from .sqlite import SqliteRegistry

__all__ = [
    "BACKENDS",
    "Action",
    "ApprovalStatus",
    "HistoryEvent",
    "ModelPackage",
    "ModelPackageGroup",
    "ModelRegistry",
    "SqliteRegistry",
    "Stage",
    "open_registry",
]

BACKENDS = ("local", "sagemaker")


def open_registry(
    backend: str = "local",
    *,
    store: Store | str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    **kw: Any,
) -> ModelRegistry:
    """Open a registry backend.

    ``local``: the SQLite file ``path`` if given (``":memory:"`` for a throw-away one), else the store's
    ``registry_db`` (``store`` is a :class:`~cloud.store.Store` or its directory; default ``.store``).
    Other keyword arguments go to the backend (:class:`SqliteRegistry`: ``create``, ``timeout``, ``clock``;
    ``SageMakerRegistry``: ``region``, ``client``, ``inference_image``, ``clock``).
    """
    name = str(backend).lower()
    if name in ("local", "sqlite"):
        if path is None:
            try:
                path = (store if isinstance(store, Store) else Store.at(store)).registry_db
            except NotImplementedError as exc:  # s3:// stores: the local registry needs a local file
                raise RegistryError(f"the local registry needs a local store: {exc}") from None
        return SqliteRegistry(path, **kw)
    if name == "sagemaker":
        from .sagemaker import SageMakerRegistry

        kw.pop("create", None)  # a SageMaker group is created on first registration
        return SageMakerRegistry(**kw)
    raise RegistryError(f"unknown registry backend {backend!r}; expected one of: {', '.join(BACKENDS)}")
