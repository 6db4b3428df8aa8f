"""Held-out pairs as image files: real input for `predict` without hunting for images.

The images come from the test split, which no training or search run sees (the split
depends only on the data and the seed), and are written as 8-bit grayscale PNGs in the
`folder:PATH` layout - one subfolder per class - so a large enough export also loads as
a data source.
`pairs.csv` lists the pairs with the truth beside them: `left,right,same`.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from siamese.data import PairData
from siamese.errors import SiameseInputError

PAIRS_FILE = "pairs.csv"


@dataclass(frozen=True)
class ExportedPairs:
    folder: Path
    pairs: int
    same: int
    images: int


def write_image_file(path: Path, image: np.ndarray) -> None:
    """A [0, 1] float image as an 8-bit PNG; `read_image_file` gets it back within 1/255."""
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def export_test_pairs(data: PairData, out: Path, count: int) -> ExportedPairs:
    """The first `count` test pairs and the images they use, into the new folder `out`.

    Written into a hidden sibling folder and renamed into place, so `out` is either complete
    or absent: an interrupted export leaves nothing half-written under that name.
    """
    out = Path(os.path.abspath(out))  # `--out .` has no name to put a sibling beside
    if out.exists() or out.is_symlink():
        raise SiameseInputError(f"--out {out}: already exists; name a new folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    except OSError as exc:
        raise SiameseInputError(f"--out {out}: cannot create it ({exc.strerror})") from exc
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the samples from everyone else
        rows, images = _write_pairs(data, staging, min(count, len(data.test_pairs)))
        os.rename(staging, out)  # fails rather than replace a folder made meanwhile
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise SiameseInputError(f"--out {out}: cannot write ({exc.strerror})") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    same = sum(row[2] == "1" for row in rows)
    return ExportedPairs(out, len(rows), same, images)


def class_folder(name: str, label: int) -> str:
    """The class's name when it is a plain folder name that survives the CSV round trip
    (`predict` skips rows starting with # and strips spaces), else `class<label>`."""
    unsafe = (
        name in ("", ".", "..")
        or name != name.strip()
        or name.startswith("#")
        or any(ch in name for ch in ("/", "\\", "\0"))
    )
    return f"class{label}" if unsafe else name


def _write_pairs(data: PairData, folder: Path, count: int) -> tuple[list[list[str]], int]:
    written: dict[int, str] = {}  # test-split index -> path relative to the folder

    def image_path(index: int) -> str:
        if index not in written:
            label = int(data.test.labels[index])
            class_name = class_folder(data.class_names[label], label)
            relative = f"{class_name}/test{index:04d}.png"
            (folder / class_name).mkdir(exist_ok=True)
            write_image_file(folder / relative, data.test.images[index])
            written[index] = relative
        return written[index]

    pairs = data.test_pairs
    rows = [
        [image_path(int(pairs.left[i])), image_path(int(pairs.right[i])), str(int(pairs.labels[i]))]
        for i in range(count)
    ]
    with open(folder / PAIRS_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["left", "right", "same"])
        writer.writerows(rows)
    return rows, len(written)
