"""The ``validate`` step: check ``processed/{train,val,test}.csv`` with the Great Expectations suites in ``gx/``.

The suites are committed files of the GX project at the repository root (``gx/great_expectations.yml``,
``gx/expectations/*.json``), opened with GX Core 1.x in file mode. Their bounds are suite parameters filled
from ``pipelines/params.json`` at validation time, so the params file stays the one place for them:

``intents_rows`` (run on each split; a column ``line`` holds the CSV line of each row)
    the split is not empty; ``text`` and ``intent`` are not missing (an empty field counts as missing);
    ``intent`` is in ``params.labels``; the text length in characters is within
    ``params.data.min_chars..max_chars``; ``in_train`` (the case-folded text also occurs in train;
    always False for train rows) is False - no duplicate leaks from train into val/test.
``intents_splits`` (run on a summary table, one row per split)
    ``ratio_deviation`` = ``|rows / total - params.data.split_ratios[split]|`` is at most
    ``params.data.split_tolerance``.
``intents_labels`` (run on a coverage table, one row per label of ``params.labels``)
    ``train_rows`` >= 1: every label occurs in train.

The SNIPS benchmark split (13,084 / 700 / 700) is published and fixed, so for ``source == "snips"`` two
checks are relaxed on purpose, each with a note in the result: the split-ratio expectation still runs and
shows each deviation, but with a tolerance of 1.0 (not enforced: a SNIPS-layout input keeps whatever split
it ships with, including small SNIPS-layout samples); and the leak expectation accepts up to
``params.data.published_leak_tolerance`` (0.05 by default) of val/test rows repeating a train text (the published
split repeats 16 val and 27 test utterances of train verbatim), which still catches a broken split such as
test copied from train. For CSV input, which this project splits itself, both checks are strict. The source
kind comes from ``processed/prepare.json`` (written by :mod:`cloud.data`) unless given.

Every run writes to the caller's output directory (the pipeline passes ``store.validation(run_id)``):
``validation.json`` (the full result including each GX validation result), ``report.txt`` (the short report)
and ``data_docs/`` (GX Data Docs pages rendered by GX's own renderer, with an ``index.html``).
A failure raises :class:`~cloud.errors.ValidationFailed` whose ``report`` names each failed expectation, the
split, and up to 5 offending rows.

    python -m cloud.validate --processed .store/slm-intents/processed --out .store/slm-intents/validation/r1
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .data import SPLITS, Row, data_hash, read_manifest, read_processed
from .errors import CloudError, ValidationFailed
from .params import Params, load_params

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "unseen_labels",
    "DEFAULT_GX_DIR",
    "SUITES",
    "ExpectationOutcome",
    "ValidationResult",
    "validate",
    "main",
]

DEFAULT_GX_DIR = Path(__file__).resolve().parents[1] / "gx"
DATASOURCE = "intents"
# batch kind -> (dataframe asset in great_expectations.yml, expectation suite, column naming a row in reports)
SUITES: Mapping[str, tuple[str, str, str]] = {
    "rows": ("rows", "intents_rows", "line"),
    "splits": ("splits", "intents_splits", "split"),
    "labels": ("labels", "intents_labels", "label"),
}
MAX_SAMPLES = 5
#: Input kinds of cloud.data; a published split (SNIPS, or files per split) is kept, so its ratios are not ours.
SOURCES = ("snips", "splits", "csv")
PUBLISHED_SOURCES = ("snips", "splits")
_SAMPLE_CHARS = 80


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation run on one batch (``train``/``val``/``test``, ``splits`` or ``labels``)."""

    batch: str
    suite: str
    expectation: str  # GX type, e.g. "expect_column_values_to_not_be_null"
    column: str | None
    description: str
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    observed_value: Any = None
    samples: tuple[Mapping[str, Any], ...] = ()  # up to MAX_SAMPLES offending rows

    @property
    def name(self) -> str:
        return f"{self.expectation}({self.column})" if self.column else self.expectation

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "suite": self.suite,
            "expectation": self.expectation,
            "column": self.column,
            "description": self.description,
            "success": self.success,
            "element_count": self.element_count,
            "unexpected_count": self.unexpected_count,
            "observed_value": self.observed_value,
            "samples": [dict(s) for s in self.samples],
        }


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of the validate step; ``to_dict()`` is the summary part of ``validation.json``."""

    passed: bool
    source: str
    counts: Mapping[str, int]
    data_hash: str
    expectations: tuple[ExpectationOutcome, ...]
    notes: tuple[str, ...] = ()
    out_dir: Path | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(e for e in self.expectations if not e.success)

    def report(self) -> str:
        """Short human-readable text: each failed expectation, its split, up to 5 offending rows."""
        total, failed = len(self.expectations), self.failures
        if not failed:
            head = f"data validation passed: {total} expectations on {_counts_text(self.counts)} (source {self.source})"
        else:
            head = (f"data validation failed: {len(failed)} of {total} expectations "
                    f"on {_counts_text(self.counts)} (source {self.source})")
        lines = [head]
        for e in failed:
            what = (f"{e.unexpected_count} of {e.element_count} rows" if e.unexpected_count is not None
                    else f"observed {e.observed_value!r}")
            lines.append(f"- {e.batch}: {e.name} [{e.description}]: {what}")
            lines.extend(f"    {_sample_text(s)}" for s in e.samples)
        lines.extend(f"note: {n}" for n in self.notes)
        if self.out_dir is not None:
            lines.append(f"full result: {self.out_dir / 'validation.json'}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "source": self.source,
            "counts": dict(self.counts),
            "data_hash": self.data_hash,
            "notes": list(self.notes),
            "parameters": dict(self.parameters),
            "expectations": [e.to_dict() for e in self.expectations],
        }


def _counts_text(counts: Mapping[str, int]) -> str:
    return " / ".join(f"{s} {n}" for s, n in counts.items())


def _sample_text(sample: Mapping[str, Any]) -> str:
    parts = []
    for k, v in sample.items():
        if isinstance(v, str) and len(v) > _SAMPLE_CHARS:
            v = v[:_SAMPLE_CHARS] + f"... ({len(v)} chars)"
        parts.append(f"{k}={v!r}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------------- GX plumbing


@contextlib.contextmanager
def _gx_quiet() -> Iterator[None]:
    """Silence the deprecation noise GX itself raises on import and use (the pipeline runs warnings-as-errors)."""
    with warnings.catch_warnings():
        # great_expectations.datasource.fluent...file_path_data_connector imports sre_constants and sre_parse.
        warnings.filterwarnings("ignore", message=r"module 'sre_\w+' is deprecated", category=DeprecationWarning)
        yield


@functools.lru_cache(maxsize=4)
def _context(gx_dir: Path) -> Any:
    """The file-mode GX context of ``gx_dir`` (read only: suites and the pandas datasource), cached per dir."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no usage statistics, no network
    if not (gx_dir / "great_expectations.yml").is_file():
        raise CloudError(f"no Great Expectations project at {gx_dir} (great_expectations.yml missing)")
    with _gx_quiet():
        try:
            import great_expectations as gx
        except ImportError:
            raise CloudError(
                "data validation needs Great Expectations; install it with: pip install 'slm-intents[cloud]'"
            ) from None
        return gx.get_context(mode="file", context_root_dir=str(gx_dir))


def _run_suite(context: Any, kind: str, frame: "pd.DataFrame", parameters: Mapping[str, Any]) -> Any:
    asset_name, suite_name, key = SUITES[kind]
    with _gx_quiet():
        suite = context.suites.get(suite_name)
        batch_def = context.data_sources.get(DATASOURCE).get_asset(asset_name).get_batch_definition("whole")
        batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(
            suite,
            expectation_parameters=dict(parameters),
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [key]},
        )


def _outcomes(batch: str, suite: str, key: str, gx_result: Any, frame: "pd.DataFrame") -> list[ExpectationOutcome]:
    outcomes = []
    indexed = frame.set_index(key, drop=False)
    for r in gx_result.results:
        cfg = r.expectation_config
        res = dict(r.result or {})
        samples: list[Mapping[str, Any]] = []
        if not r.success:
            for item in (res.get("unexpected_index_list") or [])[:MAX_SAMPLES]:
                k = item.get(key) if isinstance(item, Mapping) else item
                if k in indexed.index:
                    row = indexed.loc[k]
                    samples.append({c: _plain(row[c]) for c in frame.columns})
        exc = getattr(r, "exception_info", None) or {}
        if isinstance(exc, Mapping) and exc.get("raised_exception"):
            res.setdefault("observed_value", f"error: {exc.get('exception_message')}")
        outcomes.append(ExpectationOutcome(
            batch=batch,
            suite=suite,
            expectation=cfg.type,
            column=cfg.kwargs.get("column"),
            description=getattr(cfg, "description", None) or "",
            success=bool(r.success),
            element_count=res.get("element_count"),
            unexpected_count=res.get("unexpected_count"),
            observed_value=_plain(res.get("observed_value")),
            samples=tuple(samples),
        ))
    return outcomes


def _plain(value: Any) -> Any:
    """numpy / pandas scalars -> JSON-ready Python values (missing -> None)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    item = getattr(value, "item", None)
    return item() if callable(item) else value


# --------------------------------------------------------------------------------------------------- frames


def _frames(splits: Mapping[str, Sequence[Row]], params: Params) -> dict[str, "pd.DataFrame"]:
    import pandas as pd

    train_texts = {t.casefold() for t, _ in splits["train"] if t}
    frames: dict[str, pd.DataFrame] = {}
    for s in SPLITS:
        rows = splits[s]
        frames[s] = pd.DataFrame({
            "line": pd.Series([i + 2 for i in range(len(rows))], dtype="int64"),  # line 1 is the header
            "text": pd.Series([t or None for t, _ in rows], dtype="object"),
            "intent": pd.Series([lab or None for _, lab in rows], dtype="object"),
            "in_train": pd.Series([s != "train" and bool(t) and t.casefold() in train_texts for t, _ in rows],
                                  dtype="bool"),
        })
    total = sum(len(splits[s]) for s in SPLITS)
    ratios = params.data.split_ratios
    expected = {s: float(ratios.get(s, 0.0)) for s in SPLITS}
    frames["splits"] = pd.DataFrame({
        "split": list(SPLITS),
        "rows": [len(splits[s]) for s in SPLITS],
        "ratio": [round(len(splits[s]) / total, 6) if total else 0.0 for s in SPLITS],
        "expected_ratio": [expected[s] for s in SPLITS],
    })
    frames["splits"]["ratio_deviation"] = (frames["splits"]["ratio"] - frames["splits"]["expected_ratio"]).abs().round(6)
    per_split = {s: _label_counts(splits[s]) for s in SPLITS}
    frames["labels"] = pd.DataFrame({
        "label": list(params.labels),
        **{f"{s}_rows": [per_split[s].get(lab, 0) for lab in params.labels] for s in SPLITS},
    })
    return frames


def _label_counts(rows: Sequence[Row]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, lab in rows:
        counts[lab] = counts.get(lab, 0) + 1
    return counts


def _parameters(params: Params, source: str) -> tuple[dict[str, Any], list[str]]:
    data = params.data
    parameters: dict[str, Any] = {
        "labels": list(params.labels),
        "min_chars": data.min_chars,
        "max_chars": data.max_chars,
        "split_tolerance": data.split_tolerance,
        "leak_mostly": 1.0,
    }
    notes: list[str] = []
    if source in PUBLISHED_SOURCES:
        what = "SNIPS published split" if source == "snips" else "published split (files per split)"
        leak_tol = data.published_leak_tolerance
        parameters["split_tolerance"] = 1.0
        parameters["leak_mostly"] = round(1.0 - leak_tol, 6)
        notes.append(f"{what}: split ratios are fixed by the benchmark and not checked against "
                     "params.data.split_ratios (tolerance 1.0; deviations are shown in the result)")
        notes.append(f"{what}: up to {leak_tol:.0%} of val/test rows may repeat a train text "
                     "(data.published_leak_tolerance)")
    return parameters, notes


def unseen_labels(splits: Mapping[str, Sequence[Row]], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """Labels of val/test rows that are not in the label list: ``{label: {split: rows}}``."""
    known = set(labels)
    out: dict[str, dict[str, int]] = {}
    for s in ("val", "test"):
        for _, lab in splits[s]:
            if lab and lab not in known:
                out.setdefault(lab, {}).setdefault(s, 0)
                out[lab][s] += 1
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------------- the step


def validate(
    processed_dir: str | Path,
    out_dir: str | Path,
    params: Params,
    *,
    source: str | None = None,
    gx_dir: str | Path | None = None,
) -> ValidationResult:
    """Validate the processed splits; write ``validation.json``, ``report.txt`` and ``data_docs/`` to ``out_dir``.

    ``source`` is ``"snips"``, ``"splits"`` or ``"csv"``; by default it is read from ``processed/prepare.json`` and is
    ``"csv"`` (every check strict) when that file is absent. Raises :class:`ValidationFailed` when any
    expectation fails, :class:`DataError` when the processed files cannot be read.

    >>> store = Store.at(".store")  # doctest: +SKIP
    >>> validate(store.processed(), store.validation(run_id), load_params()).passed
    True
    """
    processed = Path(processed_dir)
    out = Path(out_dir)
    splits = read_processed(processed)
    if source is None:
        manifest = read_manifest(processed) or {}
        source = str(manifest.get("source") or "csv")
    if source not in SOURCES:
        raise CloudError(f"unknown data source kind {source!r} (expected one of: {', '.join(SOURCES)})")
    parameters, notes = _parameters(params, source)
    frames = _frames(splits, params)
    unseen = unseen_labels(splits, params.labels)
    per_batch = {b: parameters for b in (*SPLITS, "splits", "labels")}
    if unseen:
        listed = ", ".join(f"{lab} ({', '.join(f'{n} {s}' for s, n in c.items())})" for lab, c in unseen.items())
        rows = sum(sum(c.values()) for c in unseen.values())
        if params.data.unseen_labels == "score":
            # kept: they count as errors in evaluation, as published benchmarks score them
            allowed = {**parameters, "labels": [*parameters["labels"], *unseen]}
            per_batch.update(val=allowed, test=allowed)
            notes.append(f"{rows} val/test rows carry {len(unseen)} labels not in the label list, kept and scored as "
                         f"errors (data.unseen_labels = score): {listed}")
        else:
            notes.append(f"{rows} val/test rows carry {len(unseen)} labels not in the label list: {listed}; "
                         "set data.unseen_labels to score to keep them as errors, or add them to labels")

    context = _context(Path(gx_dir).resolve() if gx_dir else DEFAULT_GX_DIR)
    gx_results: dict[str, Any] = {}
    outcomes: list[ExpectationOutcome] = []
    for batch in (*SPLITS, "splits", "labels"):
        kind = batch if batch in ("splits", "labels") else "rows"
        _, suite_name, key = SUITES[kind]
        gx_results[batch] = _run_suite(context, kind, frames[batch], per_batch[batch])
        outcomes.extend(_outcomes(batch, suite_name, key, gx_results[batch], frames[batch]))

    if source in PUBLISHED_SOURCES:
        leaks = {s: int(frames[s]["in_train"].sum()) for s in ("val", "test")}
        notes.append("rows repeating a train text: " + ", ".join(f"{s} {n}" for s, n in leaks.items()))

    result = ValidationResult(
        passed=all(o.success for o in outcomes),
        source=source,
        counts={s: len(splits[s]) for s in SPLITS},
        data_hash=data_hash(processed),
        expectations=tuple(outcomes),
        notes=tuple(notes),
        out_dir=out,
        parameters=parameters,
    )
    _write_outputs(out, result, gx_results)
    if not result.passed:
        names = ", ".join(f"{o.batch}: {o.name}" for o in result.failures)
        raise ValidationFailed(f"data validation failed ({names})", result.report())
    return result


# --------------------------------------------------------------------------------------------------- outputs


def _write_outputs(out: Path, result: ValidationResult, gx_results: Mapping[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    full = result.to_dict()
    full["gx"] = {batch: r.to_json_dict() for batch, r in gx_results.items()}
    (out / "validation.json").write_text(json.dumps(full, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "report.txt").write_text(result.report() + "\n", encoding="utf-8")
    _write_data_docs(out / "data_docs", result, gx_results)


def _write_data_docs(docs: Path, result: ValidationResult, gx_results: Mapping[str, Any]) -> None:
    """One GX-rendered validation page per batch plus a small index (GX's site builder needs its own stores)."""
    docs.mkdir(parents=True, exist_ok=True)
    with _gx_quiet():
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        renderer, view = ValidationResultsPageRenderer(), DefaultJinjaPageView()
        for batch, r in gx_results.items():
            (docs / f"{batch}.html").write_text(view.render(renderer.render(r)), encoding="utf-8")
    items = []
    for batch, r in gx_results.items():
        failed = [o for o in result.failures if o.batch == batch]
        status = "passed" if r.success else f"FAILED ({', '.join(o.name for o in failed)})"
        items.append(f'<li><a href="{batch}.html">{html.escape(batch)}</a>: {html.escape(status)}</li>')
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Data validation</title></head><body>"
        f"<h1>Data validation: {'passed' if result.passed else 'FAILED'}</h1>"
        f"<pre>{html.escape(result.report())}</pre><ul>{''.join(items)}</ul></body></html>\n"
    )
    (docs / "index.html").write_text(page, encoding="utf-8")


# --------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.validate",
                                     description="Validate processed/{train,val,test}.csv with Great Expectations.")
    parser.add_argument("--processed", required=True, help="directory with train.csv, val.csv, test.csv")
    parser.add_argument("--out", required=True, help="directory for validation.json, report.txt, data_docs/")
    parser.add_argument("--params", default=None, help="params file (default: pipelines/params.json)")
    parser.add_argument("--source", choices=SOURCES, default=None,
                        help="input kind (default: from processed/prepare.json, else csv)")
    parser.add_argument("--gx", default=None, help="Great Expectations project dir (default: the repo's gx/)")
    args = parser.parse_args(argv)
    try:
        result = validate(args.processed, args.out, load_params(args.params), source=args.source, gx_dir=args.gx)
    except ValidationFailed as exc:
        print(exc.report or str(exc), file=sys.stderr)
        return 1
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
