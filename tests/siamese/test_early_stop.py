"""The early-stop decision on constructed statistics: what proves a failure, what does not."""

import math
from dataclasses import replace
from typing import Any

from siamese.diagnosis import diagnose, render_text
from siamese.early_stop import (
    STALL_REACH,
    CheckPoint,
    EarlyStop,
    Window,
    early_verdict,
    proof,
)
from siamese.train.history import EpochRecord, History

GRADS = {"conv1": 0.1, "conv2": 0.1, "fc": 0.1, "head": 0.1}
DEAD = {"conv1": 0.0, "conv2": 0.0, "fc": 0.0, "head": 0.0}
# A quarter of the first of 3 epochs of 32 steps: the search's default run.
QUARTER = CheckPoint(epoch=1, step=8, epoch_steps=32, epochs=3)


def rec(**changes: Any) -> EpochRecord:
    """A healthy first-epoch record so far; each test changes what it is about."""
    healthy = EpochRecord(
        epoch=1,
        train_loss=0.62,
        val_loss=0.6,
        val_acc=0.75,
        val_auc=0.82,
        grad_norm=GRADS,
        update_ratio=5e-3,
        dead_unit_fraction=0.5,
        head_zero_fraction=math.nan,
        output_std=0.2,
        output_mean=0.5,
        seconds=1.0,
        pairs_per_second=300.0,
    )
    return replace(healthy, **changes)


def window(record: EpochRecord, steps: int = 8) -> Window:
    """The latest steps measured like the epoch so far."""
    tower = sum(v for k, v in record.grad_norm.items() if k != "head")
    return Window(steps, steps // 4, tower, record.update_ratio, record.grad_norm["conv1"])


def history(
    optimizer: str = "adam", lr: float = 1e-3, momentum: float = 0.0, head: str = "sq", **kw: Any
) -> History:
    config = {"head": head, "optimizer": optimizer, "lr": lr, "momentum": momentum}
    h = History(config=config, initial_val_loss=0.693)
    for key, value in kw.items():
        setattr(h, key, value)
    return h


def verdict(h: History, r: EpochRecord, w: Window | None = None) -> EarlyStop | None:
    return early_verdict(h, r, w or window(r), QUARTER)


STALLED = {"update_ratio": 4e-9, "val_loss": 0.6932, "val_auc": 0.49, "output_std": 0.0005}


def test_a_healthy_start_is_left_alone() -> None:
    assert proof(history(), rec(), window(rec()), QUARTER) is None
    assert verdict(history(), rec()) is None


def test_sgd_at_lr_1e_6_is_proven_stalled_at_a_quarter_of_epoch_1() -> None:
    r = rec(**STALLED)
    stop = verdict(history("sgd", 1e-6, 0.9), r)
    assert stop is not None and stop.step == 8 and stop.fraction == 0.25
    assert "stalled" in stop.kinds and stop.verdict == "collapsed+stalled"
    assert "88 steps left" in stop.proof and "100x faster" in stop.proof  # momentum 0.9
    # The stopped run's own diagnosis says the same, with the evidence.
    stopped = replace(history("sgd", 1e-6, 0.9), records=[r], early_stop=stop.to_dict())
    stopped.stop_reason = "pruned"
    d = diagnose(stopped)
    assert d.label == stop.verdict
    assert "stopped early at step 8 of 32 in epoch 1 (25%)" in render_text(d)


def test_slow_updates_that_still_add_up_prove_nothing() -> None:
    # Adam at lr 1e-6 moves ~1e-4 of the weights per step: slow, yet it ends at val_auc 0.85.
    slow = rec(update_ratio=9e-5, val_loss=0.69, val_auc=0.6, output_std=0.005)
    assert proof(history("adam", 1e-6), slow, window(slow), QUARTER) is None
    # SGD at lr 1e-3 (momentum 0.9) measures ~4e-6 this early and learns to 0.86.
    sgd = rec(update_ratio=4e-6, val_loss=0.69, val_auc=0.55, output_std=0.003)
    assert proof(history("sgd", 1e-3, 0.9), sgd, window(sgd), QUARTER) is None


def test_the_reach_of_a_stall_counts_the_steps_left() -> None:
    ratio = 2e-7  # x 10 (adam) x steps left: a long run has time to move its weights
    r = rec(**{**STALLED, "update_ratio": ratio})
    short = CheckPoint(1, 8, 32, 3)
    long = CheckPoint(1, 8, 32, 300)
    assert ratio * 10 * short.steps_left < STALL_REACH < ratio * 10 * long.steps_left
    assert early_verdict(history(), r, window(r), short) is not None
    assert early_verdict(history(), r, window(r), long) is None


def test_a_loss_spike_and_huge_steps_are_no_proof() -> None:
    # Adam at lr 1e-2 at a quarter of epoch 1: 6x the initial loss, 64% of the weights per
    # step, validation below chance - and val_auc 0.90 at the end.
    spike = rec(train_loss=4.32, update_ratio=0.64, val_auc=0.27, output_std=0.019)
    assert diagnose(replace(history(lr=1e-2), records=[spike])).label == "diverged"
    assert verdict(history(lr=1e-2), spike) is None


def test_a_nan_loss_is_proof() -> None:
    nan = math.nan
    r = rec(train_loss=nan, val_loss=nan, val_auc=nan, output_std=nan)
    stop = verdict(history("sgd", 50.0), r)
    assert stop is not None and stop.verdict == "diverged" and "NaN" in stop.proof


def test_a_tower_without_gradient_is_proof() -> None:
    # The same-image bug: |a-b| = 0, only the head's bias moves.
    bias_only = {**DEAD, "head": 0.02}
    r = rec(grad_norm=bias_only, update_ratio=2e-5, val_auc=0.5, output_std=0.0, val_loss=0.6931)
    stop = verdict(history(identical_pair_fraction=1.0), r)
    assert stop is not None and stop.kinds[0] == "no_signal"
    assert "no gradient in the last 8 steps" in stop.proof


def test_a_tower_that_died_after_its_first_steps_is_seen_in_the_latest_window() -> None:
    # relu2 at Adam lr 1e-2: alive at step 0, dead after; the epoch's mean still shows step 0.
    r = rec(
        grad_norm={**GRADS, "conv1": 0.05},
        update_ratio=0.36,
        head_zero_fraction=1.0,
        output_std=0.0,
        val_auc=0.5,
        val_loss=0.693,
        train_loss=0.693,
    )
    h = history(lr=1e-2, head="relu2")
    assert verdict(h, r, window(r)) is None  # the epoch so far: gradient
    stop = verdict(h, r, Window(8, 2, 0.0, 0.01, 0.0))
    assert stop is not None and "dead_head" in stop.kinds


def test_a_batch_without_gradient_in_a_network_that_still_answers_is_no_proof() -> None:
    # Contrastive at Adam lr 1e-2, a quarter into epoch 1: a blown-up loss, 97% of the units
    # dead, one batch without gradient - yet the outputs spread, and it ends at val_auc 0.84.
    r = rec(train_loss=425.0, update_ratio=0.21, dead_unit_fraction=0.97, output_std=0.33)
    r = replace(r, val_auc=0.61)
    h = history(lr=1e-2, head="contrastive")
    assert diagnose(replace(h, records=[r])).label == "diverged"
    assert verdict(h, r, Window(8, 2, 0.0, 0.2, 0.0)) is None
    assert verdict(h, replace(r, output_std=0.0), Window(8, 2, 0.0, 0.2, 0.0)) is not None
    # One measured step without gradient proves nothing, whatever the outputs.
    assert verdict(h, replace(r, output_std=0.0), Window(4, 1, 0.0, 0.2, 0.0)) is None


def test_a_proof_the_diagnosis_does_not_confirm_stops_nothing() -> None:
    # No tower gradient in the window, yet the outputs are spread and ranked: nothing failed.
    assert verdict(history(), rec(), Window(8, 2, 0.0, 1e-3, 0.0)) is None


def test_no_check_before_a_few_steps() -> None:
    r = rec(**STALLED)
    assert early_verdict(history("sgd", 1e-6, 0.9), r, window(r), CheckPoint(1, 2, 32, 3)) is None


def test_the_early_stop_round_trips_and_old_histories_load() -> None:
    r = rec(**STALLED)
    stop = verdict(history("sgd", 1e-6, 0.9), r)
    assert stop is not None and EarlyStop.from_dict(stop.to_dict()) == stop
    h = replace(history(), records=[r], early_stop=stop.to_dict())
    assert History.from_dict(h.to_dict()).early_stop == stop.to_dict()
    old = h.to_dict()
    del old["early_stop"]
    assert History.from_dict(old).early_stop is None


def test_a_first_layer_without_gradient_under_a_learning_head_is_a_dead_tower() -> None:
    # AdamW at 0.068 with the abs head and dropout 0.41, 37% into epoch 1: the loss blew up,
    # conv1 and conv2 get no gradient, the layers above them still do (their biases, and
    # dropout makes the two embeddings differ), and every validation pair gets one output.
    # It ended at val_auc 0.5.
    r = rec(
        grad_norm={**GRADS, "conv1": 0.0, "conv2": 0.0},
        train_loss=292.0,
        update_ratio=0.12,
        dead_unit_fraction=0.93,
        output_std=0.0,
        val_auc=0.5,
        val_loss=0.704,
    )
    h = history("adamw", 0.068, head="abs")
    cut_off = Window(8, 2, tower_gradient=0.09, update_ratio=0.05, first_layer_gradient=0.0)
    found = proof(h, r, cut_off, QUARTER)
    assert found is not None and "first layer received no gradient" in found.text
    stop = verdict(h, r, cut_off)
    assert stop is not None and stop.verdict == "diverged" and "cuts the images off" in stop.proof
    # A first layer that still learns, or outputs that still differ: no proof, or no stop.
    assert proof(h, r, replace(cut_off, first_layer_gradient=0.02), QUARTER) is None
    assert verdict(h, replace(r, output_std=0.05), cut_off) is None
    # Scores squeezed together but still ranking pairs: the images get through.
    assert verdict(h, replace(r, output_std=0.005, val_auc=0.7), cut_off) is None
    # Pairs of one image are the data bug's proof, not this one's: it needs one output.
    assert (
        verdict(replace(h, identical_pair_fraction=1.0), replace(r, output_std=0.3), cut_off)
        is None
    )
    # One measured step is not enough here either.
    assert verdict(h, r, replace(cut_off, steps=4, measured=1)) is None
