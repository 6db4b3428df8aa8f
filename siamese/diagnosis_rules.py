"""The diagnosis rules: each reads the history `fit` records and returns a `Finding` or
nothing. `siamese.diagnosis` runs them in order and writes the verdict.

The thresholds are deliberately coarse: they separate "clearly broken" from "learning", and
each is explained where it is defined.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from siamese.train.history import EpochRecord, History

# Std of P(same) across validation pairs below which the output is "one value for all":
# a model that separates anything spreads its scores by tenths, not by thousandths.
COLLAPSE_STD = 0.01
# relu2 head: share of pairs whose "same" output is exactly 0 (sigmoid(0) = 0.5, no gradient).
DEAD_HEAD_ZERO_FRACTION = 0.9
# Embedding units that output 0 for every validation image: a few are normal, nearly all is not.
DEAD_UNITS_FRACTION = 0.95
# Per-step ||dw||/||w||: ~1e-3 is the usual healthy value; 10x below it the weights barely
# move (SGD at lr 1e-6 gives ~1e-7, Adam at lr 1e-6 ~1e-4, Adam at 1e-3 ~1e-2).
STALL_UPDATE_RATIO = 1e-4
HEALTHY_UPDATE_RATIO = 1e-3
# The other side: runs that learn measure 1e-3 to 2e-2 (Adam's first epoch is the high end);
# a tenth of the weights replaced every step is thrashing, whatever the loss shows.
THRASH_UPDATE_RATIO = 0.1
# Labels shuffled at random (nothing to learn) still give medians up to ~0.025 with Adam;
# above this, a chance-level run names the learning rate as a second suspect.
LARGE_UPDATE_RATIO = 0.03
# Below this summed gradient norm, the network receives no gradient at all.
MIN_GRADIENT_NORM = 1e-8
# Relative change of validation loss from before training to the last epoch that counts as flat.
STALL_LOSS_CHANGE = 0.05
# A training loss this many times the loss before training is exploding, not noisy.
DIVERGE_LOSS_FACTOR = 3.0
# AUC at chance is 0.5; with a few hundred validation pairs its noise is ~0.03, so 0.6 is
# clearly "no better than chance".
NO_SIGNAL_AUC = 0.6
# A last epoch at or above this AUC has learned: most of its embedding units dead is then
# a note, not a failure (contrastive RMSprop at 6.4e-4 ended at 0.913 with 95%+ of its
# units dead: the few left carry the distance).
LEARNED_AUC = 0.8
# Overfitting: validation loss this much above its minimum for the last two epochs.
OVERFIT_VAL_RISE = 1.2


@dataclass(frozen=True)
class Finding:
    kind: str
    summary: str
    evidence: dict[str, float | str]
    evidence_text: str
    fix: str


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


RELU2_FIX = (
    "replace the relu2 head: sigmoid(ReLU(x)) is never below 0.5 and ReLU passes no gradient "
    "where it outputs 0; use one logit without ReLU (--head sq or --head abs)"
)


def _median_ratio(records: list[EpochRecord]) -> float:
    return statistics.median(r.update_ratio for r in records)


def _best_auc(records: list[EpochRecord]) -> float:
    return max((r.val_auc for r in records if math.isfinite(r.val_auc)), default=math.nan)


def _lr_for_healthy_updates(lr: float, ratio: float) -> float:
    """Per-step updates scale about linearly with lr: aim at the healthy ratio."""
    return lr * HEALTHY_UPDATE_RATIO / max(ratio, 1e-30)


def _exploding(h: History, records: list[EpochRecord]) -> EpochRecord | None:
    """The first epoch whose training loss rose past DIVERGE_LOSS_FACTOR x the loss before
    training, or None."""
    baseline = h.initial_val_loss
    if not math.isfinite(baseline):
        return None
    return next((r for r in records if r.train_loss > DIVERGE_LOSS_FACTOR * baseline), None)


def _came_back(h: History, records: list[EpochRecord]) -> bool:
    """Whether the run ended below the blow-up line, having learned: a loss spike in the
    first steps of a high learning rate, then learning (contrastive RMSprop at 6e-4: 17x the
    initial loss in epoch 1, val_auc 0.93, 0.94, 0.96), is not a divergence. Never after a
    NaN/Inf anywhere: that is one, whatever came after."""
    last = records[-1]
    finite = all(math.isfinite(r.train_loss) and math.isfinite(r.val_loss) for r in records)
    return finite and last.train_loss <= DIVERGE_LOSS_FACTOR * h.initial_val_loss and _learned(last)


def spike_note(h: History, records: list[EpochRecord]) -> str | None:
    """The loss spike a run came back from, in words (a note, not a finding), or None."""
    spike = _exploding(h, records)
    if spike is None or not _came_back(h, records):
        return None
    last = records[-1]
    return (
        f"train_loss rose to {_fmt(spike.train_loss)} in epoch {spike.epoch} (before "
        f"training: {_fmt(h.initial_val_loss)}) and came back to {_fmt(last.train_loss)}, "
        f"val_auc {_fmt(last.val_auc)}: a spike the run recovered from, not a divergence"
    )


def diverged(h: History, records: list[EpochRecord]) -> Finding | None:
    """A NaN/Inf loss, or an exploding one the run did not come back from, else
    `thrashing`. `diagnose` asks this before the rules."""
    bad = next(
        (r for r in records if not (math.isfinite(r.train_loss) and math.isfinite(r.val_loss))),
        None,
    )
    baseline = h.initial_val_loss
    exploding = _exploding(h, records)
    if exploding is not None and _came_back(h, records):
        exploding = None  # a spike it recovered from: spike_note says so
    hit = bad or exploding
    if hit is None:
        return thrashing(h, records)
    lr, opt = h.config.get("lr"), h.config.get("optimizer")
    what = (
        "became NaN/Inf"
        if hit is bad
        else f"rose to {_fmt(hit.train_loss)} (before training: {_fmt(baseline)})"
    )
    return Finding(
        "diverged",
        "the loss blew up: the learning rate is too high for this optimizer",
        {
            "epoch": hit.epoch,
            "train_loss": str(hit.train_loss),
            "lr": str(lr),
            "optimizer": str(opt),
        },
        f"train_loss {what} in epoch {hit.epoch} with {opt} lr={lr}",
        _lower_lr_fix(float(lr or 1), str(opt)),
    )


# Where a run usually starts: SGD, and the adaptive optimizers (Adam and the others).
USUAL_LR = {"sgd": 1e-2, "adam": 1e-3}


def _lower_lr_fix(lr: float, optimizer: str) -> str:
    """100x lower, unless that is still far above the usual start for the optimizer (a
    typo's lr=1e308 became "-> 1e+306"): then the usual start."""
    usual = USUAL_LR["sgd" if optimizer == "sgd" else "adam"]
    if lr / 100 > 10 * usual:
        return f"start from a usual learning rate for {optimizer}: lr={_fmt(lr)} -> {_fmt(usual)}"
    typical = ", ".join(f"{name} {_fmt(value)}" for name, value in USUAL_LR.items())
    return (
        f"lower the learning rate 10-100x (lr={_fmt(lr)} -> {_fmt(lr / 100)}); "
        f"typical starting points: {typical}"
    )


def thrashing(h: History, records: list[EpochRecord]) -> Finding | None:
    """Too high a learning rate without a NaN: each step replaces a large part of the weights
    (often killing the ReLUs) and validation stays at chance."""
    ratio, best = _median_ratio(records), _best_auc(records)
    if not (ratio > THRASH_UPDATE_RATIO and not best > NO_SIGNAL_AUC):
        return None
    lr, opt = float(h.config.get("lr") or 0.0), h.config.get("optimizer")
    suggested = _lr_for_healthy_updates(lr, ratio)
    return Finding(
        "diverged",
        "the updates are far too large: the learning rate is too high for this optimizer",
        {"update_ratio": ratio, "best_val_auc": best, "lr": lr, "optimizer": str(opt)},
        f"updates are {ratio:.0%} of the weights per step (healthy: ~1e-3 to 1e-2) with {opt} "
        f"lr={_fmt(lr)}; best val_auc {_fmt(best)} (chance is 0.5)",
        f"lower the learning rate toward lr ≈ {_fmt(suggested)} (lr={_fmt(lr)} × 1e-3 / update ratio)",
    )


def no_signal(h: History, records: list[EpochRecord]) -> Finding | None:
    best, ratio = _best_auc(records), _median_ratio(records)
    identical = h.identical_pair_fraction
    # Below the stall ratio the learning rate explains chance-level validation, above the
    # thrash ratio too: only in between is the data the suspect.
    if identical < 0.5 and (
        not math.isfinite(best)
        or best > NO_SIGNAL_AUC
        or not STALL_UPDATE_RATIO <= ratio <= THRASH_UPDATE_RATIO
    ):
        return None
    if identical >= 0.5:
        text = (
            f"{identical:.0%} of training pairs show the same image left and right, so |a-b| = 0 "
            f"for them; best val_auc {_fmt(best)}"
        )
        fix = "fix the pairing/partitioning code: the right image index must not come from the left one"
    else:
        text = (
            f"best val_auc {_fmt(best)} (chance is 0.5) although the weights moved "
            f"(updates {_fmt(ratio)} of the weights per step; 1e-3 to 1e-2 is typical)"
        )
        fix = (
            "check that labels match the pairs and that left/right images differ "
            "(siamese-lab data check); then check the task/target"
        )
        if ratio > LARGE_UPDATE_RATIO:  # between typical and thrashing: name both suspects
            fix += f"; if the data are fine, lower the learning rate: {ratio:.0%} per step is large"
    return Finding(
        "no_signal",
        "validation stayed at chance: the inputs or labels carry nothing to learn",
        {"best_val_auc": best, "identical_pair_fraction": identical, "update_ratio": ratio},
        text,
        fix,
    )


def dead_head(h: History, records: list[EpochRecord]) -> Finding | None:
    return dead_relu2_output(h, records) or dead_embedding(h, records)


def dead_relu2_output(h: History, records: list[EpochRecord]) -> Finding | None:
    last = records[-1]
    if not (
        math.isfinite(last.head_zero_fraction)
        and last.head_zero_fraction >= DEAD_HEAD_ZERO_FRACTION
    ):
        return None
    return Finding(
        "dead_head",
        "the ReLU output layer emits 0, so every pair scores sigmoid(0) = 0.5 and gets no gradient",
        {"head_zero_fraction": last.head_zero_fraction},
        f"the 'same' output is exactly 0 for {last.head_zero_fraction:.0%} of validation pairs",
        RELU2_FIX,
    )


def _mostly_dead(record: EpochRecord) -> bool:
    return (
        math.isfinite(record.dead_unit_fraction)
        and record.dead_unit_fraction >= DEAD_UNITS_FRACTION
    )


def _learned(record: EpochRecord) -> bool:
    return math.isfinite(record.val_auc) and record.val_auc >= LEARNED_AUC


def dead_units_note(h: History, records: list[EpochRecord]) -> str | None:
    """Dead embedding units in a run that learned anyway, in words, or None."""
    last = records[-1]
    if not (_mostly_dead(last) and _learned(last)):
        return None
    return (
        f"{last.dead_unit_fraction:.0%} of the 100 embedding units are 0 for every validation "
        f"image, yet val_auc is {_fmt(last.val_auc)}: it learned with the rest (a lower "
        "learning rate may keep more of them)"
    )


def dead_embedding(h: History, records: list[EpochRecord]) -> Finding | None:
    last = records[-1]
    if _mostly_dead(last) and not _learned(last):
        return Finding(
            "dead_head",
            "the embedding's ReLU units are dead: they output 0 for every image",
            {"dead_unit_fraction": last.dead_unit_fraction},
            f"{last.dead_unit_fraction:.0%} of the 100 embedding units are 0 for every validation image",
            "lower the learning rate and check the input scale; dead units do not come back",
        )
    return None


def collapsed(h: History, records: list[EpochRecord]) -> Finding | None:
    last = records[-1]
    if not (math.isfinite(last.output_std) and last.output_std < COLLAPSE_STD):
        return None
    evidence = (
        f"P(same) = {last.output_mean:.3f} ± {last.output_std:.4f} across validation pairs "
        f"(val_auc {_fmt(last.val_auc)})"
    )
    if h.config.get("head") == "relu2":
        summary, fix = "the network gives the same output for every pair", RELU2_FIX
    elif math.isfinite(last.val_auc) and last.val_auc >= NO_SIGNAL_AUC:
        # Scores squeezed together but already ranked: a slow start, not a dead network.
        # Thresholded at 0.5 such a model still answers "same" or "different" for nearly all.
        summary = "the outputs barely differ between pairs, though their order already does"
        evidence += ": the ranking carries signal, the probabilities do not yet"
        fix = "raise the learning rate or train more epochs so the scores spread apart"
    else:
        summary = "the network gives the same output for every pair"
        fix = "see the other findings for the cause; if none, raise the learning rate"
    return Finding(
        "collapsed",
        summary,
        {"output_mean": last.output_mean, "output_std": last.output_std, "val_auc": last.val_auc},
        evidence,
        fix,
    )


def stalled(h: History, records: list[EpochRecord]) -> Finding | None:
    ratio = _median_ratio(records)
    start, end = h.initial_val_loss, records[-1].val_loss
    change = abs(start - end) / start if math.isfinite(start) and start > 0 else math.nan
    flat = not math.isfinite(change) or change < STALL_LOSS_CHANGE
    # Zero gradients (a dead ReLU) also give tiny updates, but no learning rate fixes them.
    has_gradient = sum(records[-1].grad_norm.values()) > MIN_GRADIENT_NORM
    if not (math.isfinite(ratio) and ratio < STALL_UPDATE_RATIO and flat and has_gradient):
        return None
    lr = float(h.config.get("lr") or 0.0)
    suggested = _lr_for_healthy_updates(lr, ratio)
    return Finding(
        "stalled",
        "the weights barely move: the learning rate is too low",
        {"update_ratio": ratio, "val_loss_start": start, "val_loss_end": end, "lr": lr},
        f"updates are {_fmt(ratio)} of the weights per step (healthy: ~1e-3); "
        f"val_loss {_fmt(start)} -> {_fmt(end)} ({change:.1%} change)",
        f"raise the learning rate toward lr ≈ {_fmt(suggested)} (lr={_fmt(lr)} × 1e-3 / update ratio)",
    )


def overfitting(h: History, records: list[EpochRecord]) -> Finding | None:
    if len(records) < 3:
        return None
    best = min(records, key=lambda r: r.val_loss)
    tail = records[-2:]
    rising = all(
        r.val_loss > OVERFIT_VAL_RISE * best.val_loss and r.epoch > best.epoch for r in tail
    )
    if not (rising and records[-1].train_loss < best.train_loss):
        return None
    last = records[-1]
    return Finding(
        "overfitting",
        "training loss keeps falling while validation loss rises",
        {
            "best_val_loss_epoch": best.epoch,
            "best_val_loss": best.val_loss,
            "last_val_loss": last.val_loss,
        },
        f"val_loss {_fmt(best.val_loss)} at epoch {best.epoch} -> {_fmt(last.val_loss)} at epoch {last.epoch} "
        f"while train_loss fell {_fmt(best.train_loss)} -> {_fmt(last.train_loss)}",
        "use the best checkpoint (best.pt), add dropout/weight decay, or train on more pairs",
    )
