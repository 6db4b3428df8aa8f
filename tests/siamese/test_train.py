"""Short real training runs on the CPU."""

import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from siamese import (
    Callback,
    DataConfig,
    EpochRecord,
    History,
    PairData,
    TrainConfig,
    diagnose,
    fit,
)
from siamese.config import SEED_PRESET


def cfg(**kw: Any) -> TrainConfig:
    data = DataConfig(train_pairs=384, val_pairs=192)
    return replace(TrainConfig(epochs=3, device="cpu", data=data), **kw)


def test_a_short_run_on_digits_learns(small_data: PairData) -> None:
    result = fit(cfg(head="sq", optimizer="adam", lr=1e-3), small_data)
    records = result.history.records
    assert [r.epoch for r in records] == [1, 2, 3]
    assert records[-1].train_loss < result.history.initial_val_loss * 0.8
    assert max(r.val_auc for r in records) > 0.85
    assert set(records[-1].grad_norm) == {"conv1", "conv2", "conv3", "conv4", "fc", "head"}
    assert 1e-5 < records[-1].update_ratio < 1.0
    assert diagnose(result.history).verdict == "converged"


def test_seed_preset_reproduces_the_original_failure(small_data: PairData) -> None:
    result = fit(cfg(**SEED_PRESET), small_data)
    last = result.history.records[-1]
    assert abs(last.output_mean - 0.5) < 0.05 and last.output_std < 0.01  # ~0.50x for every pair
    verdict = diagnose(result.history)
    assert verdict.failed
    assert {"collapsed", "stalled"} <= set(verdict.kinds)


def test_huge_learning_rate_is_diagnosed_diverged_not_raised(small_data: PairData) -> None:
    result = fit(cfg(optimizer="sgd", lr=50.0), small_data)
    assert result.history.stop_reason == "non_finite"
    assert not math.isfinite(result.history.records[-1].train_loss)
    assert diagnose(result.history).kinds == ["diverged"]


def test_a_relu2_run_gone_nan_is_diverged_without_invented_dead_units(
    small_data: PairData,
) -> None:
    result = fit(cfg(optimizer="sgd", lr=1e3, head="relu2"), small_data)
    last = result.history.records[-1]
    assert result.history.stop_reason == "non_finite"
    assert math.isnan(last.dead_unit_fraction)  # NaN weights: nothing measured, nothing "dead"
    assert diagnose(result.history).kinds == ["diverged"]


def test_identical_inputs_are_diagnosed_no_signal() -> None:
    from siamese import DataConfig, prepare_data

    data = prepare_data(DataConfig(train_pairs=256, val_pairs=128, inject_bug="same-image"))
    result = fit(cfg(epochs=2), data)
    verdict = diagnose(result.history)
    assert verdict.kinds[0] == "no_signal" and "collapsed" in verdict.kinds
    # The weights do not move for want of a gradient: no finding asks for a higher lr.
    assert all("raise the learning rate" not in f.fix for f in verdict.findings)


class StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.seen: list[int] = []
        self.ended = False

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        self.seen.append(record.epoch)
        return "pruned" if record.epoch >= self.epoch else None

    def on_fit_end(self, history: History) -> None:
        self.ended = True


def test_a_callback_can_stop_the_run(small_data: PairData) -> None:
    callback = StopAfter(1)
    result = fit(cfg(), small_data, callbacks=[callback])
    assert callback.seen == [1] and callback.ended
    assert result.history.stop_reason == "pruned" and len(result.history.records) == 1


def test_same_seed_same_run(small_data: PairData) -> None:
    a = fit(cfg(epochs=1), small_data).history.records[0]
    b = fit(cfg(epochs=1), small_data).history.records[0]
    assert a.train_loss == b.train_loss and a.val_auc == b.val_auc


def test_cuda_requested_without_cuda_is_bad_input(small_data: PairData) -> None:
    from siamese import ConfigError

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ConfigError, match="--device cuda"):
        fit(cfg(device="cuda"), small_data)
