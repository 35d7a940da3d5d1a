"""The model registry interface and its results, with SageMaker Model Registry semantics.

A *model package group* holds numbered *model package versions* (1, 2, 3 ... per group, never reused).
Each version carries an approval status and a lifecycle stage::

    register ──> PendingManualApproval / Staging
                   │ approve                     │ reject
                   v                             v
                 Approved / Prod ──reject──> Rejected / Archived
                   │ (a newer version approved)  │ approve (re-approval, as SageMaker allows)
                   v                             v
                 Approved / Archived         Approved / Prod

Rules (one place, :func:`plan_transition`, shared by every backend):

- ``approve`` moves a version to ``Approved`` + ``Prod`` from any state except "already Approved and in Prod".
  That includes re-approving a ``Rejected`` version (SageMaker allows it) and putting a superseded
  ``Approved``/``Archived`` version back into Prod (a rollback).
- When a version enters Prod, the group's previous Prod version moves to ``Archived`` (still ``Approved``,
  stage status ``Superseded``) and that move is written to its history, so "the Prod version" is unique.
- ``reject`` moves a version to ``Rejected`` + ``Archived`` from any state except ``Rejected``; rejecting the
  Prod version leaves the group without a Prod version (nothing is rolled back implicitly).
- Only ``Approved`` versions can be in ``Prod``.
- ``approve``/``reject`` need a non-empty actor and reason; both are kept in the history.

How the interface maps onto boto3's SageMaker client (for the SageMaker backend)::

    create_group(name, description)       create_model_package_group(ModelPackageGroupName, ModelPackageGroupDescription)
    list_groups() / get_group(name)       list_model_package_groups / describe_model_package_group
    register(group, metrics, lineage,     create_model_package(ModelPackageGroupName, ModelPackageDescription,
             artifacts, ...)                ModelApprovalStatus, ModelLifeCycle={Stage, StageStatus, StageDescription},
                                            InferenceSpecification (artifacts["model"]), ModelMetrics (artifacts
                                            ["evaluation"]), CustomerMetadataProperties (lineage, metrics summary))
    approve / reject                      update_model_package(ModelPackageArn, ModelApprovalStatus,
                                            ApprovalDescription=reason, ModelLifeCycle={...})
    list_versions(group, status, stage)   list_model_packages(ModelPackageGroupName, ModelApprovalStatus, SortBy=...)
                                            (stage filtered client-side)
    get(group, version)                   describe_model_package(ModelPackageName=<group ARN>/<version>)
    history(group, version)               no native equivalent: CustomerMetadataProperties / lineage events
"""

from __future__ import annotations

import abc
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import RegistryError

__all__ = [
    "ApprovalStatus",
    "check_artifacts",
    "Stage",
    "Action",
    "ModelPackageGroup",
    "ModelPackage",
    "HistoryEvent",
    "Transition",
    "ModelRegistry",
    "plan_transition",
    "validate_group_name",
]

# SageMaker's ModelPackageGroupName pattern; the local backend enforces it too, so names carry over.
_GROUP_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class _StrEnum(str, Enum):
    """A string-valued enum that parses from its value (CLI and JSON carry the plain string)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "str | _StrEnum") -> Any:
        if isinstance(value, cls):
            return value
        for member in cls:
            if member.value.lower() == str(value).lower():
                return member
        choices = ", ".join(m.value for m in cls)
        raise RegistryError(f"unknown {cls.__name__} {value!r}; expected one of: {choices}")


class ApprovalStatus(_StrEnum):
    """SageMaker's ``ModelApprovalStatus``."""

    PENDING = "PendingManualApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"


class Stage(_StrEnum):
    """The lifecycle stage (SageMaker's ``ModelLifeCycle.Stage``)."""

    STAGING = "Staging"
    PROD = "Prod"
    ARCHIVED = "Archived"


class Action(_StrEnum):
    """What a history event records."""

    REGISTERED = "registered"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"  # moved out of Prod because another version was approved


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime) -> str:
    """``2024-05-01T12:00:00.123456Z``: the one timestamp format of the registry (storage and JSON)."""
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def validate_group_name(name: str) -> str:
    """Return ``name`` if SageMaker would accept it as a model package group name, else raise."""
    if not isinstance(name, str) or not _GROUP_NAME.match(name):
        raise RegistryError(
            f"invalid model package group name {name!r}: use 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def validate_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryError(f"invalid model package version {version!r}: expected a positive integer")
    return version


def to_json(value: Any, what: str) -> str:
    """Serialize user data for storage; NaN, infinities and non-JSON types are refused here, not on read."""
    try:
        return json.dumps(_thaw(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} must be JSON-serializable (no NaN/inf): {exc}") from None


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelPackageGroup:
    """A named family of model versions (one per trained model line, e.g. ``slm-intents-snips``)."""

    name: str
    description: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "created_at": iso(self.created_at)}


@dataclass(frozen=True)
class ModelPackage:
    """One registered version. Mapping fields are read-only views; :meth:`to_dict` returns plain JSON data.

    Fields:
        group: the model package group name.
        version: 1, 2, 3 ... within the group.
        approval_status: :class:`ApprovalStatus`.
        stage: lifecycle stage (:class:`Stage`); ``stage_status`` and ``stage_description`` say how it got
            there (SageMaker's ``ModelLifeCycle.StageStatus`` / ``StageDescription``).
        metrics: evaluation metrics, e.g. ``{"fp32": {"macro_f1": ...}, "int8": {...}}``.
        lineage: data hash, code version (git commit), base model, parameters, run id.
        artifacts: artifact name -> URI (``model``, ``bundle``, ``bundle_zip``, ``evaluation``).
        description: free text given at registration.
        created_at, updated_at: UTC timestamps.
    """

    group: str
    version: int
    approval_status: ApprovalStatus
    stage: Stage
    stage_status: str
    stage_description: str
    metrics: Mapping[str, Any] = field(hash=False)
    lineage: Mapping[str, Any] = field(hash=False)
    artifacts: Mapping[str, str] = field(hash=False)
    description: str
    created_at: datetime
    updated_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "approval_status", ApprovalStatus.parse(self.approval_status))
        object.__setattr__(self, "stage", Stage.parse(self.stage))
        for name in ("metrics", "lineage", "artifacts"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))

    @property
    def ref(self) -> str:
        """``group/version``, the human-readable identity (SageMaker ARNs end the same way)."""
        return f"{self.group}/{self.version}"

    @property
    def macro_f1(self) -> float | None:
        """The headline score: INT8 macro-F1 (what ships to the device), else FP32, else a top-level one."""
        for section in ("int8", "fp32"):
            sub = self.metrics.get(section)
            if isinstance(sub, Mapping) and _is_number(sub.get("macro_f1")):
                return float(sub["macro_f1"])
        top = self.metrics.get("macro_f1")
        return float(top) if _is_number(top) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "version": self.version,
            "approval_status": self.approval_status.value,
            "stage": self.stage.value,
            "stage_status": self.stage_status,
            "stage_description": self.stage_description,
            "metrics": _thaw(self.metrics),
            "lineage": _thaw(self.lineage),
            "artifacts": _thaw(self.artifacts),
            "description": self.description,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class HistoryEvent:
    """One entry of a version's audit trail: who moved it from which status/stage to which, when and why."""

    group: str
    version: int
    at: datetime
    action: Action
    by: str | None
    from_status: ApprovalStatus | None
    to_status: ApprovalStatus
    from_stage: Stage | None
    to_stage: Stage
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", Action.parse(self.action))
        object.__setattr__(self, "to_status", ApprovalStatus.parse(self.to_status))
        object.__setattr__(self, "to_stage", Stage.parse(self.to_stage))
        if self.from_status is not None:
            object.__setattr__(self, "from_status", ApprovalStatus.parse(self.from_status))
        if self.from_stage is not None:
            object.__setattr__(self, "from_stage", Stage.parse(self.from_stage))

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "version": self.version,
            "at": iso(self.at),
            "action": self.action.value,
            "by": self.by,
            "from_status": self.from_status.value if self.from_status else None,
            "to_status": self.to_status.value,
            "from_stage": self.from_stage.value if self.from_stage else None,
            "to_stage": self.to_stage.value,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Transition:
    """What an approve/reject does to a version (computed by :func:`plan_transition`)."""

    action: Action
    to_status: ApprovalStatus
    to_stage: Stage
    stage_status: str
    enters_prod: bool  # the group's current Prod version (if another) must be archived first


def plan_transition(package: ModelPackage, target: ApprovalStatus | str, by: str, reason: str) -> Transition:
    """Check that ``package`` may move to ``target`` and say how; raise :class:`RegistryError` if not."""
    target = ApprovalStatus.parse(target)
    if not isinstance(by, str) or not by.strip():
        raise RegistryError(f"{package.ref}: who approves or rejects must be given (by=...)")
    if not isinstance(reason, str) or not reason.strip():
        raise RegistryError(f"{package.ref}: a reason must be given")
    if target is ApprovalStatus.APPROVED:
        if package.approval_status is ApprovalStatus.APPROVED and package.stage is Stage.PROD:
            raise RegistryError(f"{package.ref} is already Approved and in Prod")
        return Transition(Action.APPROVED, ApprovalStatus.APPROVED, Stage.PROD, "Approved", enters_prod=True)
    if target is ApprovalStatus.REJECTED:
        if package.approval_status is ApprovalStatus.REJECTED:
            raise RegistryError(f"{package.ref} is already Rejected")
        return Transition(Action.REJECTED, ApprovalStatus.REJECTED, Stage.ARCHIVED, "Rejected", enters_prod=False)
    raise RegistryError(
        f"{package.ref}: cannot move back to {target.value}; register a new version instead"
    )


def check_artifacts(artifacts: Any) -> None:
    """Artifacts of a version map names to URI strings; anything else is a :class:`RegistryError`."""
    if not isinstance(artifacts, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in artifacts.items()):
        raise RegistryError("artifacts must map names to URI strings")


def initial_state(approval_status: ApprovalStatus | str, stage: Stage | str | None) -> tuple[ApprovalStatus, Stage]:
    """Status and stage of a new version; ``stage=None`` derives it (Pending -> Staging, Approved -> Prod,
    Rejected -> Archived)."""
    status = ApprovalStatus.parse(approval_status)
    if stage is None:
        derived = {ApprovalStatus.PENDING: Stage.STAGING, ApprovalStatus.APPROVED: Stage.PROD,
                   ApprovalStatus.REJECTED: Stage.ARCHIVED}
        return status, derived[status]
    stage = Stage.parse(stage)
    if stage is Stage.PROD and status is not ApprovalStatus.APPROVED:
        raise RegistryError(f"only Approved versions can be in Prod, not {status.value}")
    return status, stage


class ModelRegistry(abc.ABC):
    """A model registry backend. Use it as a context manager; any call after :meth:`close` raises.

    Example::

        with open_registry(store=".store") as reg:
            pkg = reg.register("slm-intents-snips", metrics, lineage, {"bundle": "file:///..."})
            reg.approve(pkg.group, pkg.version, "alice", "F1 above gate, reviewed confusion matrix")
    """

    backend: str = ""

    # groups ---------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_group(self, name: str, description: str = "", *, exist_ok: bool = True) -> ModelPackageGroup:
        """Create a group (or return the existing one when ``exist_ok``)."""

    @abc.abstractmethod
    def get_group(self, name: str) -> ModelPackageGroup:
        """The group ``name``; :class:`RegistryError` if unknown."""

    @abc.abstractmethod
    def list_groups(self) -> list[ModelPackageGroup]:
        """All groups, by name."""

    # versions -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def register(
        self,
        group: str,
        metrics: Mapping[str, Any],
        lineage: Mapping[str, Any],
        artifacts: Mapping[str, str],
        *,
        description: str = "",
        approval_status: ApprovalStatus | str = ApprovalStatus.PENDING,
        stage: Stage | str | None = None,
        registered_by: str | None = None,
    ) -> ModelPackage:
        """Add the next version to ``group`` (created if missing). New versions enter as
        ``PendingManualApproval`` / ``Staging``; registering straight into ``Approved`` puts it in Prod."""

    @abc.abstractmethod
    def get(self, group: str, version: int) -> ModelPackage:
        """One version; :class:`RegistryError` if the group or version is unknown."""

    @abc.abstractmethod
    def list_versions(
        self, group: str, status: ApprovalStatus | str | None = None, stage: Stage | str | None = None
    ) -> list[ModelPackage]:
        """The group's versions, oldest first, optionally filtered by approval status and stage."""

    def latest(
        self, group: str, status: ApprovalStatus | str | None = None, stage: Stage | str | None = None
    ) -> ModelPackage | None:
        """The highest version matching the filters, or ``None``; ``latest(g, stage="Prod")`` is what serves."""
        versions = self.list_versions(group, status=status, stage=stage)
        return versions[-1] if versions else None

    @abc.abstractmethod
    def history(self, group: str, version: int) -> list[HistoryEvent]:
        """The version's audit trail, oldest first (registration included)."""

    @abc.abstractmethod
    def add_artifacts(self, group: str, version: int, artifacts: Mapping[str, str]) -> ModelPackage:
        """Add (or replace) artifact URIs of a version, e.g. the edge bundle written after registration.

        SageMaker: ``update_model_package(CustomerMetadataProperties=...)``.
        """

    # approval -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def approve(self, group: str, version: int, approved_by: str, reason: str) -> ModelPackage:
        """Move a version to ``Approved`` + ``Prod``; the previous Prod version is archived."""

    @abc.abstractmethod
    def reject(self, group: str, version: int, rejected_by: str, reason: str) -> ModelPackage:
        """Move a version to ``Rejected`` + ``Archived``."""

    # resource -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources; idempotent."""

    def __enter__(self) -> "ModelRegistry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
