"""Split by image first, then make pairs inside each split.

The original failure came from a partitioning index bug, so the order here is the point:
images are assigned to train/val/test per class before a single pair exists, and a pair only
ever joins two images of the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from siamese.data.images import ImageSet

VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
# Each split needs two distinct images of a class to make a positive pair of it.
MIN_PER_SPLIT = 2
MIN_IMAGES_PER_CLASS = 3 * MIN_PER_SPLIT


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (n, 40, 50) float32 in [0, 1]
    labels: np.ndarray  # (n,) class index
    origins: tuple[str, ...]

    @cached_property
    def pixel_stats(self) -> tuple[float, float]:
        """The images' mean and standard deviation, as torch computes them: a network's
        normalisation. Once per split, not once per trial (or per population member)."""
        import torch  # here: the data package itself needs no torch

        images = torch.as_tensor(self.images)
        return float(images.mean()), float(images.std())


@dataclass(frozen=True)
class PairSet:
    """Pairs as indices into one split's images; label 1.0 = same object, 0.0 = different."""

    left: np.ndarray
    right: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def split_by_image(data: ImageSet, seed: int) -> dict[str, Split]:
    """Stratified train/val/test assignment of images (not pairs), seeded."""
    rng = np.random.default_rng([seed, 0])
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(data.labels):
        members = rng.permutation(np.flatnonzero(data.labels == cls))
        n_val = max(MIN_PER_SPLIT, round(VAL_FRACTION * len(members)))
        n_test = max(MIN_PER_SPLIT, round(TEST_FRACTION * len(members)))
        parts["val"] += members[:n_val].tolist()
        parts["test"] += members[n_val : n_val + n_test].tolist()
        parts["train"] += members[n_val + n_test :].tolist()
    return {
        name: Split(data.images[idx], data.labels[idx], tuple(data.origins[i] for i in idx))
        for name, idx in ((n, np.sort(np.asarray(ix, np.int64))) for n, ix in parts.items())
    }


def _two_distinct(
    rng: np.random.Generator, members: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """n pairs of different images drawn from `members` (which has at least two)."""
    first = rng.integers(0, len(members), n)
    second = (first + rng.integers(1, len(members), n)) % len(members)
    return members[first], members[second]


def _one_each(rng: np.random.Generator, members: np.ndarray, n: int) -> np.ndarray:
    return members[rng.integers(0, len(members), n)]


def one_vs_rest_pairs(labels: np.ndarray, target: int, n: int, rng: np.random.Generator) -> PairSet:
    """Positives [C, C] of two distinct images of the target; negatives [C, other]."""
    target_members = np.flatnonzero(labels == target)
    others = np.flatnonzero(labels != target)
    n_pos = n // 2
    pos_left, pos_right = _two_distinct(rng, target_members, n_pos)
    neg_left = _one_each(rng, target_members, n - n_pos)
    neg_right = _one_each(rng, others, n - n_pos)
    return _shuffled(rng, pos_left, pos_right, neg_left, neg_right)


def same_class_pairs(labels: np.ndarray, n: int, rng: np.random.Generator) -> PairSet:
    """Positives: two distinct images of one class; negatives: images of two different classes."""
    classes = np.unique(labels)
    members = {int(c): np.flatnonzero(labels == c) for c in classes}
    n_pos = n // 2
    pos_classes = rng.choice(classes, n_pos)
    pos_left = np.empty(n_pos, np.int64)
    pos_right = np.empty(n_pos, np.int64)
    for cls in np.unique(pos_classes):
        rows = np.flatnonzero(pos_classes == cls)
        pos_left[rows], pos_right[rows] = _two_distinct(rng, members[int(cls)], len(rows))
    first = rng.integers(0, len(classes), n - n_pos)
    second = (first + rng.integers(1, len(classes), n - n_pos)) % len(classes)
    neg_left = np.array([_one_each(rng, members[int(classes[c])], 1)[0] for c in first], np.int64)
    neg_right = np.array([_one_each(rng, members[int(classes[c])], 1)[0] for c in second], np.int64)
    return _shuffled(rng, pos_left, pos_right, neg_left, neg_right)


def _shuffled(
    rng: np.random.Generator, pl: np.ndarray, pr: np.ndarray, nl: np.ndarray, nr: np.ndarray
) -> PairSet:
    left = np.concatenate([pl, nl]).astype(np.int64)
    right = np.concatenate([pr, nr]).astype(np.int64)
    labels = np.concatenate([np.ones(len(pl)), np.zeros(len(nl))]).astype(np.float32)
    order = rng.permutation(len(labels))
    return PairSet(left[order], right[order], labels[order])


def make_pairs(
    split: Split,
    task: str,
    target: int | None,
    n: int,
    seed: int,
    stream: int,
    same_image_bug: bool = False,
) -> PairSet:
    rng = np.random.default_rng([seed, 1, stream])
    if task == "one-vs-rest":
        assert target is not None
        pairs = one_vs_rest_pairs(split.labels, target, n, rng)
    else:
        pairs = same_class_pairs(split.labels, n, rng)
    if same_image_bug:
        # The original's bug: the right index was taken from the left one, so both towers
        # always saw the same image and |a - b| was zero for every pair.
        return PairSet(pairs.left, pairs.left.copy(), pairs.labels)
    return pairs
