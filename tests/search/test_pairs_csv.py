"""`predict --pairs FILE.csv`: rows of left,right[,same], as `data export` writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.pairs_csv import read_pairs_csv
from siamese.errors import SiameseInputError


def test_a_csv_saved_with_a_byte_order_mark_keeps_its_header(tmp_path: Path) -> None:
    """Excel writes UTF-8 with a BOM: the header was read as a first pair of images."""
    csv = tmp_path / "pairs.csv"
    csv.write_bytes("\ufeffleft,right,same\na.png,b.png,1\nc.png,d.png,0\n".encode())
    read = read_pairs_csv(csv)
    assert read.pairs == [
        (tmp_path / "a.png", tmp_path / "b.png"),
        (tmp_path / "c.png", tmp_path / "d.png"),
    ]
    assert read.same == [1, 0]


@pytest.mark.parametrize("row", [",", "a.png,", " ,b.png"])
def test_a_row_with_an_empty_path_is_named(tmp_path: Path, row: str) -> None:
    """It named the CSV's folder as an image that could not be read."""
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"left,right\na.png,b.png\n{row}\n")
    with pytest.raises(SiameseInputError, match=r"pairs\.csv: row 2 has an empty image path"):
        read_pairs_csv(csv)


def test_a_header_in_another_order_names_the_columns(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("same,right,left\n1,b.png,a.png\n0,c.png,a.png\n")
    read = read_pairs_csv(csv)
    assert read.pairs == [
        (tmp_path / "a.png", tmp_path / "b.png"),
        (tmp_path / "a.png", tmp_path / "c.png"),
    ]
    assert read.same == [1, 0]


def test_a_first_row_that_names_one_column_only_is_a_pair(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("left,b.png\nc.png,d.png\n")  # an image may be called "left"
    assert read_pairs_csv(csv).pairs == [
        (tmp_path / "left", tmp_path / "b.png"),
        (tmp_path / "c.png", tmp_path / "d.png"),
    ]
