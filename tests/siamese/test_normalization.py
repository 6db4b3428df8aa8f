"""The training images' statistics, worked out once per data (siamese.train.normalization)."""

import numpy as np
import pytest
import torch

from siamese.train import normalization
from siamese.train.normalization import pixel_stats


def images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((40, 40, 50), dtype=np.float32)


def test_the_stats_are_torchs_float32_mean_and_deviation() -> None:
    data = images(0)
    pixels = torch.as_tensor(data)
    assert pixel_stats(data) == (float(pixels.mean()), float(pixels.std()))


def test_the_same_images_are_not_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    data = images(1)
    first = pixel_stats(data)
    reads: list[object] = []

    def read(array: np.ndarray) -> torch.Tensor:
        reads.append(array)
        return torch.from_numpy(array)

    monkeypatch.setattr(normalization.torch, "as_tensor", read)
    assert pixel_stats(data) == first
    assert reads == []


def test_other_images_get_their_own_stats() -> None:
    data = images(2)
    mean, _ = pixel_stats(data)
    brighter = data + 0.25
    assert pixel_stats(brighter)[0] == pytest.approx(mean + 0.25, abs=1e-5)
    assert pixel_stats(data)[0] == pytest.approx(mean, abs=1e-7)


def test_images_freed_and_replaced_are_never_mistaken_for_the_old_ones() -> None:
    # A new array may reuse a freed one's address (its id): the weak reference tells them apart.
    for seed in range(3, 8):
        data = images(seed)
        pixels = torch.as_tensor(data)
        assert pixel_stats(data) == (float(pixels.mean()), float(pixels.std()))
