"""The validation pass: each image its pairs show goes through the tower once, and the
results are those of scoring every pair on its own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from siamese.config import TrainConfig
from siamese.model import SiameseNet, build_model
from siamese.train.device_data import DeviceData
from siamese.train.evaluate import evaluate


def _data(n_images: int = 7, n_pairs: int = 40) -> DeviceData:
    generator = torch.Generator().manual_seed(1)
    return DeviceData(
        images=torch.rand(n_images, 40, 50, generator=generator),
        left=torch.randint(n_images, (n_pairs,), generator=generator),
        right=torch.randint(n_images, (n_pairs,), generator=generator),
        labels=(torch.arange(n_pairs) % 2).float(),
    )


def _tower_inputs(model: SiameseNet) -> list[int]:
    """Images per tower call, recorded from now on."""
    seen: list[int] = []
    model.tower.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    return seen


def _shown(data: DeviceData) -> int:
    return int(torch.unique(torch.cat([data.left, data.right])).numel())


@pytest.mark.parametrize("limit", [None, 9])
def test_each_shown_image_goes_through_the_tower_once(limit: int | None) -> None:
    data = _data()
    model = build_model(TrainConfig(head="sq", device="cpu"))
    seen = _tower_inputs(model)
    evaluate(model, data, limit=limit)
    assert sum(seen) == _shown(data.first(limit)) < 2 * data.first(limit).labels.shape[0]


@pytest.mark.parametrize("head", ["relu2", "abs", "sq", "contrastive"])
def test_the_results_are_those_of_scoring_each_pair_on_its_own(head: str) -> None:
    torch.manual_seed(0)
    data = _data()
    model = build_model(TrainConfig(head=head, dropout=0.3, device="cpu"))
    model.train()  # the pass switches dropout off and back on
    result = evaluate(model, data)
    assert model.training
    model.eval()
    with torch.no_grad():
        emb_a, emb_b = model.embed_pair(data.images[data.left], data.images[data.right])
        out = model.head(emb_a, emb_b)
        probs = model.prob_same(out).numpy()
        loss = float(model.loss(out, data.labels))
        alive = ((emb_a > 0) | (emb_b > 0)).any(dim=0).float().mean()
    np.testing.assert_allclose(result.probs, probs, rtol=1e-6, atol=1e-7)
    assert result.loss == pytest.approx(loss, rel=1e-6)
    assert result.output_std == pytest.approx(float(np.std(probs)), abs=1e-6)
    assert result.dead_unit_fraction == pytest.approx(1.0 - float(alive))
    zero = model.head.zero_output_mask(out)
    if zero is None:
        assert math.isnan(result.head_zero_fraction)
    else:
        assert result.head_zero_fraction == pytest.approx(float(zero.float().mean()))
