"""Data: load a source, check it, split by image, make seeded balanced pairs."""

from __future__ import annotations

from dataclasses import dataclass

from siamese.config import DataConfig
from siamese.data import checks
from siamese.data.images import ImageSet
from siamese.data.pairs import PairSet, Split, make_pairs, split_by_image
from siamese.data.sources import load_source, read_image_file, resize

__all__ = [
    "ImageSet",
    "PairData",
    "PairSet",
    "Split",
    "load_source",
    "prepare_data",
    "read_image_file",
    "resize",
]


@dataclass(frozen=True)
class PairData:
    """Everything training needs: three image splits and their pairs, plus the warnings."""

    train: Split
    val: Split
    test: Split
    train_pairs: PairSet
    val_pairs: PairSet
    test_pairs: PairSet
    class_names: tuple[str, ...]
    warnings: tuple[str, ...]
    identical_train_pair_fraction: float

    def summary(self) -> dict[str, object]:
        return {
            "classes": len(self.class_names),
            "images": {
                "train": len(self.train.labels),
                "val": len(self.val.labels),
                "test": len(self.test.labels),
            },
            "pairs": {
                "train": len(self.train_pairs),
                "val": len(self.val_pairs),
                "test": len(self.test_pairs),
            },
            "positive_fraction": float(self.train_pairs.labels.mean()),
            "identical_train_pair_fraction": self.identical_train_pair_fraction,
            "warnings": list(self.warnings),
        }


def prepare_data(config: DataConfig, images: ImageSet | None = None) -> PairData:
    """Load (unless given), run every pre-flight check, split, pair. Raises DataError."""
    data = images if images is not None else load_source(config.source, seed=config.seed)
    checks.check_images(data)
    target = checks.resolve_target(data, config.target) if config.task == "one-vs-rest" else None
    splits = split_by_image(data, config.seed)
    checks.check_splits(splits)
    bug = config.inject_bug == "same-image"
    sizes = {"train": config.train_pairs, "val": config.val_pairs, "test": config.val_pairs}
    pairs = {
        name: make_pairs(splits[name], config.task, target, sizes[name], config.seed, stream, bug)
        for stream, name in enumerate(("train", "val", "test"))
    }
    warnings = checks.warn_about_images(data) + checks.warn_about_splits(splits)
    for name in ("train", "val"):
        warnings += checks.warn_about_pairs(name, splits[name], pairs[name])
    return PairData(
        splits["train"],
        splits["val"],
        splits["test"],
        pairs["train"],
        pairs["val"],
        pairs["test"],
        data.class_names,
        tuple(warnings),
        checks.identical_pair_fraction(splits["train"], pairs["train"]),
    )
