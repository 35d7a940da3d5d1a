"""A small, imbalanced intent set built from SNIPS, shaped like a user's first data set.

    python bench/imbalanced_snips.py --snips ../shared/data/snips --out bench/results/snips-imbalanced

writes ``train.csv`` (2,500 rows: PlayMusic 70%, RateBook 25 rows, SearchScreeningEvent 20 rows, the other four
intents sharing the rest) and ``test.csv`` (the full 700-row SNIPS test set), header ``utterance,label``, and no
validation file, so the pipeline carves one from train (``--text-column utterance --label-column label``).
Rows are drawn from SNIPS train with a fixed seed; the result is the same on every machine.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

SHAPE = {"PlayMusic": 1750, "RateBook": 25, "SearchScreeningEvent": 20}
TOTAL = 2500  # SNIPS train holds about 1,900 rows of each intent: 70% of 2,500 is what PlayMusic can give


def _read(split_dir: Path) -> list[tuple[str, str]]:
    texts = (split_dir / "seq.in").read_text(encoding="utf-8").splitlines()
    labels = (split_dir / "label").read_text(encoding="utf-8").splitlines()
    return [(" ".join(t.split()), lab.strip()) for t, lab in zip(texts, labels)]


def build(snips: Path, out: Path, seed: int = 13) -> dict[str, int]:
    rng = random.Random(seed)  # nosec B311 # a seeded sample, no secret
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in _read(snips / "train"):
        by_label.setdefault(row[1], []).append(row)
    rest = sorted(set(by_label) - set(SHAPE))
    left = TOTAL - sum(SHAPE.values())
    counts = dict(SHAPE)
    for i, label in enumerate(rest):
        counts[label] = left // len(rest) + (1 if i < left % len(rest) else 0)
    rows = [row for label in sorted(counts) for row in rng.sample(by_label[label], counts[label])]
    rng.shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    for name, split in (("train.csv", rows), ("test.csv", _read(snips / "test"))):
        with (out / name).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(("utterance", "label"))
            writer.writerows(split)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--snips", type=Path, required=True, help="the SNIPS directory (train/ valid/ test/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    counts = build(args.snips, args.out, args.seed)
    print(f"{args.out}: train {sum(counts.values())} rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
