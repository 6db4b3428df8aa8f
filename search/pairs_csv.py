"""The `predict --pairs FILE.csv` input: rows of left,right[,same] image paths, relative to
the CSV's folder (the layout `data export` writes)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from siamese.errors import SiameseInputError


@dataclass(frozen=True)
class PairList:
    pairs: list[tuple[Path, Path]]
    same: list[int] | None  # the truth, when the CSV has a `same` column (`data export`'s)


def read_pairs_csv(path: Path) -> PairList:
    try:
        # utf-8-sig: a CSV saved by Excel starts with a BOM, which would hide the header.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a UTF-8 text file"
        raise SiameseInputError(f"--pairs {path}: cannot read ({reason})") from exc
    columns = _header(rows[0]) if rows else None
    if columns is not None:
        rows = rows[1:]
    order = columns or [0, 1]
    if not rows:
        raise SiameseInputError(f"--pairs {path}: no pairs in it; expected rows of left,right")
    bad = next((i for i, row in enumerate(rows, 1) if len(row) <= max(order[:2])), None)
    if bad is not None:
        raise SiameseInputError(
            f"--pairs {path}: row {bad} has fewer than {max(order[:2]) + 1} columns; "
            "expected left,right"
        )
    rows = [[row[i] if i < len(row) else "" for i in order] for row in rows]
    empty = next((i for i, row in enumerate(rows, 1) if not all(c.strip() for c in row[:2])), None)
    if empty is not None:
        raise SiameseInputError(
            f"--pairs {path}: row {empty} has an empty image path; expected left,right"
        )
    base = path.parent
    pairs = [(base / row[0].strip(), base / row[1].strip()) for row in rows]
    has_truth = columns is not None and len(columns) == 3
    return PairList(pairs, _truth_column(path, rows) if has_truth else None)


def _header(first: list[str]) -> list[int] | None:
    """Where the left, right (and same) columns are, when the first row names them, in any
    order; None when it is a pair (no header)."""
    names = [cell.strip().lower() for cell in first]
    if "left" not in names or "right" not in names:
        return None  # a pair (an image may be called "left")
    return [names.index(name) for name in ("left", "right", "same") if name in names]


def _truth_column(path: Path, rows: list[list[str]]) -> list[int]:
    truth = [row[2].strip() if len(row) > 2 else "" for row in rows]
    bad = next((i for i, value in enumerate(truth, 1) if value not in ("0", "1")), None)
    if bad is not None:
        raise SiameseInputError(f"--pairs {path}: row {bad}: the same column must be 0 or 1")
    return [int(value) for value in truth]
