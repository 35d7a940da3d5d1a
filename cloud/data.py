"""The ``prepare`` step: read the input data, write ``raw/`` and ``processed/{train,val,test}.csv``.

Four input layouts are accepted (``--data``):

* **SNIPS as published**: a directory with ``train/``, ``valid/`` (or ``val/``) and ``test/``, each holding
  ``seq.in`` (one utterance a line) and ``label`` (its intent a line), optionally ``seq.out`` (slot tags). The
  published split is kept as is (``valid`` becomes ``val``).
* **One CSV or JSON Lines file** (``.csv``, ``.jsonl``): a text column and a label column (``data.text_column``,
  ``data.label_column``: ``text`` and ``intent`` by default; other columns are ignored). It is split into
  train/val/test with ``params.data.split_ratios``, stratified by intent and seeded by ``params.data.seed``; rows
  whose text is the same (case-insensitive) always land in the same split, so a duplicated utterance cannot leak
  from train into val/test.
* **A directory of files per split**: ``train.csv`` (or ``.jsonl``), optional ``val.csv`` / ``valid.csv``, and
  ``test.csv``, e.g. BANKING77 as published (``text,category``: pass ``--label-column category``). The split is
  kept; a missing validation split is carved from train by the train/val ratio of ``split_ratios``, stratified
  and seeded, identical texts kept together.

Whitespace is normalized (stripped, runs collapsed to one space). Rows with an empty text or label, or an
unknown label, are *kept*: the ``validate`` step is where they are reported. Unreadable input raises
:class:`~cloud.errors.DataError`.

Like a SageMaker Processing job the step reads from paths and writes to paths::

    python -m cloud.data --data ../shared/data/snips --out .store/slm-intents [--params pipelines/params.json]

writes ``<out>/raw/`` (a copy of the input as read), ``<out>/processed/{train,val,test}.csv`` (always
``text,intent``, contract 2) and ``<out>/processed/prepare.json`` (source kind, counts, data hash;
``cloud.validate`` reads the source kind: ``snips`` and ``splits`` are published splits, ``csv`` is ours).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .errors import CloudError, DataError
from .params import Params, load_params

__all__ = [
    "SPLITS",
    "PrepareResult",
    "prepare",
    "load_source",
    "normalize",
    "stratified_split",
    "read_split_csv",
    "read_processed",
    "write_split_csv",
    "data_hash",
    "read_manifest",
    "read_slots",
    "SLOTS_FILE",
    "add_column_arguments",
    "with_columns",
    "main",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST = "prepare.json"

# Directory names of the published SNIPS layout, per split (first match wins).
_SNIPS_DIRS: Mapping[str, tuple[str, ...]] = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}
_SNIPS_FILES = ("seq.in", "label")
#: Optional in the SNIPS layout: one slot tag per word of seq.in (BIO); the training split's tags feed the
#: auxiliary slot-tagging loss of the train step.
_SNIPS_SLOTS = "seq.out"
#: The training split's slot tags, one line per row of train.csv, written only when the input has them.
SLOTS_FILE = "train.slots"
_BOM = b"\xef\xbb\xbf"

Row = tuple[str, str]


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare`` wrote. ``to_dict()`` is the JSON written to ``processed/prepare.json``."""

    source: str  # "snips", "splits" (a directory of files per split) or "csv" (one file we split)
    counts: Mapping[str, int]  # rows per split
    data_hash: str  # sha256 over the processed CSVs, see data_hash()
    raw_dir: Path
    processed_dir: Path
    input_path: str = ""
    split_files: Mapping[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "counts": dict(self.counts),
            "data_hash": self.data_hash,
            "input": self.input_path,
            "raw_dir": str(self.raw_dir),
            "processed_dir": str(self.processed_dir),
            "files": {s: str(p) for s, p in self.split_files.items()},
        }


def normalize(text: str) -> str:
    """Strip and collapse whitespace runs: ``normalize("  set  an\\talarm ") == "set an alarm"``."""
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------- reading


def _decode(path: Path) -> str:
    """UTF-8 text of ``path`` (a leading BOM is dropped); a clear DataError otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    offset = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        pos = exc.start + offset
        line = data.count(b"\n", 0, pos) + 1
        raise DataError(
            f"{path} is not valid UTF-8: byte 0x{data[pos]:02x} at offset {pos} (line {line}); "
            "re-encode the file as UTF-8"
        ) from None


def _lines(path: Path) -> list[str]:
    """Lines of a one-item-a-line file; the final newline does not make an extra empty line."""
    text = _decode(path)
    if not text.strip():
        raise DataError(f"{path} is empty")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _snips_split_dirs(root: Path) -> dict[str, Path]:
    dirs: dict[str, Path] = {}
    missing: list[str] = []
    for split, names in _SNIPS_DIRS.items():
        found = next((root / n for n in names if (root / n).is_dir()), None)
        if found is None:
            missing.append(f"{split} ({' or '.join(n + '/' for n in names)})")
        else:
            dirs[split] = found
    if missing:
        raise DataError(
            f"SNIPS directory {root} lacks split(s): {', '.join(missing)}; "
            "expected train/, valid/ and test/, each with seq.in and label"
        )
    for split, d in dirs.items():
        for name in _SNIPS_FILES:
            if not (d / name).is_file():
                raise DataError(f"SNIPS split {split!r} ({d}) lacks the file {name!r}")
    return dirs


def _read_snips(root: Path) -> dict[str, list[Row]]:
    splits: dict[str, list[Row]] = {}
    for split, d in _snips_split_dirs(root).items():
        texts, labels = _lines(d / "seq.in"), _lines(d / "label")
        if len(texts) != len(labels):
            raise DataError(
                f"SNIPS split {split!r} ({d}): seq.in has {len(texts)} lines but label has {len(labels)}; "
                "they must pair up line by line"
            )
        splits[split] = [(normalize(t), normalize(lab)) for t, lab in zip(texts, labels)]
    return splits


def _read_csv_rows(path: Path, *, what: str = "CSV", allow_no_rows: bool = False, text_column: str = "text",
                   label_column: str = "intent") -> list[Row]:
    text = _decode(path)
    if not text.strip():
        raise DataError(f"{what} {path} is empty")
    columns = (text_column, label_column)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(
                f"{what} {path} lacks column(s) {', '.join(repr(c) for c in missing)}; "
                f"the header must hold {text_column!r} and {label_column!r} (found {header}; "
                "other names: --text-column / --label-column, or data.text_column / data.label_column)"
            )
        rows = [(normalize(r.get(text_column) or ""), normalize(r.get(label_column) or "")) for r in reader]
    except csv.Error as exc:
        raise DataError(f"{what} {path} cannot be parsed: {exc}") from None
    if not rows and not allow_no_rows:
        raise DataError(f"{what} {path} has a header but no rows")
    return rows


def _read_jsonl_rows(path: Path, *, text_column: str = "text", label_column: str = "intent") -> list[Row]:
    """One JSON object a line with the text and label fields (blank lines skipped)."""
    rows: list[Row] = []
    for i, line in enumerate(_decode(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path} line {i} is not JSON: {exc}") from None
        if not isinstance(obj, dict) or text_column not in obj or label_column not in obj:
            raise DataError(f"{path} line {i}: expected an object with {text_column!r} and {label_column!r} "
                            f"(other names: --text-column / --label-column), got {line[:80]!r}")
        text, label = obj[text_column], obj[label_column]
        rows.append((normalize(text if isinstance(text, str) else ""), normalize(label if isinstance(label, str)
                                                                                  else str(label or ""))))
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows


#: File suffixes of one table of rows, per reader.
_TABLE_SUFFIXES = (".csv", ".jsonl")
#: A directory of files per split: the accepted names of each split's file (first match wins).
_SPLIT_NAMES: Mapping[str, tuple[str, ...]] = {"train": ("train",), "val": ("val", "valid", "validation"),
                                               "test": ("test",)}


def _read_table(path: Path, *, text_column: str, label_column: str) -> list[Row]:
    if path.suffix.lower() == ".jsonl":
        return _read_jsonl_rows(path, text_column=text_column, label_column=label_column)
    return _read_csv_rows(path, text_column=text_column, label_column=label_column)


def _split_files(root: Path) -> dict[str, Path]:
    """``{split: file}`` of a directory of files per split (val may be missing); empty when it is not one."""
    found: dict[str, Path] = {}
    for split, names in _SPLIT_NAMES.items():
        for name in names:
            hit = next((root / f"{name}{suffix}" for suffix in _TABLE_SUFFIXES if (root / f"{name}{suffix}").is_file()),
                       None)
            if hit:
                found[split] = hit
                break
    return found if "train" in found else {}


def _read_snips_slots(root: Path) -> list[list[str]] | None:
    """The training split's slot tags (``seq.out``), checked word by word against ``seq.in``; None without one."""
    d = _snips_split_dirs(root)["train"]
    if not (d / _SNIPS_SLOTS).is_file():
        return None
    texts, tags = _lines(d / "seq.in"), _lines(d / _SNIPS_SLOTS)
    if len(texts) != len(tags):
        raise DataError(f"SNIPS train split ({d}): seq.in has {len(texts)} lines but {_SNIPS_SLOTS} has {len(tags)}")
    out = []
    for i, (text, line) in enumerate(zip(texts, tags), 1):
        words, row = text.split(), line.split()
        if len(words) != len(row):
            raise DataError(f"{d / _SNIPS_SLOTS} line {i}: {len(row)} slot tags for {len(words)} words of {text!r}; "
                            "there must be one tag per word")
        out.append(row)
    return out


def read_slots(processed_dir: str | Path) -> list[list[str]] | None:
    """The training split's slot tags written by ``prepare`` (one list per row of train.csv), or None."""
    path = Path(processed_dir) / SLOTS_FILE
    if not path.is_file():
        return None
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


def load_source(data_path: str | Path, *, text_column: str = "text", label_column: str = "intent",
                ) -> tuple[str, dict[str, list[Row]] | list[Row]]:
    """Read the input: ``("snips", {split: rows})`` for a SNIPS directory, ``("splits", {split: rows})`` for a
    directory of files per split (``val`` absent when it has none), ``("csv", rows)`` for one CSV/JSONL file."""
    path = Path(data_path)
    columns = {"text_column": text_column, "label_column": label_column}
    if path.is_dir():
        if any((path / n).is_dir() for n in _SNIPS_DIRS["train"]):
            return "snips", _read_snips(path)
        files = _split_files(path)
        if files:
            if "test" not in files:
                raise DataError(f"{path} has {files['train'].name} but no test.csv / test.jsonl")
            return "splits", {split: _read_table(f, **columns) for split, f in files.items()}
        raise DataError(f"{path} is neither a SNIPS directory (train/ valid/ test/) nor a directory of files per split "
                        "(train.csv, optional val.csv or valid.csv, test.csv; or .jsonl)")
    if path.is_file():
        return "csv", _read_table(path, **columns)
    raise DataError(f"input data {path} does not exist (expected a SNIPS directory, a directory of train/val/test "
                    "CSV files, or one CSV / JSON Lines file)")


def stratified_split(
    rows: Sequence[Row], ratios: Mapping[str, float], seed: int
) -> dict[str, list[Row]]:
    """Split ``rows`` into ``SPLITS`` with the given ratios, stratified by intent, deterministic in ``seed``.

    Rows with the same (case-folded) text form one group that goes to one split. Groups are shuffled within
    their intent with ``random.Random(seed)``, intents are taken in sorted order, and each group goes to the
    split furthest below its target share so far; so the overall counts match the ratios to within a row
    and each intent is spread by the same ratios (an intent with ``n`` rows gets about ``n * ratio`` of them).

    >>> parts = stratified_split([(f"t{i}", "A") for i in range(20)], {"train": .8, "val": .1, "test": .1}, 13)
    >>> [len(parts[s]) for s in SPLITS]
    [16, 2, 2]
    """
    weights = [float(ratios.get(s, 0.0)) for s in SPLITS]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DataError(f"split ratios must be non-negative and not all zero, got {dict(ratios)}")
    weights = [w / sum(weights) for w in weights]

    # Group identical texts (case-insensitively); empty texts stay one row each.
    groups: dict[str, list[Row]] = {}
    for i, row in enumerate(rows):
        key = row[0].casefold() or f"\0empty-{i}"
        groups.setdefault(key, []).append(row)
    by_intent: dict[str, list[list[Row]]] = {}
    for members in groups.values():
        by_intent.setdefault(members[0][1], []).append(members)

    rng = random.Random(seed)  # nosec B311 # seeded splits, no secret
    out: dict[str, list[Row]] = {s: [] for s in SPLITS}
    placed = [0] * len(SPLITS)
    total = 0
    for intent in sorted(by_intent):
        members_list = by_intent[intent]
        rng.shuffle(members_list)
        for members in members_list:
            total += len(members)
            # The split whose count lags its target share the most takes the group.
            deficits = [total * w - placed[k] if w > 0 else float("-inf") for k, w in enumerate(weights)]
            k = max(range(len(SPLITS)), key=lambda j: (deficits[j], -j))
            placed[k] += len(members)
            out[SPLITS[k]].extend(members)
    # Shuffle each split so intents are interleaved in the files (training reads them in order).
    for s in SPLITS:
        rng.shuffle(out[s])
    return out


# --------------------------------------------------------------------------------------------------- writing


def write_split_csv(path: Path, rows: Iterable[Row]) -> None:
    """Write ``text,intent`` rows as UTF-8 CSV with minimal quoting and ``\\n`` line ends (stable hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(("text", "intent"))
        writer.writerows(rows)


def read_split_csv(path: str | Path) -> list[Row]:
    """Read one processed split: ``[(text, intent), ...]`` (empty fields stay empty strings).

    A split with a header and no rows reads as ``[]``: validation, not reading, rejects an empty split.
    """
    return _read_csv_rows(Path(path), what="processed split", allow_no_rows=True)


def read_processed(processed_dir: str | Path) -> dict[str, list[Row]]:
    """Read ``train.csv``, ``val.csv`` and ``test.csv`` of a processed directory."""
    d = Path(processed_dir)
    missing = [f"{s}.csv" for s in SPLITS if not (d / f"{s}.csv").is_file()]
    if missing:
        raise DataError(f"processed directory {d} lacks {', '.join(missing)}; run the prepare step first")
    return {s: read_split_csv(d / f"{s}.csv") for s in SPLITS}


def data_hash(processed_dir: str | Path) -> str:
    """sha256 over the processed CSVs (name and bytes of train, val, test in that order), then the training slot
    tags when there are any: the data lineage."""
    h = hashlib.sha256()
    for s in SPLITS + ((SLOTS_FILE,) if (Path(processed_dir) / SLOTS_FILE).is_file() else ()):
        p = Path(processed_dir) / (s if s == SLOTS_FILE else f"{s}.csv")
        try:
            content = p.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {p}: {exc.strerror or exc}") from None
        h.update(f"{p.name}\0{len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()


def _copy_raw(data_path: Path, source: str, raw_dir: Path) -> None:
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    raw_dir.mkdir(parents=True)
    if source == "csv":
        shutil.copy2(data_path, raw_dir / data_path.name)
        return
    if source == "splits":
        for f in _split_files(data_path).values():
            shutil.copy2(f, raw_dir / f.name)
        return
    for split, d in _snips_split_dirs(data_path).items():
        (raw_dir / d.name).mkdir()
        for name in _SNIPS_FILES + (_SNIPS_SLOTS,):
            if (d / name).is_file():
                shutil.copy2(d / name, raw_dir / d.name / name)


def prepare(data_path: str | Path, out_dir: str | Path, params: Params) -> PrepareResult:
    """Read ``data_path`` and write ``<out_dir>/raw/`` and ``<out_dir>/processed/``.

    With a :class:`~cloud.store.Store` pass ``store.base`` as ``out_dir`` (``store.raw()`` and
    ``store.processed()`` are its ``raw/`` and ``processed/``).

    >>> result = prepare("../shared/data/snips", Store.at(".store").base, load_params())  # doctest: +SKIP
    >>> result.counts
    {'train': 13084, 'val': 700, 'test': 700}
    """
    data_path = Path(data_path)
    out = Path(out_dir)
    d = params.data
    source, loaded = load_source(data_path, text_column=d.text_column, label_column=d.label_column)
    if not isinstance(loaded, dict):
        splits = stratified_split(loaded, d.split_ratios, d.seed)
    elif "val" not in loaded:  # carve val from train by the train:val ratio, stratified, texts kept together
        ratios = {"train": d.split_ratios.get("train", 0.0), "val": d.split_ratios.get("val", 0.0), "test": 0.0}
        if ratios["val"] <= 0:
            raise DataError(f"{data_path} has no validation split and data.split_ratios.val is 0; "
                            "give val.csv or a val share to carve from train")
        carved = stratified_split(loaded["train"], ratios, d.seed)
        splits = {"train": carved["train"], "val": carved["val"], "test": loaded["test"]}
    else:
        splits = loaded

    raw_dir, processed_dir = out / "raw", out / "processed"
    _copy_raw(data_path, source, raw_dir)
    processed_dir.mkdir(parents=True, exist_ok=True)
    files = {s: processed_dir / f"{s}.csv" for s in SPLITS}
    for s in SPLITS:
        write_split_csv(files[s], splits[s])
    slots = _read_snips_slots(data_path) if source == "snips" else None
    (processed_dir / SLOTS_FILE).unlink(missing_ok=True)
    if slots is not None:
        (processed_dir / SLOTS_FILE).write_text("".join(" ".join(t) + "\n" for t in slots), encoding="utf-8")
        files["train_slots"] = processed_dir / SLOTS_FILE
    result = PrepareResult(
        source=source,
        counts={s: len(splits[s]) for s in SPLITS},
        data_hash=data_hash(processed_dir),
        raw_dir=raw_dir,
        processed_dir=processed_dir,
        input_path=str(data_path),
        split_files=files,
    )
    (processed_dir / MANIFEST).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return result


def read_manifest(processed_dir: str | Path) -> dict[str, object] | None:
    """The ``prepare.json`` written next to the processed CSVs, or None when there is none."""
    p = Path(processed_dir) / MANIFEST
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {p}: {exc}") from None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------------- CLI


def add_column_arguments(parser: argparse.ArgumentParser) -> None:
    """``--text-column`` / ``--label-column``: the input's column names, over ``data.text_column`` / ``label_column``."""
    parser.add_argument("--text-column", default=None, help="the input's text column (default: data.text_column)")
    parser.add_argument("--label-column", default=None, help="the input's label column (default: data.label_column)")


def with_columns(params: Params, args: argparse.Namespace) -> Params:
    """``params`` with the column names given on the command line, if any."""
    values = {f"data.{k}": v for k, v in (("text_column", args.text_column), ("label_column", args.label_column))
              if v is not None}
    return params.override(values) if values else params


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.data", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", required=True, help="SNIPS directory, a directory of train/val/test CSV or JSONL "
                                                      "files, or one CSV / JSONL file")
    parser.add_argument("--out", required=True, help="directory that gets raw/ and processed/")
    parser.add_argument("--params", default=None, help="params file (default: pipelines/params.json)")
    add_column_arguments(parser)
    args = parser.parse_args(argv)
    try:
        result = prepare(args.data, Path(args.out), with_columns(load_params(args.params), args))
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
