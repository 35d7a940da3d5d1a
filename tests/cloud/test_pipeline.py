"""The main job end to end on a tiny model and data set: success, caching, and every way it must stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from cloud.pipeline import main  # noqa: E402
from edge_runtime import Bundle, IntentClassifier  # noqa: E402
from tests.cloud.conftest import make_params, write_tiny_csv  # noqa: E402
from tests.conftest import LABELS  # noqa: E402


def _run(tmp_path: Path, data: Path, params: Path, store: Path) -> tuple[int, dict]:
    summary_path = tmp_path / "summary.json"
    rc = main(["run", "--params", str(params), "--data", str(data), "--store", str(store),
               "--summary-json", str(summary_path), "--no-progress"])
    return rc, json.loads(summary_path.read_text())


def _registry_rows(store: Path) -> list:
    from cloud.registry import open_registry

    path = store / "slm-intents" / "registry.sqlite"
    if not path.exists():
        return []
    with open_registry("local", path=path) as reg:
        return [v for g in reg.list_groups() for v in reg.list_versions(g.name)]


@pytest.fixture(scope="module")
def first_run(tiny_base_model, tiny_csv, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    params = make_params(tmp, tiny_base_model)
    store = tmp / "store"
    rc, summary = _run(tmp, tiny_csv, params, store)
    return tmp, params, store, rc, summary


def test_a_run_registers_an_evaluated_compiled_bundle(first_run, capsys):
    tmp, _, store, rc, summary = first_run
    assert rc == 0, summary.get("error")
    # The summary JSON of contract 3
    assert summary["status"] == "succeeded" and summary["run_id"]
    for model in ("fp32", "int8"):
        assert set(summary["metrics"][model]) == {"accuracy", "macro_f1"}
    assert 0.0 <= summary["metrics"]["agreement"] <= 1.0
    assert summary["registry"] == {"backend": "local", "group": "slm-intents-snips", "version": 1,
                                   "approval_status": "PendingManualApproval", "stage": "Staging"}
    assert json.loads((store / "last-run.json").read_text())["run_id"] == summary["run_id"]
    # The store layout of contract 2
    base = store / "slm-intents"
    assert {p.name for p in (base / "processed").glob("*.csv")} == {"train.csv", "val.csv", "test.csv"}
    evaluation = base / "evaluation" / summary["run_id"]
    for name in ("metrics.json", "confusion_matrix.png", "report.md"):
        assert (evaluation / name).is_file()
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert "ci95" in metrics["int8"] and set(metrics["int8"]["per_class"]) == set(LABELS)
    assert (base / "edge" / "1.zip").is_file()
    # The bundle: version = registry version, lineage and reference statistics, batch-independent answers
    bundle = Bundle.load(summary["bundle"])
    assert Path(summary["bundle"]) == base / "edge" / "1"
    m = bundle.manifest
    assert m.version == "1" and m.lineage["registry"]["version"] == 1 and m.lineage["data_hash"]
    assert m.metrics["int8"]["macro_f1"] == summary["metrics"]["int8"]["macro_f1"]
    assert abs(sum(m.reference["label_distribution"].values()) - 1.0) < 1e-6
    assert m.backends["onnxruntime"]["target"] == "linux_arm64"
    texts = [line.split(",")[0] for line in (base / "processed" / "test.csv").read_text().splitlines()[1:]]
    with IntentClassifier.from_bundle(bundle.root, threads=1) as clf:
        assert clf.predict_batch(texts) == [clf.predict(t) for t in texts]


def test_a_second_run_with_nothing_changed_is_served_from_the_cache(first_run):
    tmp, params, store, _, first = first_run
    rc, summary = _run(tmp, Path(first["steps"][0]["outputs"]["input"]), params, store)
    assert rc == 0
    statuses = {s["name"]: s["status"] for s in summary["steps"]}
    assert statuses == {"prepare": "cached", "validate": "cached", "train": "cached", "distill": "cached", "compile": "cached",
                        "evaluate": "cached", "gate": "ran", "register": "cached", "package": "cached"}
    assert summary["registry"]["version"] == 1 and len(_registry_rows(store)) == 1


def test_a_moved_store_named_from_another_directory_is_still_served_from_the_cache(first_run, tmp_path, monkeypatch):
    # Given the store copied elsewhere and named by a relative path from a different working directory
    import shutil

    tmp, params, store, _, first = first_run
    shutil.copytree(store, tmp_path / "moved" / "store")
    monkeypatch.chdir(tmp_path / "moved")
    rc, summary = _run(tmp_path, Path(first["steps"][0]["outputs"]["input"]), params, Path("store"))
    # Then no step runs again, and every output named is inside the copy
    assert rc == 0, summary.get("error")
    statuses = {s["name"]: s["status"] for s in summary["steps"]}
    assert all(statuses[name] == "cached" for name in ("train", "distill", "compile", "evaluate")), statuses
    model_dir = Path(next(s for s in summary["steps"] if s["name"] == "distill")["outputs"]["model_dir"])
    assert model_dir.resolve().is_relative_to((tmp_path / "moved" / "store").resolve())
    assert Bundle.load(summary["bundle"]).manifest.version == "1"


def test_approving_the_registered_version_promotes_it_to_prod(first_run, capsys):
    from cloud.registry.cli import main as registry_main

    _, _, store, _, _ = first_run
    assert registry_main(["--store", str(store), "approve", "slm-intents-snips", "1", "--by", "qa",
                          "--reason", "looks good"]) == 0
    capsys.readouterr()
    assert registry_main(["--store", str(store), "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["approval_status"], r["stage"]) for r in rows] == [(1, "Approved", "Prod")]
    assert rows[0]["lineage"]["data_hash"] and rows[0]["artifacts"]["bundle"].endswith("/edge/1")


def test_bad_data_stops_before_training_and_registers_nothing(tiny_base_model, tmp_path, capsys):
    # Given a CSV with an unknown label and an empty text
    data = write_tiny_csv(tmp_path / "bad.csv", per_label=30)
    with data.open("a", encoding="utf-8") as fh:
        fh.write("order a pizza with cheese,OrderPizza\n,PlayMusic\n")
    store = tmp_path / "store"
    rc, summary = _run(tmp_path, data, make_params(tmp_path, tiny_base_model), store)
    # Then the run fails at validation with a report naming the failures, and nothing is registered
    assert rc == 1 and summary["status"] == "failed"
    statuses = {s["name"]: s["status"] for s in summary["steps"]}
    assert statuses["validate"] == "failed" and statuses["train"] == "skipped"
    assert "OrderPizza" in summary["report"]
    assert _registry_rows(store) == []
    assert list((store / "slm-intents" / "validation").glob("*/data_docs/index.html"))
    assert "pipeline stopped" in capsys.readouterr().err


def test_a_model_below_the_gate_is_not_registered(tiny_base_model, tiny_csv, tmp_path):
    store = tmp_path / "store"
    # (a threshold above 1 is refused as out of range, so the model is kept from learning instead)
    params = make_params(tmp_path, tiny_base_model, **{"gate.min_macro_f1": 1.0, "train.learning_rate": 1e-7,
                                                       "compile.min_agreement": 0.0})
    rc, summary = _run(tmp_path, tiny_csv, params, store)
    assert rc == 1 and "quality gate failed" in summary["error"]
    assert {s["name"]: s["status"] for s in summary["steps"]}["register"] == "skipped"
    assert summary["metrics"]["int8"]["macro_f1"] < 1.01
    assert _registry_rows(store) == []


@pytest.mark.parametrize("breakage, message", [
    ("missing_split", "test"),
    ("latin1", "UTF-8"),
])
def test_unreadable_snips_data_stops_with_a_clear_message(tiny_base_model, tmp_path, breakage, message):
    root = tmp_path / "snips"
    for split in ("train", "valid", "test"):
        (root / split).mkdir(parents=True)
        (root / split / "seq.in").write_text("play jazz\nrate this book\n")
        (root / split / "label").write_text("PlayMusic\nRateBook\n")
    if breakage == "missing_split":
        for f in (root / "test").iterdir():
            f.unlink()
        (root / "test").rmdir()
    else:
        (root / "train" / "seq.in").write_bytes("play caf\xe9 music\nrate this book\n".encode("latin-1"))
    rc, summary = _run(tmp_path, root, make_params(tmp_path, tiny_base_model), tmp_path / "store")
    assert rc == 1 and message in summary["error"]
    assert _registry_rows(tmp_path / "store") == []
