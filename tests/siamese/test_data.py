import sys
from pathlib import Path

import numpy as np
import pytest

from siamese import DataConfig, DataError, prepare_data
from siamese.data import load_source, sources
from siamese.data.pairs import split_by_image


def _pixel_keys(images: np.ndarray) -> set[bytes]:
    return {img.tobytes() for img in images}


def test_no_image_is_in_two_splits() -> None:
    data = load_source("digits")
    splits = split_by_image(data, seed=3)
    origins = [set(s.origins) for s in splits.values()]
    assert sum(len(o) for o in origins) == len(data)
    assert (
        not (origins[0] & origins[1])
        and not (origins[0] & origins[2])
        and not (origins[1] & origins[2])
    )


def test_pairs_only_join_images_of_their_own_split() -> None:
    data = prepare_data(DataConfig(train_pairs=256, val_pairs=64))
    assert data.train_pairs.left.max() < len(data.train.labels)
    assert data.val_pairs.right.max() < len(data.val.labels)
    train_keys, val_keys = _pixel_keys(data.train.images), _pixel_keys(data.val.images)
    assert not (train_keys & val_keys)


@pytest.mark.parametrize("task,target", [("same-class", None), ("one-vs-rest", "3")])
def test_pairs_are_balanced_and_labelled_correctly(task: str, target: str | None) -> None:
    data = prepare_data(DataConfig(task=task, target=target, train_pairs=500, val_pairs=100))
    pairs, split = data.train_pairs, data.train
    assert pairs.labels.mean() == pytest.approx(0.5, abs=0.01)
    same_class = split.labels[pairs.left] == split.labels[pairs.right]
    assert np.array_equal(same_class, pairs.labels == 1.0)
    assert not np.any(pairs.left == pairs.right)  # a positive pair is two distinct images
    if task == "one-vs-rest":
        target_index = data.class_names.index("3")
        assert np.all(split.labels[pairs.left] == target_index)  # [C, C] and [C, other]


def test_pairs_are_deterministic_by_seed() -> None:
    a = prepare_data(DataConfig(seed=5, train_pairs=128, val_pairs=32))
    b = prepare_data(DataConfig(seed=5, train_pairs=128, val_pairs=32))
    c = prepare_data(DataConfig(seed=6, train_pairs=128, val_pairs=32))
    assert np.array_equal(a.train_pairs.left, b.train_pairs.left)
    assert np.array_equal(a.train_pairs.labels, b.train_pairs.labels)
    assert not np.array_equal(a.train_pairs.left, c.train_pairs.left)


def test_shapes_are_seeded_and_have_several_classes() -> None:
    a, b = load_source("shapes", seed=1), load_source("shapes", seed=1)
    assert a.images.shape[1:] == (40, 50) and len(a.class_names) >= 4
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, load_source("shapes", seed=2).images)


def test_digits_are_40x50_in_unit_range() -> None:
    data = load_source("digits")
    assert data.images.shape == (1797, 40, 50)
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0


def test_digits_are_scikit_learns_read_without_importing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sklearn.datasets import load_digits

    expected = load_digits()
    monkeypatch.delitem(sys.modules, "sklearn.datasets")  # importing it again would show
    images, labels = sources.digits_arrays()
    assert np.array_equal(images, expected.images) and np.array_equal(labels, expected.target)
    assert "sklearn.datasets" not in sys.modules


def test_digits_fall_back_to_scikit_learns_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.datasets import load_digits

    monkeypatch.setattr(sources, "DIGITS_FILE", ("datasets", "data", "moved.csv.gz"))
    images, labels = sources.digits_arrays()
    assert np.array_equal(images, load_digits().images) and labels.dtype == np.int64


def test_folder_source_reads_grayscale_and_resizes(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            rgb = (rng.random((30, 20, 3)) * 255).astype(np.uint8)
            Image.fromarray(rgb).save(tmp_path / cls / f"{i}.png")
    data = load_source(f"folder:{tmp_path}")
    assert data.images.shape == (12, 40, 50) and data.class_names == ("cat", "dog")
    assert data.origins[0].endswith("0.png")


def test_npz_source_scales_uint8(tmp_path: Path) -> None:
    x = np.full((12, 40, 50), 255, np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat([0, 1], 6))
    data = load_source(f"npz:{tmp_path / 'd.npz'}")
    assert data.images.max() == pytest.approx(1.0) and data.class_names == ("0", "1")


def test_a_file_that_is_not_an_npz_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match=r"d\.npz: not an \.npz file"):
        load_source(f"npz:{tmp_path / 'd.npz'}")


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_npz_is_named_as_unreadable(tmp_path: Path, damage: str) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((12, 40, 50), np.uint8), y=np.repeat([0, 1], 6))
    raw = bytearray((tmp_path / "d.npz").read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # bytes inside x's data: the zip's CRC check fails on reading
        raw[200] ^= 0xFF
    (tmp_path / "d.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"d\.npz: not a readable \.npz file \(BadZipFile\)"):
        load_source(f"npz:{tmp_path / 'd.npz'}")


def test_an_empty_npz_is_missing_its_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz")
    with pytest.raises(DataError, match=r"missing array\(s\) \['x', 'y'\]"):
        load_source(f"npz:{tmp_path / 'd.npz'}")


def test_an_npz_of_mixed_image_shapes_says_so(tmp_path: Path) -> None:
    x = np.empty(2, dtype=object)
    x[0], x[1] = np.zeros((40, 50)), np.zeros((30, 20))
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
    with pytest.raises(DataError, match="mixes image shapes"):
        load_source(f"npz:{tmp_path / 'd.npz'}")


def test_an_npz_whose_labels_are_python_objects_names_y(tmp_path: Path) -> None:
    y = np.empty(2, dtype=object)
    y[0], y[1] = {"a": 1}, None
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 40, 50), dtype=np.uint8), y=y)
    with pytest.raises(DataError, match=r"d\.npz: array y holds Python objects") as raised:
        load_source(f"npz:{tmp_path / 'd.npz'}")
    assert "image shapes" not in str(raised.value)


def test_injected_bug_feeds_identical_pairs_and_is_warned() -> None:
    data = prepare_data(DataConfig(train_pairs=64, val_pairs=32, inject_bug="same-image"))
    assert data.identical_train_pair_fraction == 1.0
    assert any("same image left and right" in w for w in data.warnings)
