"""``cloud.params``: the params file becomes typed sections, and anything it does not accept stops the run first."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from cloud.errors import CloudError, ParamsError
from cloud.params import DEFAULT_PARAMS_PATH, Params, TrainParams, load_params, params_from_dict
from tests.conftest import REPO


def _raw() -> dict:
    return json.loads(DEFAULT_PARAMS_PATH.read_text())


def _keys_of_file(node: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in node.items():
        if k.startswith("_"):
            continue
        if isinstance(v, dict) and k != "split_ratios":
            out |= _keys_of_file(v, f"{prefix}{k}.")
        else:
            out.add(prefix + k)
    return out


def _keys_of_fields(cls, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out |= _keys_of_fields(type(default), f"{prefix}{f.name}.")
        else:
            out.add(prefix + f.name)
    return out


def test_the_shipped_file_loads_into_typed_frozen_sections():
    params = load_params()
    assert isinstance(params.train, TrainParams)
    assert params.train.epochs == _raw()["train"]["epochs"]
    assert params.compile.quantization.op_types == ("MatMul", "Gemm", "Gather")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.train.epochs = 1  # type: ignore[misc]
    assert params_from_dict(params.to_dict()) == params


def test_every_key_of_the_file_is_a_field_and_every_field_is_in_the_file():
    # Both directions: nothing in params.json is silently ignored, and no step reads a value the file does not show
    assert _keys_of_file(_raw()) == _keys_of_fields(Params)


def test_every_field_is_read_by_the_cloud_code():
    # A field that no code reads is a dead key (train.eval_every_epoch, data.max_words were such keys)
    sources = "\n".join(p.read_text() for p in (REPO / "cloud").rglob("*.py") if p.name != "params.py")
    unread = [key for key in sorted(_keys_of_fields(Params))
              if not re.search(rf"\.{re.escape(key.rsplit('.', 1)[-1])}\b", sources)]
    assert unread == []


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["train"].update(epochz=3), "unknown key train.epochz; known: base_model, batch_size, class_balance, ema_decay, epochs"),
    (lambda r: r.update(trian={}), "unknown key trian; known: "),
    (lambda r: r["compile"]["quantization"].update(sheme="static"), "unknown key compile.quantization.sheme"),
    (lambda r: r["train"].update(epochs="4"), "train.epochs must be an integer, got '4'"),
    (lambda r: r["train"].update(epochs=2.5), "train.epochs must be an integer, got 2.5"),
    (lambda r: r["compile"]["quantization"].update(per_channel=1), "per_channel must be true or false, got 1"),
    (lambda r: r["train"].update(epochs=0), "train.epochs = 0 is out of range; accepted: [1, 1000]"),
    (lambda r: r["gate"].update(min_macro_f1=1.5), "gate.min_macro_f1 = 1.5 is out of range; accepted: [0, 1]"),
    (lambda r: r["train"].update(pooling="max"), "train.pooling = 'max' is not accepted; choose one of: cls, mean"),
    (lambda r: r["data"].update(split_ratios={"train": 0.9, "dev": 0.1}), "data.split_ratios"),
    (lambda r: r.update(labels=["A", "A"]), "labels must be unique"),
    (lambda r: r.update(labels="PlayMusic"), "labels must be a list of strings"),
])
def test_a_bad_key_type_or_value_names_the_key_and_what_is_accepted(tmp_path, mutate, message):
    # Given a params file with one mistake
    raw = _raw()
    mutate(raw)
    path = tmp_path / "params.json"
    path.write_text(json.dumps(raw))
    # When it is loaded, Then the error names the file, the key and the accepted keys or range
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert isinstance(err.value, CloudError)


def test_override_is_checked_like_the_file():
    params = load_params()
    assert params.override({"train.threads": 8}).train.threads == 8
    assert params.train.threads == _raw()["train"]["threads"], "the original is unchanged"
    with pytest.raises(ParamsError, match="train.threads = 0 is out of range"):
        params.override({"train.threads": 0})
    with pytest.raises(ParamsError, match="unknown key train.thread"):
        params.override({"train.thread": 8})


def test_the_pipeline_stops_before_any_step_on_a_misspelt_key(tmp_path):
    raw = _raw()
    raw["train"]["epochz"] = 3
    (tmp_path / "p.json").write_text(json.dumps(raw))
    done = subprocess.run([sys.executable, "-m", "cloud.pipeline", "run", "--params", str(tmp_path / "p.json"),
                           "--data", str(tmp_path / "none.csv"), "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert "unknown key train.epochz; known:" in done.stderr
    assert not (tmp_path / "store").exists(), "no step ran"


def test_init_writes_a_params_file_for_the_data_and_reports_what_it_found(tmp_path):
    # Given a small directory of CSV files with other column names, a rare class and a label only in test
    from tests.cloud.test_data import utterances, write_csv

    root = tmp_path / "mine"
    root.mkdir()
    rows = utterances(30, labels=["book", "play"]) + [("rate this one", "rate")] * 3
    write_csv(root / "train.csv", rows, header=("utterance", "category"))
    write_csv(root / "test.csv", [("cancel it", "cancel"), ("play jazz", "play")], header=("utterance", "category"))
    # When init runs
    done = subprocess.run([sys.executable, "-m", "cloud.params", "init", "--data", str(root), "--text-column",
                           "utterance", "--label-column", "category"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    # Then stdout is a params file the pipeline accepts, for these labels, columns and this size
    (tmp_path / "p.json").write_text(done.stdout)
    params = load_params(tmp_path / "p.json")
    assert params.labels == ("book", "play", "rate")
    assert (params.data.text_column, params.data.label_column) == ("utterance", "category")
    assert params.data.unseen_labels == "score"
    assert params.train == load_params().train, "the schedule's floor in steps adapts it to the size"
    assert "2 steps an epoch" in done.stderr and "makes that 800 epochs" in done.stderr
    # and stderr lists the labels with their counts, the carved val split and the rare and unseen labels
    assert "book" in done.stderr and "30 / 0" in done.stderr and "3 / 0" in done.stderr
    assert "carved as val" in done.stderr and "fewer than 10 training rows: rate" in done.stderr
    assert "labels only in val/test" in done.stderr and "cancel" in done.stderr
