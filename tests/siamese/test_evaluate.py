"""The validation pass: each image its pairs show goes through the tower once, and the
results are those of scoring every pair on its own; the initial pass of a search's runs
after the first reuses the first run's tower."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from siamese import DataConfig, PairData, fit
from siamese.config import TrainConfig
from siamese.model import SiameseNet, build_model
from siamese.train.device_data import DeviceData
from siamese.train.evaluate import INITIAL_TOWER, TowerMemo, evaluate, roc_auc
from siamese.train.loop import INITIAL_EVAL_PAIRS


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


def _initial(head: str, seed: int = 0) -> SiameseNet:
    torch.manual_seed(seed)
    model = build_model(TrainConfig(head=head, device="cpu"))
    model.set_normalization(0.3, 0.2)
    return model


def test_a_memo_serves_an_equal_tower_whatever_the_head() -> None:
    data, memo = _data(), TowerMemo()
    first = _initial("sq")
    evaluate(first, data, limit=9, memo=memo)
    for head in ("sq", "contrastive", "relu2"):
        model = _initial(head)  # the seed draws the tower's weights before the head's
        seen = _tower_inputs(model)
        served = evaluate(model, data, limit=9, memo=memo)
        assert seen == [], f"{head}: the tower ran again"
        fresh = evaluate(_initial(head), data, limit=9)
        np.testing.assert_array_equal(served.probs, fresh.probs)
        assert (served.loss, served.dead_unit_fraction) == (fresh.loss, fresh.dead_unit_fraction)


@pytest.mark.parametrize("change", ["weights", "normalisation", "images", "seed"])
def test_a_memo_serves_nothing_but_an_equal_tower_on_equal_images(change: str) -> None:
    data, memo = _data(), TowerMemo()
    evaluate(_initial("sq"), data, limit=9, memo=memo)
    model = _initial("sq", seed=1 if change == "seed" else 0)
    if change == "weights":
        with torch.no_grad():
            model.tower.conv3.weight.view(-1)[0] += 1e-6
    if change == "normalisation":
        model.set_normalization(0.3, 0.25)
    if change == "images":
        data.images[data.left[0]] += 0.01
    seen = _tower_inputs(model)
    evaluate(model, data, limit=9, memo=memo)
    assert sum(seen) == _shown(data.first(9))


def test_the_runs_of_a_search_measure_their_start_with_the_first_runs_tower(
    small_data: PairData, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[bool] = []
    get = INITIAL_TOWER.get

    def recording(model: SiameseNet, images: torch.Tensor) -> torch.Tensor | None:
        found = get(model, images)
        served.append(found is not None)
        return found

    monkeypatch.setattr(INITIAL_TOWER, "get", recording)
    small = DataConfig(train_pairs=384, val_pairs=192)  # small_data's
    base = TrainConfig(epochs=1, device="cpu", early_stop=False, data=small)
    results = [
        fit(replace(base, head=head, dropout=dropout), small_data)
        for head, dropout in (("sq", 0.0), ("contrastive", 0.3), ("sq", 0.0))
    ]
    assert served[1:] == [True, True]
    model = _initial("contrastive")
    pixels = torch.as_tensor(small_data.train.images)
    model.set_normalization(float(pixels.mean()), float(pixels.std()))  # as fit sets it
    val = DeviceData.put(small_data.val, small_data.val_pairs, torch.device("cpu"))
    fresh = evaluate(model, val, limit=INITIAL_EVAL_PAIRS)
    assert results[1].history.initial_val_loss == fresh.loss
    assert results[1].history.initial_output_std == fresh.output_std


@pytest.mark.parametrize("kind", ["continuous", "ties", "constant", "narrow float32", "bool"])
def test_roc_auc_is_scikit_learns(kind: str) -> None:
    """The Mann-Whitney form equals roc_auc_score, ties included, on many random cases."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(2, 700))
        labels = rng.integers(0, 2, n)
        if len(np.unique(labels)) < 2:
            continue
        scores = {
            "continuous": rng.random(n),
            "ties": np.round(rng.random(n), 1),
            "constant": np.full(n, 0.5),
            "narrow float32": (0.5 + 1e-4 * rng.random(n)).astype(np.float32),
            "bool": rng.random(n) > 0.5,
        }[kind]
        assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_is_nan_where_undefined() -> None:
    assert math.isnan(roc_auc(np.ones(4), np.array([0.1, 0.2, 0.3, 0.4])))
    assert math.isnan(roc_auc(np.array([0, 1]), np.array([0.1, np.nan])))
