"""Pre-flight checks: everything that would waste a training run is found before it starts.

Errors raise `DataError` with the file or index and what was expected; suspicious but
trainable data yields warnings (plain strings), which the CLI prints and the tracker logs.
"""

from __future__ import annotations

import hashlib

import numpy as np

from siamese.data.images import ImageSet
from siamese.data.pairs import MIN_IMAGES_PER_CLASS, PairSet, Split
from siamese.errors import DataError

# max/min images per class above which class balance is worth a warning.
IMBALANCE_RATIO = 5.0


def check_images(data: ImageSet) -> None:
    if len(data) == 0:
        raise DataError(f"{data.source}: no images; expected at least {2 * MIN_IMAGES_PER_CLASS}")
    flat = data.images.reshape(len(data), -1)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad.size:
        raise DataError(
            f"{data.origins[bad[0]]}: NaN or Inf pixels ({bad.size} image(s) affected); expected finite values"
        )
    present = np.unique(data.labels)
    if present.size < 2:
        names = [data.class_names[i] for i in present]
        raise DataError(
            f"{data.source}: only {present.size} class {names}; expected at least 2 classes"
        )
    counts = np.bincount(data.labels, minlength=len(data.class_names))
    for cls, count in enumerate(counts):
        if count < MIN_IMAGES_PER_CLASS:
            raise DataError(
                f"{data.source}: class {data.class_names[cls]!r} has {count} image(s); expected at least "
                f"{MIN_IMAGES_PER_CLASS} (2 each for train, val and test, split by image)"
            )


def resolve_target(data: ImageSet, target: str | None) -> int:
    if target is None or target not in data.class_names:
        shown = ", ".join(data.class_names[:20])
        raise DataError(
            f"--target {target!r}: not a class of {data.source}; expected one of {shown}"
        )
    return data.class_names.index(target)


def check_splits(splits: dict[str, Split]) -> None:
    for name, split in splits.items():
        if len(split.labels) == 0:
            raise DataError(f"{name} split: empty; expected images of every class in every split")


def _digests(images: np.ndarray) -> list[str]:
    return [
        hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).hexdigest()
        for img in images
    ]


def warn_about_images(data: ImageSet) -> list[str]:
    warnings = []
    counts = np.bincount(data.labels, minlength=len(data.class_names))
    if counts.max() / max(counts.min(), 1) >= IMBALANCE_RATIO:
        big, small = int(counts.argmax()), int(counts.argmin())
        warnings.append(
            f"class imbalance: {data.class_names[big]!r} has {counts[big]} images, "
            f"{data.class_names[small]!r} only {counts[small]}"
        )
    flat = data.images.reshape(len(data), -1)
    constant = np.flatnonzero(flat.std(axis=1) == 0)
    if constant.size:
        warnings.append(
            f"{constant.size} constant image(s) (every pixel equal), first: {data.origins[constant[0]]}"
        )
    return warnings


def warn_about_splits(splits: dict[str, Split]) -> list[str]:
    seen: dict[str, tuple[str, str]] = {}
    shared = []
    for name, split in splits.items():
        for digest, origin in zip(_digests(split.images), split.origins, strict=True):
            if digest in seen and seen[digest][0] != name:
                shared.append((seen[digest][1], origin))
            seen.setdefault(digest, (name, origin))
    if not shared:
        return []
    first = shared[0]
    return [
        f"{len(shared)} image(s) appear in two splits (same pixels), e.g. {first[0]} and {first[1]}"
    ]


def identical_pair_fraction(split: Split, pairs: PairSet) -> float:
    """Share of pairs whose two images have identical pixels (the original data bug)."""
    if len(pairs) == 0:
        return 0.0
    same = (
        (split.images[pairs.left] == split.images[pairs.right]).reshape(len(pairs), -1).all(axis=1)
    )
    return float(same.mean())


def warn_about_pairs(name: str, split: Split, pairs: PairSet) -> list[str]:
    fraction = identical_pair_fraction(split, pairs)
    if fraction == 0.0:
        return []
    return [
        f"{name} pairs: {fraction:.0%} show the same image left and right; "
        "the network cannot learn from identical inputs (check the pairing/index code)"
    ]
