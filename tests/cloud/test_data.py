"""The prepare step: SNIPS and CSV input, the stratified split, normalization and input errors."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import pytest

from cloud.data import (
    SPLITS,
    data_hash,
    load_source,
    main,
    normalize,
    SLOTS_FILE,
    prepare,
    read_processed,
    read_slots,
    read_split_csv,
    stratified_split,
)
from cloud.errors import DataError
from cloud.params import Params, load_params
from tests.conftest import LABELS, SNIPS

Rows = Sequence[tuple[str, str]]


# ----------------------------------------------------------------------------------------------- helpers


def utterances(per_label: int, labels: Sequence[str] = LABELS, tag: str = "") -> list[tuple[str, str]]:
    """Distinct utterances, ``per_label`` for each label: ``("addtoplaylist request 3", "AddToPlaylist")``."""
    return [(f"{lab.lower()} request {tag}{i}", lab) for lab in labels for i in range(per_label)]


def write_snips(root: Path, splits: Mapping[str, Rows], *, dirs: Mapping[str, str] | None = None) -> Path:
    """SNIPS in its published layout: <root>/{train,valid,test}/{seq.in,label}, one item a line."""
    dirs = dirs or {"train": "train", "val": "valid", "test": "test"}
    for split, rows in splits.items():
        d = root / dirs[split]
        d.mkdir(parents=True, exist_ok=True)
        (d / "seq.in").write_text("".join(f"{t}\n" for t, _ in rows), encoding="utf-8")
        (d / "label").write_text("".join(f"{lab}\n" for _, lab in rows), encoding="utf-8")
    return root


def write_csv(path: Path, rows: Rows, header: Sequence[str] = ("text", "intent")) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def params_with(**data: object) -> Params:
    return load_params().override({f"data.{k}": v for k, v in data.items()})


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params()


@pytest.fixture
def snips_dir(tmp_path: Path) -> Path:
    return write_snips(tmp_path / "snips", {"train": utterances(3), "val": utterances(1, tag="v"),
                                           "test": utterances(1, tag="t")})


# ----------------------------------------------------------------------------------------------- SNIPS


def test_snips_layout_is_read_with_its_published_split(snips_dir, tmp_path, params):
    # Given SNIPS in its published layout (train/ valid/ test/ with seq.in and label)
    out = tmp_path / "store"
    # When it is prepared
    result = prepare(snips_dir, out, params)
    # Then the split is kept as published, valid -> val, and every processed file is text,intent
    assert result.source == "snips"
    assert dict(result.counts) == {"train": 21, "val": 7, "test": 7}
    processed = read_processed(out / "processed")
    assert processed["train"] == utterances(3)
    assert processed["val"] == utterances(1, tag="v")
    assert (out / "processed" / "train.csv").read_text(encoding="utf-8").splitlines()[0] == "text,intent"
    # And raw/ is a copy of the input as read; the data hash covers the processed files
    assert (out / "raw" / "valid" / "seq.in").read_bytes() == (snips_dir / "valid" / "seq.in").read_bytes()
    assert (out / "raw" / "train" / "label").is_file()
    assert result.data_hash == data_hash(out / "processed") and len(result.data_hash) == 64
    manifest = json.loads((out / "processed" / "prepare.json").read_text(encoding="utf-8"))
    assert manifest["source"] == "snips" and manifest["counts"] == {"train": 21, "val": 7, "test": 7}


def test_slot_tags_of_the_training_split_are_kept_beside_train_csv(snips_dir, tmp_path, params):
    # Given SNIPS with seq.out (one BIO tag per word) in its training split
    texts = (snips_dir / "train" / "seq.in").read_text().splitlines()
    tags = [" ".join(["O"] * (len(t.split()) - 1) + ["B-number"]) for t in texts]
    (snips_dir / "train" / "seq.out").write_text("".join(f"{t}\n" for t in tags))
    # When prepared
    res = prepare(snips_dir, tmp_path / "out", params)
    # Then train.slots pairs with train.csv row by row, is copied raw, and is part of the data hash
    processed = tmp_path / "out" / "processed"
    slots = read_slots(processed)
    assert [" ".join(t) for t in slots] == tags and len(slots) == len(read_split_csv(processed / "train.csv"))
    assert (tmp_path / "out" / "raw" / "train" / "seq.out").is_file()
    (processed / SLOTS_FILE).unlink()
    assert data_hash(processed) != res.data_hash
    # and without seq.out there is no slot file
    (snips_dir / "train" / "seq.out").unlink()
    prepare(snips_dir, tmp_path / "out", params)
    assert read_slots(processed) is None


def test_slot_tags_that_do_not_match_the_words_stop_prepare(snips_dir, tmp_path, params):
    texts = (snips_dir / "train" / "seq.in").read_text().splitlines()
    lines = ["O " * len(t.split()) for t in texts]
    lines[4] = "O"
    (snips_dir / "train" / "seq.out").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"seq.out line 5: 1 slot tags for 3 words"):
        prepare(snips_dir, tmp_path / "out", params)


def test_val_directory_name_is_accepted_too(tmp_path, params):
    # Given a SNIPS-layout directory that names its validation split val/ instead of valid/
    root = write_snips(tmp_path / "s", {"train": utterances(2), "val": utterances(1, tag="v"),
                                       "test": utterances(1, tag="t")},
                       dirs={"train": "train", "val": "val", "test": "test"})
    # When it is read / Then the split is found
    kind, splits = load_source(root)
    assert kind == "snips" and len(splits["val"]) == 7


def test_whitespace_is_normalized_and_empty_rows_are_kept(tmp_path, params):
    # Given utterances and labels with stray whitespace, one empty text and one empty label
    train = [("  play   some\tjazz  ", " PlayMusic "), ("", "GetWeather"), ("rain tomorrow", "  ")]
    root = write_snips(tmp_path / "s", {"train": train, "val": utterances(1), "test": utterances(1)})
    # When prepared
    prepare(root, tmp_path / "out", params)
    # Then whitespace is stripped and collapsed, and nothing is dropped (validation reports empties)
    assert read_split_csv(tmp_path / "out" / "processed" / "train.csv") == [
        ("play some jazz", "PlayMusic"), ("", "GetWeather"), ("rain tomorrow", "")]
    assert normalize(" a \u00a0 b\r\n") == "a b"


def test_crlf_files_and_a_byte_order_mark_are_read(tmp_path):
    # Given a SNIPS split written on Windows (CRLF, BOM)
    root = write_snips(tmp_path / "s", {"train": utterances(1), "val": utterances(1), "test": utterances(1)})
    (root / "train" / "seq.in").write_bytes(b"\xef\xbb\xbfplay jazz\r\nrain today\r\n")
    (root / "train" / "label").write_bytes(b"PlayMusic\r\nGetWeather\r\n")
    # When read / Then the lines are clean
    _, splits = load_source(root)
    assert splits["train"] == [("play jazz", "PlayMusic"), ("rain today", "GetWeather")]


def test_bad_encoding_names_the_file_and_byte_offset(snips_dir, tmp_path, params):
    # Given a seq.in file saved as latin-1
    (snips_dir / "test" / "seq.in").write_bytes("book a caf\u00e9 table\n".encode("latin-1") * 7)
    # When prepared / Then the error names the file and the offset of the first bad byte
    with pytest.raises(DataError, match=r"test/seq\.in is not valid UTF-8: byte 0xe9 at offset 10 \(line 1\)"):
        prepare(snips_dir, tmp_path / "out", params)


def test_missing_split_is_named(snips_dir, tmp_path, params):
    # Given a SNIPS directory without its validation split
    for f in (snips_dir / "valid").iterdir():
        f.unlink()
    (snips_dir / "valid").rmdir()
    # When prepared / Then the error says which split is missing
    with pytest.raises(DataError, match=r"lacks split\(s\): val \(valid/ or val/\)"):
        prepare(snips_dir, tmp_path / "out", params)


def test_missing_label_file_is_named(snips_dir, tmp_path, params):
    (snips_dir / "train" / "label").unlink()
    with pytest.raises(DataError, match=r"split 'train' .* lacks the file 'label'"):
        prepare(snips_dir, tmp_path / "out", params)


def test_line_count_mismatch(snips_dir, tmp_path, params):
    # Given a split whose label file has one line fewer than seq.in
    labels = (snips_dir / "train" / "label").read_text(encoding="utf-8").splitlines()
    (snips_dir / "train" / "label").write_text("\n".join(labels[:-1]) + "\n", encoding="utf-8")
    # When prepared / Then the error gives both counts
    with pytest.raises(DataError, match="split 'train' .*seq.in has 21 lines but label has 20"):
        prepare(snips_dir, tmp_path / "out", params)


def test_empty_snips_file(snips_dir, tmp_path, params):
    (snips_dir / "test" / "seq.in").write_bytes(b"")
    with pytest.raises(DataError, match=r"test/seq\.in is empty"):
        prepare(snips_dir, tmp_path / "out", params)


def test_missing_input(tmp_path, params):
    with pytest.raises(DataError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "out", params)


@pytest.mark.skipif(not SNIPS.is_dir(), reason=f"SNIPS not available at {SNIPS}")
def test_real_snips_counts(tmp_path, params):
    # Given the published SNIPS data beside the repository
    # When prepared
    result = prepare(SNIPS, tmp_path / "out", params)
    # Then the benchmark split and its 7 intents are there
    assert dict(result.counts) == {"train": 13084, "val": 700, "test": 700}
    processed = read_processed(tmp_path / "out" / "processed")
    assert {lab for _, lab in processed["train"]} == set(params.labels)


# ----------------------------------------------------------------------------------------------- CSV


def test_csv_is_split_stratified_by_the_params_ratios(tmp_path, params):
    # Given a CSV of 7 intents x 60 utterances
    data = write_csv(tmp_path / "intents.csv", utterances(60))
    # When prepared with the default ratios 0.9 / 0.05 / 0.05
    result = prepare(data, tmp_path / "out", params)
    # Then the overall counts follow the ratios and every intent is in every split by the same ratios
    assert result.source == "csv"
    assert dict(result.counts) == {"train": 378, "val": 21, "test": 21}
    processed = read_processed(tmp_path / "out" / "processed")
    for split in SPLITS:
        per_label = Counter(lab for _, lab in processed[split])
        assert set(per_label) == set(LABELS)
        assert set(per_label.values()) == {{"train": 54, "val": 3, "test": 3}[split]}
    # And no row is lost or duplicated; raw/ holds the CSV as read
    assert sorted(r for s in SPLITS for r in processed[s]) == sorted(utterances(60))
    assert (tmp_path / "out" / "raw" / "intents.csv").read_bytes() == data.read_bytes()


def test_csv_split_is_deterministic_in_the_seed(tmp_path):
    # Given one CSV prepared twice with one seed and once with another
    data = write_csv(tmp_path / "intents.csv", utterances(30))
    a = prepare(data, tmp_path / "a", params_with(seed=7))
    b = prepare(data, tmp_path / "b", params_with(seed=7))
    c = prepare(data, tmp_path / "c", params_with(seed=8))
    # Then the same seed gives byte-identical files, another seed another split of the same sizes
    assert a.data_hash == b.data_hash
    for s in SPLITS:
        assert (tmp_path / "a/processed" / f"{s}.csv").read_bytes() == (tmp_path / "b/processed" / f"{s}.csv").read_bytes()
    assert c.data_hash != a.data_hash and dict(c.counts) == dict(a.counts)


def test_csv_ratios_are_met_for_uneven_intents(tmp_path):
    # Given intents of very different sizes and 80/10/10 ratios
    rows = [r for n, lab in zip((200, 37, 11, 5, 120, 64, 3), LABELS) for r in utterances(n, [lab])]
    # When split
    parts = stratified_split(rows, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=13)
    # Then each split is within a row of its share, and the big intents are spread by the ratios
    total = len(rows)
    for s, ratio in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(len(parts[s]) - ratio * total) <= 1
    val = Counter(lab for _, lab in parts["val"])
    assert abs(val[LABELS[0]] - 20) <= 1 and abs(val[LABELS[4]] - 12) <= 1


def test_duplicate_texts_stay_in_one_split(tmp_path):
    # Given a CSV where utterances repeat (also in another case)
    rows = utterances(20) + [(t.upper(), lab) for t, lab in utterances(20)[:40]] + utterances(20)[:10]
    # When split
    parts = stratified_split(rows, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    # Then no text (case-insensitively) is in more than one split
    seen = {s: {t.casefold() for t, _ in parts[s]} for s in SPLITS}
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]
    assert sum(len(parts[s]) for s in SPLITS) == len(rows)


def test_csv_quoting_round_trips_and_extra_columns_are_ignored(tmp_path, params):
    # Given texts with commas, quotes and a newline inside a quoted field, and an extra column
    rows = [(f'add "song {i}", please', "AddToPlaylist", "x") for i in range(20)]
    rows.append(("two\nlines", "GetWeather", "y"))
    data = write_csv(tmp_path / "d.csv", rows, header=("text", "intent", "source"))
    # When prepared and read back
    prepare(data, tmp_path / "out", params)
    back = [r for s in SPLITS for r in read_split_csv(tmp_path / "out" / "processed" / f"{s}.csv")]
    # Then the texts survive (whitespace normalized) and only text,intent are kept
    assert sorted(back) == sorted([(f'add "song {i}", please', "AddToPlaylist") for i in range(20)]
                                  + [("two lines", "GetWeather")])


def test_csv_missing_column(tmp_path, params):
    # Given a CSV whose header names the label column "label"
    data = write_csv(tmp_path / "d.csv", utterances(2), header=("text", "label"))
    # When prepared / Then the error names the missing column and the header found
    with pytest.raises(DataError, match=r"lacks column\(s\) 'intent'.*found \['text', 'label'\]"):
        prepare(data, tmp_path / "out", params)


def test_csv_bad_encoding(tmp_path, params):
    data = tmp_path / "d.csv"
    data.write_bytes(b"text,intent\nplay jazz,PlayMusic\nbook a caf\xe9,BookRestaurant\n")
    with pytest.raises(DataError, match=r"d\.csv is not valid UTF-8: byte 0xe9 at offset 42 \(line 3\)"):
        prepare(data, tmp_path / "out", params)


@pytest.mark.parametrize(("content", "message"), [(b"", "is empty"), (b"  \n", "is empty"),
                                                  (b"text,intent\n", "has a header but no rows")])
def test_csv_without_rows(tmp_path, params, content, message):
    data = tmp_path / "d.csv"
    data.write_bytes(content)
    with pytest.raises(DataError, match=message):
        prepare(data, tmp_path / "out", params)


def test_read_split_csv_checks_its_header(tmp_path):
    write_csv(tmp_path / "train.csv", [("a", "b")], header=("utterance", "intent"))
    with pytest.raises(DataError, match=r"processed split .*train\.csv lacks column\(s\) 'text'"):
        read_split_csv(tmp_path / "train.csv")


def test_read_processed_names_missing_files(tmp_path):
    write_csv(tmp_path / "train.csv", [("a", "b")])
    with pytest.raises(DataError, match="lacks val.csv, test.csv"):
        read_processed(tmp_path)


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_prepares_like_a_processing_job(snips_dir, tmp_path, capsys):
    # Given input and output paths
    # When the step runs as a module
    code = main(["--data", str(snips_dir), "--out", str(tmp_path / "job")])
    # Then it exits 0, writes raw/ and processed/, and prints the result as JSON
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"train": 21, "val": 7, "test": 7} and summary["source"] == "snips"
    assert (tmp_path / "job" / "processed" / "test.csv").is_file()


def test_cli_reports_bad_input_with_exit_1(tmp_path, capsys):
    code = main(["--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "job")])
    assert code == 1
    assert "does not exist" in capsys.readouterr().err


def test_public_api_is_pinned():
    import cloud.data

    assert sorted(cloud.data.__all__) == sorted([
        "SPLITS", "PrepareResult", "prepare", "load_source", "normalize", "stratified_split", "read_split_csv",
        "read_processed", "write_split_csv", "data_hash", "read_manifest", "read_slots", "SLOTS_FILE", "main",
        "add_column_arguments", "with_columns"])
    assert all(hasattr(cloud.data, name) for name in cloud.data.__all__)


# --------------------------------------------------------------------------------------- data as users have it


def test_a_directory_of_csv_files_per_split_with_other_column_names(tmp_path, params):
    # Given train.csv / valid.csv / test.csv whose header says utterance,category (as BANKING77's text,category)
    root = tmp_path / "mine"
    root.mkdir()
    header = ("utterance", "category")
    write_csv(root / "train.csv", utterances(10), header=header)
    write_csv(root / "valid.csv", utterances(2, tag="v"), header=header)
    write_csv(root / "test.csv", utterances(3, tag="t"), header=header)
    p = params.override({"data.text_column": "utterance", "data.label_column": "category"})
    # When prepared with the column names as parameters
    result = prepare(root, tmp_path / "out", p)
    # Then the split is kept as given, the processed files are text,intent, and the raw copy holds the three files
    assert result.source == "splits"
    assert result.counts == {"train": 70, "val": 14, "test": 21}
    assert read_split_csv(result.split_files["val"]) == utterances(2, tag="v")
    assert sorted(q.name for q in (tmp_path / "out" / "raw").iterdir()) == ["test.csv", "train.csv", "valid.csv"]
    # and without them the error says how to name the columns
    with pytest.raises(DataError, match=r"lacks column\(s\) 'text', 'intent'.*--text-column / --label-column"):
        prepare(root, tmp_path / "out2", params)


def test_a_missing_validation_split_is_carved_from_train_stratified_and_seeded(tmp_path, params):
    # Given train.csv and test.csv only, one intent rare
    root = tmp_path / "mine"
    root.mkdir()
    rows = utterances(40) + [(f"rate book {i} stars", "RateBook") for i in range(100, 110)]
    write_csv(root / "train.csv", rows)
    write_csv(root / "test.csv", utterances(2, tag="t"))
    # When prepared twice with the same seed and once with another
    a = prepare(root, tmp_path / "a", params)
    b = prepare(root, tmp_path / "b", params)
    c = prepare(root, tmp_path / "c", params.override({"data.seed": 99}))
    # Then val is carved from train at the train:val ratio, every intent is in it, and it depends on the seed only
    ratios = params.data.split_ratios
    expected_val = len(rows) * ratios["val"] / (ratios["train"] + ratios["val"])
    assert abs(a.counts["val"] - expected_val) <= len(LABELS)
    assert a.counts["train"] + a.counts["val"] == len(rows) and a.counts["test"] == 14
    val = read_split_csv(a.split_files["val"])
    assert {lab for _, lab in val} == set(LABELS)
    assert val == read_split_csv(b.split_files["val"]) != read_split_csv(c.split_files["val"])
    train_texts = {t for t, _ in read_split_csv(a.split_files["train"])}
    assert not train_texts & {t for t, _ in val}


def test_json_lines_are_accepted_as_one_file_and_per_split(tmp_path, params):
    rows = utterances(20)
    lines = "\n".join(json.dumps({"text": t, "intent": lab, "source": "app"}) for t, lab in rows) + "\n"
    (tmp_path / "all.jsonl").write_text(lines)
    assert prepare(tmp_path / "all.jsonl", tmp_path / "out", params).counts["train"] > 0
    root = tmp_path / "splits"
    root.mkdir()
    (root / "train.jsonl").write_text(lines)
    (root / "test.jsonl").write_text(json.dumps({"text": "play jazz", "intent": "PlayMusic"}) + "\n\n")
    result = prepare(root, tmp_path / "out2", params)
    assert result.source == "splits" and result.counts["test"] == 1
    (tmp_path / "bad.jsonl").write_text('{"text": "play jazz"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl line 1: expected an object with 'text' and 'intent'"):
        prepare(tmp_path / "bad.jsonl", tmp_path / "out3", params)


def test_a_directory_that_is_no_known_layout_is_named(tmp_path, params):
    (tmp_path / "d").mkdir()
    write_csv(tmp_path / "d" / "data.csv", utterances(2))
    with pytest.raises(DataError, match="neither a SNIPS directory .* nor a directory of files per split"):
        prepare(tmp_path / "d", tmp_path / "out", params)
    (tmp_path / "e").mkdir()
    write_csv(tmp_path / "e" / "train.csv", utterances(2))
    with pytest.raises(DataError, match="has train.csv but no test.csv"):
        prepare(tmp_path / "e", tmp_path / "out", params)
