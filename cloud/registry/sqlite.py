"""The local registry backend: one SQLite file (``Store(...).registry_db``).

Concurrency: every write is one ``BEGIN IMMEDIATE`` transaction, so two processes registering into the same
group serialize on the file lock and get distinct version numbers; a busy timeout makes the second writer wait
instead of failing. Version numbers come from a per-group counter, so they are never reused. The database
itself enforces the invariants too (only Approved versions in Prod, at most one Prod version per group).

``path=":memory:"`` gives a throw-away in-memory registry (the fake for tests of code that uses a registry).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import RegistryError
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
    to_json,
    utcnow,
    validate_group_name,
    validate_version,
)

__all__ = ["SqliteRegistry", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS model_package_groups (
        name         TEXT PRIMARY KEY,
        description  TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        last_version INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS model_packages (
        group_name        TEXT NOT NULL REFERENCES model_package_groups(name),
        version           INTEGER NOT NULL CHECK (version >= 1),
        approval_status   TEXT NOT NULL CHECK (approval_status IN ('PendingManualApproval', 'Approved', 'Rejected')),
        stage             TEXT NOT NULL CHECK (stage IN ('Staging', 'Prod', 'Archived')),
        stage_status      TEXT NOT NULL,
        stage_description TEXT NOT NULL,
        metrics           TEXT NOT NULL,
        lineage           TEXT NOT NULL,
        artifacts         TEXT NOT NULL,
        description       TEXT NOT NULL,
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL,
        PRIMARY KEY (group_name, version),
        CHECK (stage <> 'Prod' OR approval_status = 'Approved')
    )""",
    # "the Prod version" of a group is unique, whatever the code above the database does.
    "CREATE UNIQUE INDEX IF NOT EXISTS one_prod_per_group ON model_packages (group_name) WHERE stage = 'Prod'",
    """CREATE TABLE IF NOT EXISTS approval_history (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        group_name  TEXT NOT NULL,
        version     INTEGER NOT NULL,
        at          TEXT NOT NULL,
        action      TEXT NOT NULL,
        actor       TEXT,
        from_status TEXT,
        to_status   TEXT NOT NULL,
        from_stage  TEXT,
        to_stage    TEXT NOT NULL,
        reason      TEXT NOT NULL,
        FOREIGN KEY (group_name, version) REFERENCES model_packages (group_name, version)
    )""",
    "CREATE INDEX IF NOT EXISTS history_by_version ON approval_history (group_name, version)",
)

# Literal statements, the columns in the order _package() unpacks a row: nothing is ever formatted into SQL,
# every value is a ? parameter.
_INSERT_PACKAGE = (
    "INSERT INTO model_packages (group_name, version, approval_status, stage, stage_status, stage_description, "
    "metrics, lineage, artifacts, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_PACKAGES = (
    "SELECT group_name, version, approval_status, stage, stage_status, stage_description, metrics, lineage, "
    "artifacts, description, created_at, updated_at FROM model_packages WHERE group_name = ?"
)


class SqliteRegistry(ModelRegistry):
    """The registry in one SQLite file.

    Args:
        path: the database file (created with its parent directories unless ``create=False``), or ``":memory:"``.
        create: when false, a missing file is a :class:`RegistryError` instead of a new empty registry.
        timeout: seconds a writer waits for another writer's lock before giving up.
        clock: returns the current UTC time (tests pin it).

    One instance may be shared between threads (calls are serialized); processes each open their own.
    """

    backend = "local"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        timeout: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        memory = os.fspath(path) == ":memory:"
        self.path = Path(os.fspath(path)) if not memory else None
        try:
            if memory:
                target, uri = ":memory:", False
            elif create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                target, uri = os.fspath(self.path), False
            else:
                if not self.path.is_file():
                    raise RegistryError(f"no registry at {self.path}")
                target, uri = self.path.resolve().as_uri() + "?mode=rw", True
            # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE for writes).
            conn = sqlite3.connect(target, timeout=timeout, isolation_level=None, check_same_thread=False, uri=uri)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(f"cannot open registry {path}: {exc}") from None
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"<SqliteRegistry {self.path or ':memory:'} ({state})>"

    def __enter__(self) -> "SqliteRegistry":
        self._connection()
        return self

    # plumbing -------------------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RegistryError("the registry is closed")
        return self._conn

    @contextmanager
    def _transaction(self, mode: str) -> Iterator[sqlite3.Connection]:
        """One transaction; ``IMMEDIATE`` takes the write lock up front so read-then-write is atomic."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(f"BEGIN {mode}")
            except sqlite3.Error as exc:
                raise RegistryError(f"registry {self.path or ':memory:'} is unavailable: {exc}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise RegistryError(f"registry {self.path or ':memory:'}: {exc}") from None
            except BaseException:
                self._rollback(conn)
                raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite may already have rolled back on its own (e.g. disk full); a second ROLLBACK would mask the cause.
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _write(self) -> Any:
        return self._transaction("IMMEDIATE")

    def _read(self) -> Any:
        return self._transaction("DEFERRED")

    def _ensure_schema(self) -> None:
        try:
            with self._write() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise RegistryError(
                        f"registry {self.path} has schema version {row[0]}; this code reads version {SCHEMA_VERSION}"
                    )
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"{self.path} is not a usable registry database: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # groups ---------------------------------------------------------------------------------------------
    def create_group(self, name: str, description: str = "", *, exist_ok: bool = True) -> ModelPackageGroup:
        validate_group_name(name)
        with self._write() as conn:
            row = self._group_row(conn, name)
            if row is not None:
                if not exist_ok:
                    raise RegistryError(f"model package group {name!r} already exists")
                return _group(row)
            self._insert_group(conn, name, description, iso(self._clock()))
            return _group(self._group_row(conn, name))

    def get_group(self, name: str) -> ModelPackageGroup:
        with self._read() as conn:
            return _group(self._require_group(conn, name))

    def list_groups(self) -> list[ModelPackageGroup]:
        with self._read() as conn:
            rows = conn.execute("SELECT name, description, created_at FROM model_package_groups ORDER BY name")
            return [_group(r) for r in rows.fetchall()]

    @staticmethod
    def _group_row(conn: sqlite3.Connection, name: str) -> tuple | None:
        return conn.execute(
            "SELECT name, description, created_at FROM model_package_groups WHERE name = ?", (name,)
        ).fetchone()

    def _require_group(self, conn: sqlite3.Connection, name: str) -> tuple:
        row = self._group_row(conn, name)
        if row is None:
            raise RegistryError(f"unknown model package group {name!r}")
        return row

    @staticmethod
    def _insert_group(conn: sqlite3.Connection, name: str, description: str, now: str) -> None:
        conn.execute(
            "INSERT INTO model_package_groups (name, description, created_at) VALUES (?, ?, ?)",
            (name, description or "", now),
        )

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
        payload = (to_json(metrics, "metrics"), to_json(lineage, "lineage"), to_json(artifacts, "artifacts"))
        with self._write() as conn:
            now = iso(self._clock())
            if self._group_row(conn, group) is None:
                self._insert_group(conn, group, "", now)
            conn.execute(
                "UPDATE model_package_groups SET last_version = last_version + 1 WHERE name = ?", (group,)
            )
            (version,) = conn.execute(
                "SELECT last_version FROM model_package_groups WHERE name = ?", (group,)
            ).fetchone()
            if stage is Stage.PROD:
                self._archive_prod(conn, group, version, registered_by, now)
            conn.execute(
                _INSERT_PACKAGE,
                (group, version, status.value, stage.value, "Registered", "", *payload, description or "", now, now),
            )
            self._log(conn, group, version, now, Action.REGISTERED, registered_by, None, status, None, stage,
                      description or "registered")
            return self._require_package(conn, group, version)

    def get(self, group: str, version: int) -> ModelPackage:
        validate_version(version)
        with self._read() as conn:
            return self._require_package(conn, group, version)

    def list_versions(
        self, group: str, status: ApprovalStatus | str | None = None, stage: Stage | str | None = None
    ) -> list[ModelPackage]:
        query = _SELECT_PACKAGES
        params: list[Any] = [group]
        if status is not None:
            query += " AND approval_status = ?"
            params.append(ApprovalStatus.parse(status).value)
        if stage is not None:
            query += " AND stage = ?"
            params.append(Stage.parse(stage).value)
        with self._read() as conn:
            self._require_group(conn, group)
            return [_package(r) for r in conn.execute(query + " ORDER BY version", params).fetchall()]

    def history(self, group: str, version: int) -> list[HistoryEvent]:
        validate_version(version)
        with self._read() as conn:
            self._require_package(conn, group, version)
            rows = conn.execute(
                "SELECT group_name, version, at, action, actor, from_status, to_status, from_stage, to_stage, reason "
                "FROM approval_history WHERE group_name = ? AND version = ? ORDER BY id",
                (group, version),
            ).fetchall()
            return [_event(r) for r in rows]

    def _package_row(self, conn: sqlite3.Connection, group: str, version: int) -> tuple | None:
        return conn.execute(_SELECT_PACKAGES + " AND version = ?", (group, version)).fetchone()

    def _require_package(self, conn: sqlite3.Connection, group: str, version: int) -> ModelPackage:
        row = self._package_row(conn, group, version)
        if row is None:
            self._require_group(conn, group)
            raise RegistryError(f"unknown model package version {group}/{version}")
        return _package(row)

    def add_artifacts(self, group: str, version: int, artifacts: Mapping[str, str]) -> ModelPackage:
        validate_version(version)
        check_artifacts(artifacts)
        with self._write() as conn:
            current = self._require_package(conn, group, version)
            merged = {**current.to_dict()["artifacts"], **artifacts}
            conn.execute(
                "UPDATE model_packages SET artifacts = ?, updated_at = ? WHERE group_name = ? AND version = ?",
                (to_json(merged, "artifacts"), iso(self._clock()), group, version),
            )
            return self._require_package(conn, group, version)

    # approval -------------------------------------------------------------------------------------------
    def approve(self, group: str, version: int, approved_by: str, reason: str) -> ModelPackage:
        return self._transition(group, version, ApprovalStatus.APPROVED, approved_by, reason)

    def reject(self, group: str, version: int, rejected_by: str, reason: str) -> ModelPackage:
        return self._transition(group, version, ApprovalStatus.REJECTED, rejected_by, reason)

    def _transition(self, group: str, version: int, target: ApprovalStatus, by: str, reason: str) -> ModelPackage:
        validate_version(version)
        with self._write() as conn:
            current = self._require_package(conn, group, version)
            plan = plan_transition(current, target, by, reason)
            now = iso(self._clock())
            if plan.enters_prod:
                self._archive_prod(conn, group, version, by, now)
            conn.execute(
                "UPDATE model_packages SET approval_status = ?, stage = ?, stage_status = ?, stage_description = ?, "
                "updated_at = ? WHERE group_name = ? AND version = ?",
                (plan.to_status.value, plan.to_stage.value, plan.stage_status, reason, now, group, version),
            )
            self._log(conn, group, version, now, plan.action, by, current.approval_status, plan.to_status,
                      current.stage, plan.to_stage, reason)
            return self._require_package(conn, group, version)

    def _archive_prod(self, conn: sqlite3.Connection, group: str, new_version: int, by: str | None, now: str) -> None:
        """Move the group's current Prod version (if any, and not ``new_version``) to Archived."""
        row = conn.execute(
            "SELECT version, approval_status FROM model_packages WHERE group_name = ? AND stage = 'Prod' "
            "AND version <> ?",
            (group, new_version),
        ).fetchone()
        if row is None:
            return
        old_version, old_status = row
        why = f"superseded by version {new_version}"
        conn.execute(
            "UPDATE model_packages SET stage = 'Archived', stage_status = 'Superseded', stage_description = ?, "
            "updated_at = ? WHERE group_name = ? AND version = ?",
            (why, now, group, old_version),
        )
        self._log(conn, group, old_version, now, Action.SUPERSEDED, by, old_status, old_status, Stage.PROD,
                  Stage.ARCHIVED, why)

    @staticmethod
    def _log(
        conn: sqlite3.Connection, group: str, version: int, at: str, action: Action, by: str | None,
        from_status: ApprovalStatus | str | None, to_status: ApprovalStatus | str,
        from_stage: Stage | None, to_stage: Stage, reason: str,
    ) -> None:
        conn.execute(
            "INSERT INTO approval_history (group_name, version, at, action, actor, from_status, to_status, "
            "from_stage, to_stage, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (group, version, at, action.value, by, _value(from_status), _value(to_status), _value(from_stage),
             _value(to_stage), reason),
        )


def _value(member: Any) -> Any:
    return getattr(member, "value", member)


def _group(row: tuple) -> ModelPackageGroup:
    name, description, created_at = row
    return ModelPackageGroup(name=name, description=description, created_at=parse_iso(created_at))


def _package(row: tuple) -> ModelPackage:
    (group, version, status, stage, stage_status, stage_description, metrics, lineage, artifacts, description,
     created_at, updated_at) = row
    return ModelPackage(
        group=group,
        version=version,
        approval_status=status,
        stage=stage,
        stage_status=stage_status,
        stage_description=stage_description,
        metrics=json.loads(metrics),
        lineage=json.loads(lineage),
        artifacts=json.loads(artifacts),
        description=description,
        created_at=parse_iso(created_at),
        updated_at=parse_iso(updated_at),
    )


def _event(row: tuple) -> HistoryEvent:
    group, version, at, action, actor, from_status, to_status, from_stage, to_stage, reason = row
    return HistoryEvent(
        group=group,
        version=version,
        at=parse_iso(at),
        action=action,
        by=actor,
        from_status=from_status,
        to_status=to_status,
        from_stage=from_stage,
        to_stage=to_stage,
        reason=reason,
    )
