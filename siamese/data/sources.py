"""Image sources: every loader returns an `ImageSet` of float32 images in [0, 1], 40x50.

Loaders only read and convert; whether the data is fit to train on is decided by
`siamese.data.checks`, which names the file or index of anything wrong.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib.npyio import NpzFile
from PIL import Image, UnidentifiedImageError

from siamese.config import IMAGE_HEIGHT, IMAGE_WIDTH
from siamese.data.images import ImageSet
from siamese.data.shapes import load_shapes_set
from siamese.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Images are shrunk to 40x50; a bigger file than this is refused before it is decoded (a
# 20000x20000 PNG of a few KB would take 400 MB of memory to decode).
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
# Where scikit-learn keeps its digits (64 pixels and the label per row).
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")
DIGITS_SHAPE = (1797, 65)


def resize(image: np.ndarray) -> np.ndarray:
    """One grayscale image in [0, 1] of any size -> 40x50 float32, as in training and predict."""
    if image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH):
        return image.astype(np.float32)
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(
        pil.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR), np.float32
    )


def _too_large(path: Path, size: str) -> DataError:
    return DataError(
        f"{path}: image of {size}; expected at most {MAX_IMAGE_PIXELS:,} pixels "
        f"({MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}), refused before decoding"
    )


def read_image_file(path: Path) -> np.ndarray:
    """A PNG/JPEG file as a 40x50 grayscale float image in [0, 1]; DataError names the file.
    Its size is read from the header first: an image over MAX_IMAGE_PIXELS is never decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise _too_large(path, f"{width}x{height} pixels")
                gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own limit, hit while it opens the file: its message has the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, f"{int(found[1]):,} pixels" if found else "too many pixels") from exc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot read image ({type(exc).__name__}); expected a PNG or JPEG"
        ) from exc
    return resize(gray)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: (1797, 8, 8) float images in 0..16 and their labels.

    Read from scikit-learn's own data file: importing scikit-learn to call `load_digits`
    takes 0.6-1 s of every `train` and `data export`. Where the file is not where this
    version of scikit-learn keeps it, `load_digits` reads it."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0], *DIGITS_FILE) if folders else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",")
        if table.shape == DIGITS_SHAPE:
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def load_digits_set() -> ImageSet:
    """scikit-learn's bundled handwritten digits (1797 images, 8x8, 0..16) resized to 40x50."""
    raw, labels = digits_arrays()
    images = np.stack([resize(img / 16.0) for img in raw])
    origins = tuple(f"digits[{i}]" for i in range(len(labels)))
    return ImageSet(images, labels, tuple(str(d) for d in range(10)), origins, "digits")


def load_folder_set(root: Path) -> ImageSet:
    """One subfolder per class, each holding PNG/JPEG images."""
    if not root.is_dir():
        raise DataError(
            f"{root}: not a folder; expected one subfolder of PNG/JPEG images per class"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"{root}: no class subfolders; expected one subfolder of images per class")
    images, labels, origins = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir}: no .png/.jpg/.jpeg images in this class folder")
        for path in files:
            images.append(read_image_file(path))
            labels.append(label)
            origins.append(str(path))
    return ImageSet(
        np.stack(images),
        np.asarray(labels, np.int64),
        tuple(p.name for p in class_dirs),
        tuple(origins),
        f"folder:{root}",
    )


def _npz_images(path: Path, raw: np.ndarray) -> np.ndarray:
    if raw.dtype == object:
        shapes = {np.asarray(img).shape for img in raw}
        raise DataError(
            f"{path}: array x mixes image shapes {sorted(shapes)[:3]}; expected one (H, W)"
        )
    if raw.ndim != 3:
        raise DataError(
            f"{path}: array x has shape {raw.shape}; expected (N, H, W) grayscale images"
        )
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    if not np.issubdtype(raw.dtype, np.number):
        raise DataError(f"{path}: array x has dtype {raw.dtype}; expected numbers")
    return raw.astype(np.float32)


# What an object array (numpy's pickled data, never loaded) means in each array.
_OBJECT_ARRAY = {
    "x": "array x mixes image shapes (object array); expected one (H, W)",
    "y": "array y holds Python objects (object array); expected one number or string per image",
}


def _npz_array(path: Path, archive: NpzFile, key: str) -> np.ndarray:
    try:
        array: np.ndarray = archive[key]
    except ValueError as exc:
        if "pickle" not in str(exc).lower():
            raise
        why = _OBJECT_ARRAY.get(key, f"array {key} holds Python objects (object array)")
        raise DataError(f"{path}: {why}") from exc
    return array


def load_npz_set(path: Path) -> ImageSet:
    """Arrays `x` (N, H, W) and `y` (N,). uint8 pixels are scaled by 1/255, floats kept."""
    try:
        # np.load reads any non-zip file as a pickle and then reports "pickled (object) data":
        # check the zip signature first so a wrong file is named as such.
        with open(path, "rb") as handle:
            if handle.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip; or an empty one
                raise DataError(
                    f"{path}: not an .npz file; expected numpy.savez output with arrays x and y"
                )
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: _npz_array(path, archive, k) for k in archive.files}
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file; expected an .npz with arrays x and y") from exc
    except ValueError as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # truncated, corrupt
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__})") from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {missing}; expected x (N, H, W) and y (N,)")
    x = _npz_images(path, arrays["x"])
    y = arrays["y"]
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: y has shape {y.shape}; expected ({len(x)},), one label per image")
    class_names, labels = np.unique(y.astype(str), return_inverse=True)
    # NaN/Inf are left in place for the pre-flight checks, which name the image.
    finite = x[np.isfinite(x)]
    peak = float(finite.max()) if finite.size else 1.0
    if peak > 1.0:  # 0..255 floats or other scales: bring into [0, 1] as the other sources are
        x = x / peak
    images = np.stack([resize(img) for img in x]) if len(x) else x
    origins = tuple(f"{path}:x[{i}]" for i in range(len(x)))
    return ImageSet(
        images, labels.astype(np.int64), tuple(str(c) for c in class_names), origins, f"npz:{path}"
    )


def load_source(source: str, seed: int = 0) -> ImageSet:
    """Dispatch on `--data`: digits, shapes, folder:PATH, npz:PATH."""
    kind, _, arg = source.partition(":")
    if kind == "digits":
        return load_digits_set()
    if kind == "shapes":
        return load_shapes_set(seed=seed)
    if kind == "folder":
        return load_folder_set(Path(arg))
    if kind == "npz":
        return load_npz_set(Path(arg))
    raise DataError(f"--data: expected digits, shapes, folder:PATH or npz:PATH, got {source!r}")
