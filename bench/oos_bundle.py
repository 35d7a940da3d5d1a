"""The out-of-scope decision of a bundle, through the device path: in-scope accuracy with and without it, and the
share of out-of-scope texts answered ``unknown``.

    python bench/oos_bundle.py --bundle .store/slm-intents/edge/1 --processed .store/slm-intents/processed \\
        --oos ../shared/data/banking77/test.csv [--oos-column text]

``--processed`` is the pipeline's processed folder (its ``test.csv`` is in scope); ``--oos`` a CSV of texts the
model never saw and none of whose intents it knows (for the SNIPS model, BANKING77's test texts). The detector
and its threshold come from the bundle (fitted on training and validation texts only); nothing here tunes them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _texts(path: Path, column: str, label: str | None = None) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [(" ".join(r[column].split()), r[label] if label else "") for r in csv.DictReader(fh)]


def measure(bundle: Path, test: list[tuple[str, str]], oos: list[str], threads: int | None = None) -> dict:
    from edge_runtime import IntentClassifier

    with IntentClassifier.from_bundle(bundle, threads=threads) as clf:
        if clf.detector is None:
            raise SystemExit(f"{bundle} has no out-of-scope detector (compile.out_of_scope: none)")
        answers = clf.predict_batch([t for t, _ in test])
        oos_answers = clf.predict_batch(oos)
        unknown = clf.unknown_intent
    correct_without = sum(a.top[0][0] == y for a, (_, y) in zip(answers, test))
    correct_with = sum(a.intent == y for a, (_, y) in zip(answers, test))
    n = max(len(test), 1)
    return {"bundle": str(bundle), "in_scope_texts": len(test), "out_of_scope_texts": len(oos),
            "accuracy_without": correct_without / n, "accuracy_with": correct_with / n,
            "drop_points": 100 * (correct_without - correct_with) / n,
            "in_scope_unknown": sum(a.intent == unknown for a in answers) / n,
            "out_of_scope_unknown": sum(a.intent == unknown for a in oos_answers) / max(len(oos), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--processed", type=Path, required=True, help="processed/ folder whose test.csv is in scope")
    parser.add_argument("--oos", type=Path, required=True, help="CSV of out-of-scope texts")
    parser.add_argument("--oos-column", default="text")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = measure(args.bundle, _texts(args.processed / "test.csv", "text", "intent"),
                     [t for t, _ in _texts(args.oos, args.oos_column)], args.threads)
    print(f"in-scope test accuracy {result['accuracy_without']:.2%} without the decision, "
          f"{result['accuracy_with']:.2%} with it ({result['drop_points']:.2f} points; "
          f"{result['in_scope_unknown']:.2%} answered unknown); out-of-scope texts answered unknown: "
          f"{result['out_of_scope_unknown']:.2%} of {result['out_of_scope_texts']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
