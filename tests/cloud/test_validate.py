"""The validate step: the Great Expectations suites in gx/, the short failure report and the written results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import pytest

from cloud.data import SPLITS, prepare, read_processed, write_split_csv
from cloud.errors import ValidationFailed
from cloud.params import Params, load_params
from cloud.validate import DEFAULT_GX_DIR, SUITES, main, validate
from tests.cloud.test_data import params_with, utterances, write_csv, write_snips
from tests.conftest import SNIPS

Splits = Mapping[str, Sequence[tuple[str, str]]]


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params()


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, list[tuple[str, str]]]:
    """Processed splits of a clean CSV: 7 intents x 60 utterances split 378 / 21 / 21."""
    root = tmp_path_factory.mktemp("good")
    prepare(write_csv(root / "intents.csv", utterances(60)), root, load_params())
    return read_processed(root / "processed")


def write_processed(root: Path, splits: Splits) -> Path:
    d = root / "processed"
    for s in SPLITS:
        write_split_csv(d / f"{s}.csv", splits[s])
    return d


def copy_splits(splits: Splits) -> dict[str, list[tuple[str, str]]]:
    return {s: list(rows) for s, rows in splits.items()}


def failed_names(exc: ValidationFailed) -> list[str]:
    return [line[2:].split(" [")[0] for line in exc.report.splitlines() if line.startswith("- ")]


def test_clean_data_passes_and_everything_is_written(good, tmp_path, params):
    # Given clean processed splits
    processed = write_processed(tmp_path, good)
    out = tmp_path / "validation" / "run-1"
    # When validated
    result = validate(processed, out, params, source="csv")
    # Then every expectation of the three suites passed on every batch
    assert result.passed and not result.failures
    assert dict(result.counts) == {"train": 378, "val": 21, "test": 21}
    assert {(e.batch, e.suite) for e in result.expectations} == {
        *((s, "intents_rows") for s in SPLITS), ("splits", "intents_splits"), ("labels", "intents_labels")}
    assert len(result.expectations) == 3 * 6 + 1 + 1
    # And the full JSON result, the short report and the Data Docs pages are in the output directory
    full = json.loads((out / "validation.json").read_text(encoding="utf-8"))
    assert full["passed"] is True and set(full["gx"]) == {*SPLITS, "splits", "labels"}
    assert full["gx"]["val"]["suite_name"] == "intents_rows" and full["gx"]["val"]["success"] is True
    assert full["parameters"]["labels"] == list(params.labels)
    assert (out / "report.txt").read_text(encoding="utf-8").startswith("data validation passed")
    index = (out / "data_docs" / "index.html").read_text(encoding="utf-8")
    assert 'href="train.html"' in index
    page = (out / "data_docs" / "test.html").read_text(encoding="utf-8")
    assert "Data documentation compiled by Great Expectations" in page and "intents_rows" in page
    assert "no text of val/test also occurs in train (duplicate leak)" in page
    assert result.to_dict()["data_hash"] == full["data_hash"]


@pytest.mark.parametrize(
    ("case", "expected_failure", "sample"),
    [
        ("empty_text", "val: expect_column_values_to_not_be_null(text)", "line=3 text=None intent="),
        ("missing_label", "train: expect_column_values_to_not_be_null(intent)", "line=5"),
        ("unknown_label", "test: expect_column_values_to_be_in_set(intent)", "intent='SetAlarm'"),
        ("leak", "test: expect_column_values_to_be_in_set(in_train)", "in_train=True"),
        ("too_long", "train: expect_column_value_lengths_to_be_between(text)", "(600 chars)"),
        ("ratios", "splits: expect_column_values_to_be_between(ratio_deviation)", "split='train'"),
        ("label_not_in_train", "labels: expect_column_values_to_be_between(train_rows)", "label='RateBook'"),
        ("empty_split", "test: expect_table_row_count_to_be_between", ""),
    ],
)
def test_bad_data_fails_naming_the_expectation_and_split(good, tmp_path, params, case, expected_failure, sample):
    # Given clean splits with one kind of defect
    splits = copy_splits(good)
    if case == "empty_text":
        splits["val"][1] = ("", splits["val"][1][1])
    elif case == "missing_label":
        splits["train"][3] = (splits["train"][3][0], "")
    elif case == "unknown_label":
        splits["test"][0] = ("wake me up at seven", "SetAlarm")
    elif case == "leak":
        splits["test"][0] = (splits["train"][10][0].upper(), splits["train"][10][1])
    elif case == "too_long":
        splits["train"][0] = ("x" * 600, splits["train"][0][1])
    elif case == "ratios":
        splits["val"] += splits["train"][:60]
        splits["train"] = splits["train"][60:]
    elif case == "label_not_in_train":
        moved = [r for r in splits["train"] if r[1] == "RateBook"]
        splits["train"] = [r for r in splits["train"] if r[1] != "RateBook"] + [
            (t, "BookRestaurant") for t, _ in moved]  # keep the split ratios
    elif case == "empty_split":
        splits["test"] = []
    processed = write_processed(tmp_path, splits)
    out = tmp_path / "validation"
    # When validated
    with pytest.raises(ValidationFailed) as info:
        validate(processed, out, params, source="csv")
    # Then the short report names the failed expectation on its split, with an offending row
    failed = failed_names(info.value)
    if case == "empty_split":  # an empty split also throws the ratios off
        assert failed == [expected_failure, "splits: expect_column_values_to_be_between(ratio_deviation)"]
    else:
        assert failed == [expected_failure]
    assert expected_failure in str(info.value)
    assert sample in info.value.report
    assert len(info.value.report.splitlines()) <= 12
    # And the full result is written anyway
    assert json.loads((out / "validation.json").read_text(encoding="utf-8"))["passed"] is False
    assert (out / "report.txt").read_text(encoding="utf-8").strip() == info.value.report
    assert (out / "data_docs" / "index.html").is_file()


def test_report_shows_at_most_five_samples(good, tmp_path, params):
    # Given ten unknown labels in train
    splits = copy_splits(good)
    for i in range(10):
        splits["train"][i] = (splits["train"][i][0], "Unknown")
    # When validated / Then the report counts all ten but lists five rows
    with pytest.raises(ValidationFailed) as info:
        validate(write_processed(tmp_path, splits), tmp_path / "v", params, source="csv")
    report = info.value.report
    assert "train: expect_column_values_to_be_in_set(intent) [intent is one of params.labels]: 10 of 378 rows" in report
    assert sum(1 for line in report.splitlines() if line.startswith("    line=")) == 5


def test_length_bounds_come_from_params(good, tmp_path):
    # Given clean data and params allowing at most 20 characters
    processed = write_processed(tmp_path, good)
    # When validated / Then the longer utterances fail the length expectation
    with pytest.raises(ValidationFailed, match=r"expect_column_value_lengths_to_be_between\(text\)"):
        validate(processed, tmp_path / "v", params_with(max_chars=20), source="csv")


def test_snips_published_split_ratios_are_not_enforced(good, tmp_path, params):
    # Given SNIPS-layout data whose split is far from params.data.split_ratios (e.g. a small sample)
    splits = copy_splits(good)
    splits["val"] += splits["train"][:60]
    splits["train"] = splits["train"][60:]
    # When validated as the published SNIPS split
    result = validate(write_processed(tmp_path, splits), tmp_path / "v", params, source="snips")
    # Then it passes, with a note, and the deviation is still recorded
    assert result.passed
    assert any("not checked against params.data.split_ratios" in n for n in result.notes)
    ratio = next(e for e in result.expectations if e.column == "ratio_deviation")
    assert ratio.success and result.parameters["split_tolerance"] == 1.0


def test_snips_tolerates_a_few_published_repeats_but_not_a_copied_test_set(good, tmp_path, params):
    # Given SNIPS-layout data where one test utterance repeats a train one
    splits = copy_splits(good)
    splits["test"][0] = splits["train"][0]
    # When validated as SNIPS / Then it passes and the repeat is counted in a note
    result = validate(write_processed(tmp_path / "a", splits), tmp_path / "va", params, source="snips")
    assert result.passed and "rows repeating a train text: val 0, test 1" in result.notes
    # But as CSV (split by this project) the same repeat fails
    with pytest.raises(ValidationFailed, match=r"test: expect_column_values_to_be_in_set\(in_train\)"):
        validate(write_processed(tmp_path / "a", splits), tmp_path / "vb", params, source="csv")
    # And a test set copied from train fails even as SNIPS
    splits["test"] = splits["train"][:21]
    with pytest.raises(ValidationFailed, match=r"in_train"):
        validate(write_processed(tmp_path / "c", splits), tmp_path / "vc", params, source="snips")


def test_source_kind_is_read_from_the_prepare_manifest(tmp_path, params):
    # Given a small SNIPS-layout sample prepared by cloud.data (its split is nowhere near 90/5/5)
    snips = write_snips(tmp_path / "snips", {"train": utterances(3), "val": utterances(1, tag="v"),
                                            "test": utterances(1, tag="t")})
    prepared = prepare(snips, tmp_path / "store", params)
    # When validated without naming the source
    result = validate(prepared.processed_dir, tmp_path / "v", params)
    # Then the manifest's "snips" applies and the sample passes
    assert result.source == "snips" and result.passed and result.data_hash == prepared.data_hash


def test_validation_writes_nothing_into_the_gx_project(good, tmp_path, params):
    # Given the committed GX project
    before = sorted(p.relative_to(DEFAULT_GX_DIR) for p in DEFAULT_GX_DIR.rglob("*"))
    # When a validation runs (passing and failing)
    validate(write_processed(tmp_path, good), tmp_path / "v", params, source="csv")
    # Then the project is unchanged (results and Data Docs go to the output directory only)
    assert sorted(p.relative_to(DEFAULT_GX_DIR) for p in DEFAULT_GX_DIR.rglob("*")) == before


def test_suites_are_committed_gx_files_with_params_placeholders():
    # Given the expectation suite files of the GX project
    for _, suite, _ in SUITES.values():
        data = json.loads((DEFAULT_GX_DIR / "expectations" / f"{suite}.json").read_text(encoding="utf-8"))
        assert data["name"] == suite
    rows = json.loads((DEFAULT_GX_DIR / "expectations" / "intents_rows.json").read_text(encoding="utf-8"))
    kinds = {(e["type"], e["kwargs"].get("column")) for e in rows["expectations"]}
    # Then the row suite holds the checks and takes its bounds from params (suite parameters)
    assert kinds == {("expect_table_row_count_to_be_between", None),
                     ("expect_column_values_to_not_be_null", "text"),
                     ("expect_column_values_to_not_be_null", "intent"),
                     ("expect_column_values_to_be_in_set", "intent"),
                     ("expect_column_value_lengths_to_be_between", "text"),
                     ("expect_column_values_to_be_in_set", "in_train")}
    text = json.dumps(rows)
    for name in ("labels", "min_chars", "max_chars", "leak_mostly"):
        assert json.dumps({"$PARAMETER": name}) in text
    assert (DEFAULT_GX_DIR / ".gitignore").read_text(encoding="utf-8").count("uncommitted/") == 1


def test_cli_exit_codes(good, tmp_path, capsys):
    # Given clean processed data
    processed = write_processed(tmp_path / "good", good)
    # When the step runs as a module / Then it exits 0 and prints the summary
    assert main(["--processed", str(processed), "--out", str(tmp_path / "v1"), "--source", "csv"]) == 0
    assert capsys.readouterr().out.startswith("data validation passed")
    # And with a defect it exits 1 with the short report on stderr
    splits = copy_splits(good)
    splits["val"][0] = ("", "GetWeather")
    bad = write_processed(tmp_path / "bad", splits)
    assert main(["--processed", str(bad), "--out", str(tmp_path / "v2")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("data validation failed") and "val: expect_column_values_to_not_be_null(text)" in err


def test_cli_missing_processed_files(tmp_path, capsys):
    assert main(["--processed", str(tmp_path), "--out", str(tmp_path / "v")]) == 1
    assert "lacks train.csv, val.csv, test.csv" in capsys.readouterr().err


@pytest.mark.skipif(not SNIPS.is_dir(), reason=f"SNIPS not available at {SNIPS}")
def test_real_snips_passes(tmp_path, params):
    # Given the published SNIPS data prepared
    prepared = prepare(SNIPS, tmp_path / "store", params)
    # When validated / Then it passes, noting the published repeats of train texts
    result = validate(prepared.processed_dir, tmp_path / "v", params)
    assert result.passed and result.source == "snips"
    assert "rows repeating a train text: val 15, test 26" in result.notes


def test_public_api_is_pinned():
    import cloud.validate

    assert sorted(cloud.validate.__all__) == sorted([
        "DEFAULT_GX_DIR", "SUITES", "ExpectationOutcome", "ValidationResult", "validate", "main", "unseen_labels"])
    assert all(hasattr(cloud.validate, name) for name in cloud.validate.__all__)


def test_importing_the_step_does_not_import_great_expectations():
    # GX is slow to import and only the validate call needs it
    import subprocess
    import sys

    code = "import sys, cloud.validate, cloud.data; print('great_expectations' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["False", "False"]


def test_labels_only_in_val_or_test_stop_by_default_and_can_be_scored_as_errors(good, tmp_path, params):
    # Given test rows whose label is in no training row and not in the label list
    splits = copy_splits(good)
    splits["test"] = splits["test"] + [("cancel my order", "CancelOrder"), ("cancel it now", "CancelOrder")]
    processed = write_processed(tmp_path, splits)
    # When validated with the default (data.unseen_labels = stop)
    with pytest.raises(ValidationFailed) as err:
        validate(processed, tmp_path / "v1", params, source="csv")
    # Then the report names the label, counts its rows and says how to keep them
    assert "2 val/test rows carry 1 labels not in the label list: CancelOrder (2 test)" in err.value.report
    assert "data.unseen_labels" in err.value.report
    # When validated with unseen_labels = score, Then it passes and the report still counts them
    result = validate(processed, tmp_path / "v2", params.override({"data.unseen_labels": "score"}), source="csv")
    assert result.passed
    assert any("CancelOrder (2 test)" in n and "scored as errors" in n for n in result.notes)
