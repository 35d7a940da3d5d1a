"""The SageMaker Model Registry backend: :class:`ModelRegistry` on model package groups and versions.

The mapping onto the SageMaker API is drawn in :mod:`cloud.registry.base`; the rules (what approve and reject
do, the single Prod version) are :func:`~cloud.registry.base.plan_transition`'s, as for the local backend.

Where each field lives in SageMaker:

- approval status: ``ModelApprovalStatus``; stage: ``ModelLifeCycle`` (``Stage``, ``StageStatus``,
  ``StageDescription``); the reason of the last decision also goes to ``ApprovalDescription``.
- metrics, lineage and artifact URIs: ``CustomerMetadataProperties``, one key per value with dotted names
  (``metrics.int8.macro_f1``, ``lineage.run_id``, ``artifacts.bundle``), which is also what the SageMaker
  pipeline's register step writes, so versions registered there read the same way. A value longer than
  SageMaker's 256 characters is stored as ``sha256:<hex>`` of its JSON (the full document lives with the run).
- history: SageMaker keeps none, so each event is one ``history.NNN`` key (the newest
  :data:`MAX_HISTORY` are kept); a version without such keys gets its registration event from ``CreationTime``.
- the model artifact (``artifacts["model"]``) becomes the ``InferenceSpecification`` when an inference image
  is configured, and ``artifacts["evaluation"]`` (a directory with ``metrics.json``) the ``ModelMetrics``.

Example::

    with open_registry("sagemaker", region="eu-west-1") as reg:
        for pkg in reg.list_versions("slm-intents-snips", status="PendingManualApproval"):
            print(pkg.ref, pkg.macro_f1)
        reg.approve("slm-intents-snips", 3, "alice", "reviewed the evaluation report")
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from ..errors import RegistryCallFailed, RegistryError
from .base import (
    Action,
    ApprovalStatus,
    HistoryEvent,
    ModelPackage,
    ModelPackageGroup,
    ModelRegistry,
    Stage,
    check_artifacts,
    initial_state,
    iso,
    parse_iso,
    plan_transition,
    utcnow,
    validate_group_name,
    validate_version,
)

__all__ = ["SageMakerRegistry", "MAX_HISTORY", "flatten_properties", "unflatten_properties"]

#: SageMaker's limits on CustomerMetadataProperties.
MAX_PROPERTIES = 50
MAX_VALUE_CHARS = 256
MAX_KEY_CHARS = 128
#: History events kept per version (older ones are dropped first; the registration event stays).
MAX_HISTORY = 12
_SECTIONS = ("metrics", "lineage", "artifacts")
_HISTORY = "history."


# --------------------------------------------------------------------------------------------------- encoding
def _encode_value(value: Any) -> str:
    """A property value: strings as they are (unless they would read back as another type), else JSON."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            text = value
        else:
            text = json.dumps(value)
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    if len(text) > MAX_VALUE_CHARS:
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        text = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    return text


def _decode_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def flatten_properties(section: str, data: Mapping[str, Any], *, depth: int = 3) -> dict[str, str]:
    """``flatten_properties("metrics", {"int8": {"macro_f1": 0.98}})`` -> ``{"metrics.int8.macro_f1": "0.98"}``.

    Mappings are followed ``depth`` levels deep; other values (and deeper mappings) are JSON-encoded.
    """
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any, level: int) -> None:
        if isinstance(value, Mapping) and value and level < depth:
            for k, v in value.items():
                walk(f"{prefix}.{k}", v, level + 1)
        else:
            if len(prefix) > MAX_KEY_CHARS:
                raise RegistryError(f"metadata key {prefix[:40]}... is longer than {MAX_KEY_CHARS} characters")
            try:
                out[prefix] = _encode_value(value)
            except (TypeError, ValueError) as exc:
                raise RegistryError(f"{prefix} must be JSON-serializable (no NaN/inf): {exc}") from None

    if not isinstance(data, Mapping):
        raise RegistryError(f"{section} must be a mapping, got {type(data).__name__}")
    for key, value in data.items():
        walk(f"{section}.{key}", value, 1)
    return out


def unflatten_properties(section: str, props: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of :func:`flatten_properties` for one section (``metrics.int8.macro_f1`` -> nested dicts)."""
    out: dict[str, Any] = {}
    prefix = section + "."
    for key in sorted(props):
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = _decode_value(props[key])
    return out


def _event_to_property(event: HistoryEvent) -> str:
    record = {"t": iso(event.at), "a": event.action.value, "b": event.by,
              "fs": event.from_status.value if event.from_status else None, "ts": event.to_status.value,
              "fg": event.from_stage.value if event.from_stage else None, "tg": event.to_stage.value, "r": ""}
    room = MAX_VALUE_CHARS - len(json.dumps(record, separators=(",", ":")))
    reason = event.reason[: max(room, 0)]
    while reason and len(json.dumps(reason)) - 2 > room:  # escapes take room too: shorten until it fits
        reason = reason[:-1]
    record["r"] = reason
    return json.dumps(record, separators=(",", ":"))


def _event_from_property(group: str, version: int, text: str) -> HistoryEvent | None:
    try:
        r = json.loads(text)
        return HistoryEvent(group=group, version=version, at=parse_iso(r["t"]), action=r["a"], by=r.get("b"),
                            from_status=r.get("fs"), to_status=r["ts"], from_stage=r.get("fg"),
                            to_stage=r["tg"], reason=r.get("r", ""))
    except (ValueError, KeyError, TypeError, RegistryError):
        return None  # not ours: a property someone else named history.*


# --------------------------------------------------------------------------------------------------- backend
class SageMakerRegistry(ModelRegistry):
    """The registry on the SageMaker Model Registry of one account and region.

    Args:
        client: a boto3 ``sagemaker`` client (tests pass a moto or stubbed one); default: one for ``region``.
        region: the AWS region (default: the AWS configuration chain).
        inference_image: container image recorded in the ``InferenceSpecification`` of versions registered
            here; without it, versions are registered without one (the edge bundle is the deployable).
        clock: the time source for history events.
    """

    backend = "sagemaker"

    def __init__(self, *, client: Any = None, region: str | None = None, inference_image: str | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        if client is None:
            from ..aws.clients import make_client
            from ..aws.errors import AwsError

            try:
                client = make_client("sagemaker", region=region)
            except AwsError as exc:
                raise RegistryError(str(exc)) from None
        self._client = client
        self._inference_image = inference_image
        self._clock = clock
        self._closed = False
        self._lock = threading.Lock()
        self._group_arns: dict[str, str] = {}

    # plumbing -------------------------------------------------------------------------------------------
    def _api(self, operation: str, **kwargs: Any) -> Any:
        if self._closed:
            raise RegistryError("the SageMaker registry is closed")
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise RegistryCallFailed(operation, str(err.get("Code", "")), str(err.get("Message", exc))) from None
        except BotoCoreError as exc:
            raise RegistryError(f"SageMaker {operation} failed: {exc}") from None

    def _paginate(self, operation: str, key: str, **kwargs: Any) -> Iterable[dict[str, Any]]:
        while True:
            page = self._api(operation, **kwargs)
            yield from page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return
            kwargs["NextToken"] = token

    def close(self) -> None:
        self._closed = True

    # groups ---------------------------------------------------------------------------------------------
    def _describe_group(self, name: str) -> dict[str, Any] | None:
        try:
            desc = self._api("describe_model_package_group", ModelPackageGroupName=name)
        except RegistryCallFailed as exc:
            if exc.code == "ValidationException" or exc.code == "ResourceNotFound":
                return None
            raise
        self._group_arns[name] = desc["ModelPackageGroupArn"]
        return desc

    def create_group(self, name: str, description: str = "", *, exist_ok: bool = True) -> ModelPackageGroup:
        validate_group_name(name)
        existing = self._describe_group(name)
        if existing is not None:
            if not exist_ok:
                raise RegistryError(f"model package group {name!r} already exists")
            return _group(existing)
        self._api("create_model_package_group", ModelPackageGroupName=name,
                  ModelPackageGroupDescription=description or name)
        created = self._describe_group(name)
        if created is None:
            raise RegistryError(f"model package group {name!r} was created but cannot be described")
        return _group(created)

    def get_group(self, name: str) -> ModelPackageGroup:
        desc = self._describe_group(name)
        if desc is None:
            raise RegistryError(f"unknown model package group {name!r}")
        return _group(desc)

    def list_groups(self) -> list[ModelPackageGroup]:
        rows = self._paginate("list_model_package_groups", "ModelPackageGroupSummaryList", SortBy="Name",
                              SortOrder="Ascending")
        return sorted((_group(r) for r in rows), key=lambda g: g.name)

    def _group_arn(self, group: str) -> str:
        if group not in self._group_arns and self._describe_group(group) is None:
            raise RegistryError(f"unknown model package group {group!r}")
        return self._group_arns[group]

    def _package_arn(self, group: str, version: int) -> str:
        # arn:...:model-package-group/<name> -> arn:...:model-package/<name, lower-cased as SageMaker does>/<v>
        head, _, name = self._group_arn(group).rpartition(":model-package-group/")
        return f"{head}:model-package/{name.lower()}/{version}"

    # versions -------------------------------------------------------------------------------------------
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
        validate_group_name(group)
        status, stage = initial_state(approval_status, stage)
        check_artifacts(artifacts)
        now = self._clock()
        event = HistoryEvent(group=group, version=1, at=now, action=Action.REGISTERED, by=registered_by,
                             from_status=None, to_status=status, from_stage=None, to_stage=stage,
                             reason=description or "registered")
        props = {**flatten_properties("metrics", metrics), **flatten_properties("lineage", lineage),
                 **flatten_properties("artifacts", artifacts), f"{_HISTORY}000": _event_to_property(event)}
        _check_budget(props)
        self.create_group(group)
        request: dict[str, Any] = {
            "ModelPackageGroupName": group,
            "ModelPackageDescription": (description or "")[:1024],
            "ModelApprovalStatus": status.value,
            "ModelLifeCycle": {"Stage": stage.value, "StageStatus": "Registered",
                               "StageDescription": (description or "registered")[:1024]},
            "CustomerMetadataProperties": props,
        }
        model_uri = artifacts.get("model", "")
        if self._inference_image and model_uri.startswith("s3://"):
            request["InferenceSpecification"] = {
                "Containers": [{"Image": self._inference_image, "ModelDataUrl": model_uri}],
                "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}
        evaluation = artifacts.get("evaluation", "")
        if evaluation.startswith("s3://"):
            request["ModelMetrics"] = {"ModelQuality": {"Statistics": {
                "ContentType": "application/json", "S3Uri": evaluation.rstrip("/") + "/metrics.json"}}}
        code_version = lineage.get("code_version")
        if isinstance(code_version, str) and code_version:
            request["MetadataProperties"] = {"CommitId": code_version[:1024]}
        with self._lock:
            arn = self._api("create_model_package", **request)["ModelPackageArn"]
            version = _version_of(arn)
            if stage is Stage.PROD:
                self._archive_prod(group, version, registered_by, now)
        return self.get(group, version)

    def get(self, group: str, version: int) -> ModelPackage:
        return _package(self.describe(group, version))

    def describe(self, group: str, version: int) -> dict[str, Any]:
        """The raw DescribeModelPackage answer of one version (the registry knows how its ARN is spelled)."""
        validate_version(version)
        arn = self._package_arn(group, version)
        try:
            return self._api("describe_model_package", ModelPackageName=arn)
        except RegistryCallFailed as exc:
            if exc.code in ("ValidationException", "ResourceNotFound"):
                raise RegistryError(f"unknown model package version {group}/{version}") from None
            raise

    def list_versions(
        self, group: str, status: ApprovalStatus | str | None = None, stage: Stage | str | None = None
    ) -> list[ModelPackage]:
        self._group_arn(group)
        query: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime", "SortOrder": "Ascending"}
        if status is not None:
            query["ModelApprovalStatus"] = ApprovalStatus.parse(status).value
        wanted = Stage.parse(stage) if stage is not None else None
        packages = []
        for summary in self._paginate("list_model_packages", "ModelPackageSummaryList", **query):
            pkg = _package(self._api("describe_model_package", ModelPackageName=summary["ModelPackageArn"]))
            if wanted is None or pkg.stage is wanted:
                packages.append(pkg)
        return sorted(packages, key=lambda p: p.version)

    def history(self, group: str, version: int) -> list[HistoryEvent]:
        return _history(self.describe(group, version))

    def add_artifacts(self, group: str, version: int, artifacts: Mapping[str, str]) -> ModelPackage:
        check_artifacts(artifacts)
        with self._lock:
            desc = self.describe(group, version)
            props = {**desc.get("CustomerMetadataProperties", {}), **flatten_properties("artifacts", artifacts)}
            _check_budget(props)
            self._api("update_model_package", ModelPackageArn=desc["ModelPackageArn"],
                      CustomerMetadataProperties=props)
        return self.get(group, version)

    # approval -------------------------------------------------------------------------------------------
    def approve(self, group: str, version: int, approved_by: str, reason: str) -> ModelPackage:
        return self._transition(group, version, ApprovalStatus.APPROVED, approved_by, reason)

    def reject(self, group: str, version: int, rejected_by: str, reason: str) -> ModelPackage:
        return self._transition(group, version, ApprovalStatus.REJECTED, rejected_by, reason)

    def _transition(self, group: str, version: int, target: ApprovalStatus, by: str, reason: str) -> ModelPackage:
        with self._lock:
            desc = self.describe(group, version)
            current = _package(desc)
            plan = plan_transition(current, target, by, reason)
            now = self._clock()
            if plan.enters_prod:
                self._archive_prod(group, version, by, now)
            event = HistoryEvent(group=group, version=version, at=now, action=plan.action, by=by,
                                 from_status=current.approval_status, to_status=plan.to_status,
                                 from_stage=current.stage, to_stage=plan.to_stage, reason=reason)
            self._update_state(desc, plan.to_status, plan.to_stage, plan.stage_status, reason, event)
        return self.get(group, version)

    def _update_state(self, desc: Mapping[str, Any], status: ApprovalStatus, stage: Stage, stage_status: str,
                      reason: str, event: HistoryEvent) -> None:
        props = _append_history(dict(desc.get("CustomerMetadataProperties", {})), event)
        self._api("update_model_package", ModelPackageArn=desc["ModelPackageArn"], ModelApprovalStatus=status.value,
                  ApprovalDescription=reason[:1024],
                  ModelLifeCycle={"Stage": stage.value, "StageStatus": stage_status,
                                  "StageDescription": reason[:1024]},
                  CustomerMetadataProperties=props)

    def _archive_prod(self, group: str, new_version: int, by: str | None, now: datetime) -> None:
        """Move the group's Prod version (if any other than ``new_version``) to Archived / Superseded."""
        why = f"superseded by version {new_version}"
        query = {"ModelPackageGroupName": group, "ModelApprovalStatus": ApprovalStatus.APPROVED.value}
        for summary in self._paginate("list_model_packages", "ModelPackageSummaryList", **query):
            desc = self._api("describe_model_package", ModelPackageName=summary["ModelPackageArn"])
            old = _package(desc)
            if old.version == new_version or old.stage is not Stage.PROD:
                continue
            event = HistoryEvent(group=group, version=old.version, at=now, action=Action.SUPERSEDED, by=by,
                                 from_status=old.approval_status, to_status=old.approval_status,
                                 from_stage=Stage.PROD, to_stage=Stage.ARCHIVED, reason=why)
            self._update_state(desc, old.approval_status, Stage.ARCHIVED, "Superseded", why, event)


# --------------------------------------------------------------------------------------------------- reading
def _check_budget(props: Mapping[str, str]) -> None:
    history = sum(1 for k in props if k.startswith(_HISTORY))
    others = len(props) - history
    if others + MAX_HISTORY > MAX_PROPERTIES:
        raise RegistryError(
            f"{others} metric/lineage/artifact values do not fit SageMaker's {MAX_PROPERTIES} "
            f"CustomerMetadataProperties (with room for {MAX_HISTORY} history events); register fewer, "
            "e.g. summary metrics, and keep the full documents with the run's artifacts"
        )


def _append_history(props: dict[str, str], event: HistoryEvent) -> dict[str, str]:
    keys = sorted(k for k in props if k.startswith(_HISTORY))
    numbers = [int(k[len(_HISTORY):]) for k in keys if k[len(_HISTORY):].isdigit()]
    props[f"{_HISTORY}{(max(numbers) + 1 if numbers else 0):03d}"] = _event_to_property(event)
    keys = sorted((k for k in props if k.startswith(_HISTORY)), key=lambda k: (len(k), k))
    while len(keys) > MAX_HISTORY:  # drop the oldest after the registration event
        props.pop(keys.pop(1))
    return props


def _version_of(arn: str) -> int:
    try:
        return int(arn.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        raise RegistryError(f"not a versioned model package ARN: {arn}") from None


def _group(desc: Mapping[str, Any]) -> ModelPackageGroup:
    return ModelPackageGroup(name=desc["ModelPackageGroupName"],
                             description=desc.get("ModelPackageGroupDescription", "") or "",
                             created_at=_when(desc.get("CreationTime")))


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=utcnow().tzinfo)
    if isinstance(value, str):
        return parse_iso(value)
    return utcnow()


def _history(desc: Mapping[str, Any]) -> list[HistoryEvent]:
    group, version = desc["ModelPackageGroupName"], int(desc["ModelPackageVersion"])
    props = desc.get("CustomerMetadataProperties", {}) or {}
    keys = sorted((k for k in props if k.startswith(_HISTORY)), key=lambda k: (len(k), k))
    events = [e for e in (_event_from_property(group, version, props[k]) for k in keys) if e is not None]
    if not events or events[0].action is not Action.REGISTERED:
        # Registered elsewhere (e.g. by the SageMaker pipeline's register step): SageMaker itself tells
        # when and by whom; the state it entered is the current one when nothing happened since.
        if events:
            status, stage = ApprovalStatus.PENDING, Stage.STAGING
        else:
            status = ApprovalStatus.parse(desc.get("ModelApprovalStatus", "PendingManualApproval"))
            stage = _stage_or_none((desc.get("ModelLifeCycle") or {}).get("Stage")) or initial_state(status, None)[1]
        events.insert(0, HistoryEvent(group=group, version=version, at=_when(desc.get("CreationTime")),
                                      action=Action.REGISTERED, by=(desc.get("CreatedBy") or {}).get("UserProfileName"),
                                      from_status=None, to_status=status, from_stage=None, to_stage=stage,
                                      reason=desc.get("ModelPackageDescription") or "registered"))
    return events


def _stage_or_none(value: Any) -> Stage | None:
    try:
        return Stage.parse(value) if value else None
    except RegistryError:
        return None


def _package(desc: Mapping[str, Any]) -> ModelPackage:
    props = desc.get("CustomerMetadataProperties", {}) or {}
    status = ApprovalStatus.parse(desc.get("ModelApprovalStatus", "PendingManualApproval"))
    lifecycle = desc.get("ModelLifeCycle") or {}
    events = _history(desc)
    stage = _stage_or_none(lifecycle.get("Stage")) or events[-1].to_stage
    stage_status = lifecycle.get("StageStatus") or _stage_status(events[-1])
    stage_description = lifecycle.get("StageDescription") or desc.get("ApprovalDescription") or (
        events[-1].reason if len(events) > 1 else "")
    artifacts = unflatten_properties("artifacts", props)
    containers = (desc.get("InferenceSpecification") or {}).get("Containers") or []
    if "model" not in artifacts and containers and isinstance(containers[0].get("ModelDataUrl"), str):
        artifacts["model"] = containers[0]["ModelDataUrl"]
    stats = ((desc.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}
    if "evaluation" not in artifacts and isinstance(stats.get("S3Uri"), str):
        artifacts["evaluation"] = stats["S3Uri"].rsplit("/", 1)[0]
    artifacts = {k: v if isinstance(v, str) else json.dumps(v) for k, v in artifacts.items()}
    created = _when(desc.get("CreationTime"))
    return ModelPackage(
        group=desc["ModelPackageGroupName"],
        version=int(desc["ModelPackageVersion"]),
        approval_status=status,
        stage=stage,
        stage_status=str(stage_status),
        stage_description=str(stage_description),
        metrics=unflatten_properties("metrics", props),
        lineage=unflatten_properties("lineage", props),
        artifacts=artifacts,
        description=desc.get("ModelPackageDescription", "") or "",
        created_at=created,
        updated_at=_when(desc.get("LastModifiedTime")) if desc.get("LastModifiedTime") else created,
    )


def _stage_status(event: HistoryEvent) -> str:
    return {Action.REGISTERED: "Registered", Action.APPROVED: "Approved", Action.REJECTED: "Rejected",
            Action.SUPERSEDED: "Superseded"}[event.action]
