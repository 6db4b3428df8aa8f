"""A network started from a kept start is the one a fresh seeded build gives, bit for bit."""

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from siamese.config import HEADS, TrainConfig
from siamese.data.pairs import Split
from siamese.model import SiameseNet, build_model
from siamese.train.initial import forget_starts, seeded_model


@pytest.fixture(autouse=True)
def no_kept_starts() -> Iterator[None]:
    forget_starts()
    yield
    forget_starts()


def built_afresh(config: TrainConfig) -> tuple[SiameseNet, torch.Tensor]:
    torch.default_generator.manual_seed(config.seed)
    model = build_model(config)
    return model, torch.get_rng_state()


def assert_same_values(left: SiameseNet, right: SiameseNet) -> None:
    left_state, right_state = left.state_dict(), right.state_dict()
    assert list(left_state) == list(right_state)
    for name, value in left_state.items():
        assert torch.equal(value, right_state[name]), name


@pytest.mark.parametrize("head", HEADS)
def test_a_kept_start_gives_the_weights_and_generator_of_a_fresh_build(head: str) -> None:
    config = TrainConfig(head=head, seed=7, dropout=0.1)
    seeded_model(config)  # the first build: kept
    torch.manual_seed(12345)  # the generator is somewhere else meanwhile
    again = seeded_model(config)
    rng_after_again = torch.get_rng_state()
    expected, rng_expected = built_afresh(config)
    assert_same_values(again, expected)
    assert torch.equal(rng_after_again, rng_expected)  # dropout masks then match too
    assert not any(p.is_meta for p in again.parameters())
    assert again.tower.dropout.p == 0.1


def test_a_kept_start_is_not_changed_by_training_the_networks_built_from_it() -> None:
    config = TrainConfig(head="sq", seed=3)
    first = seeded_model(config)
    second = seeded_model(config)
    with torch.no_grad():
        for model in (first, second):
            for parameter in model.parameters():
                parameter.add_(1.0)
    assert_same_values(seeded_model(config), built_afresh(config)[0])


def test_dropout_is_the_builds_own_and_other_seeds_and_heads_are_their_own() -> None:
    seeded_model(TrainConfig(head="sq", seed=1, dropout=0.0))
    for config in (
        TrainConfig(head="sq", seed=1, dropout=0.5),
        TrainConfig(head="sq", seed=2),
        TrainConfig(head="relu2", seed=1),
        TrainConfig(head="contrastive", seed=1),
    ):
        model = seeded_model(config)
        assert_same_values(model, built_afresh(config)[0])
        assert model.tower.dropout.p == config.dropout


def test_pixel_stats_are_the_torch_mean_and_std_of_the_images() -> None:
    images = np.random.default_rng(0).random((30, 40, 50), dtype=np.float32)
    split = Split(images, np.zeros(30, dtype=np.int64), tuple(f"i{k}" for k in range(30)))
    as_tensor = torch.as_tensor(images)
    assert split.pixel_stats == (float(as_tensor.mean()), float(as_tensor.std()))
    assert split.pixel_stats is split.pixel_stats  # computed once
