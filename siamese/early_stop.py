"""Stop a failing run inside its first epoch, once its statistics prove the failure.

`fit` asks at a few check points of epoch 1 (and at its end). A run is stopped only when two
things hold: its training statistics prove that it cannot recover in the steps it has left
(`proof`), and the diagnosis, run on its statistics so far and on validation pairs, names a
failure the proof covers (`early_verdict`). The stopped run keeps that record, so its
diagnosis says the same thing.

What counts as proof (each threshold is explained where it is defined):
- a NaN/Inf loss: the weights are NaN from then on;
- no gradient reaching the tower in the latest steps (two measured at least), with one
  output for every validation pair or identical images left and right (|a-b| = 0): a dead
  head, dead units or the data bug; nothing the tower computes can change again. No
  gradient reaching its first layer (conv1), with one output for every validation pair (to
  rounding) at chance, is the same proof one layer down: a layer of dead ReLUs cuts the images off from everything
  above it, and that layer, getting no gradient, stays dead; what still learns above it
  (biases, fc, the head) learns from dropout's noise alone (AdamW at 0.068: conv1 and conv2
  without gradient from a third of epoch 1, validation at chance with one output to its
  end). A mostly
  dead network can get no gradient from one batch and still learn (contrastive at Adam
  1e-2: 97% of its units dead at a quarter of epoch 1, val_auc 0.84 at the end), so a
  window without gradient alone proves nothing;
- updates so small that the whole rest of the run, many times faster than now, moves the
  weights by less than a percent of their norm (stalled).
An exploding loss or huge steps prove nothing by themselves: runs at a high learning rate
spike in their first steps and then learn (Adam at 1e-2: 6x the initial loss and steps of 60%
of the weights at a quarter of epoch 1, val_auc 0.90 at the end). They are stopped when
their units die, which the second rule sees. A slow start proves nothing either: a run that
learns slowly still moves its weights at a rate that adds up.

Pure: plain numbers in, no torch, so that a population trainer asks it per member.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from siamese.diagnosis import diagnose, early_stop_text
from siamese.diagnosis_rules import COLLAPSE_STD, MIN_GRADIENT_NORM, NO_SIGNAL_AUC
from siamese.train.history import EpochRecord, History

# Where in an epoch the loop checks, in eighths of its steps; the end of epoch 1 is checked
# too, on its full validation record. Checking costs one host sync unless there is a proof.
CHECK_FRACTIONS = tuple(k / 8 for k in range(1, 8))
# Validation pairs evaluated to confirm a proof (then every pair, for the record kept).
EARLY_EVAL_PAIRS = 256
# Fewer steps than this say too little about a run: no check before them.
MIN_CHECK_STEPS = 4
# A tower without gradient is judged over at least this many measured steps.
DEAD_MEASURED_STEPS = 2
# Stalled: the weights cannot move more than this share of their norm in the rest of the
# run. On digits (3 epochs of 32 steps), runs that end above val_auc 0.8 reach 0.2 and more;
# SGD at lr 1e-5 and below, which ends at chance, reaches 0.005 and less.
STALL_REACH = 0.01
# How much faster than measured the updates are assumed to become: the gradient grows as a
# run leaves its start, and momentum builds a step up to 1 / (1 - momentum) times (measured:
# SGD at momentum 0.9 grows 4-5x from the first check point to epoch 3).
STALL_GROWTH = 10.0
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
# The layer the images come in through: without gradient there, they may be cut off.
FIRST_LAYER = "conv1"
# "One output for every pair" to rounding, for the first-layer proof: bf16 and float32
# rounding spread a constant output by ~1e-7 (the AdamW 0.068 run: 6e-8 and 1.2e-7).
ONE_OUTPUT_STD = 1e-4
# The kinds a dead tower makes the diagnosis report (a blow-up that killed it: diverged).
DEAD_KINDS = ("no_signal", "dead_head", "collapsed", "stalled", "diverged")


@dataclass(frozen=True)
class CheckPoint:
    """Where a run is: `step` steps done of `epoch_steps` in `epoch`, of `epochs`."""

    epoch: int
    step: int
    epoch_steps: int
    epochs: int

    @property
    def fraction(self) -> float:
        return self.step / max(self.epoch_steps, 1)

    @property
    def steps_left(self) -> int:
        return (self.epochs - self.epoch + 1) * self.epoch_steps - self.step


@dataclass(frozen=True)
class Window:
    """The training statistics of the steps since the previous check point (or the epoch's
    start): a network that died after its first steps shows it here, not in the epoch's
    means. `measured` of the `steps` had their gradients and updates measured."""

    steps: int
    measured: int
    tower_gradient: float  # mean per-step gradient norm of the tower's layers, summed
    update_ratio: float
    first_layer_gradient: float  # the same, of conv1 alone (where the images come in)


@dataclass(frozen=True)
class Proof:
    """Why a run cannot recover: the findings it proves, and the numbers, in words.
    `cut_off`: the images may be cut off below the top of the tower; only validation pairs
    that all get one output, at chance, confirm it (see `_cut_off`)."""

    kinds: tuple[str, ...]
    text: str
    cut_off: bool = False


@dataclass(frozen=True)
class EarlyStop:
    """A run stopped early: the diagnosis label then, where, and why it could not recover."""

    verdict: str  # the diagnosis label, e.g. "collapsed+stalled"
    kinds: tuple[str, ...]  # its findings that the proof covers
    epoch: int
    step: int  # steps done in `epoch`
    epoch_steps: int
    proof: str
    evidence: str  # the first proven finding's evidence

    @property
    def fraction(self) -> float:
        return self.step / max(self.epoch_steps, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kinds": list(self.kinds), "fraction": self.fraction}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EarlyStop:
        return cls(
            str(raw["verdict"]),
            tuple(raw.get("kinds", ())),
            int(raw["epoch"]),
            int(raw["step"]),
            int(raw["epoch_steps"]),
            str(raw.get("proof", "")),
            str(raw.get("evidence", "")),
        )

    def describe(self) -> str:
        """One line for notes, tags and Optuna: what, where, why."""
        return early_stop_text(self.to_dict())


def tower_gradient(grad_norm: dict[str, float]) -> float:
    return sum(v for layer, v in grad_norm.items() if layer != "head")


def first_layer_gradient(grad_norm: dict[str, float]) -> float:
    """conv1's: zero there means the images no longer reach the output through any path
    that can learn (inf where it is not measured: no proof)."""
    return grad_norm.get(FIRST_LAYER, math.inf)


def _growth(config: dict[str, Any]) -> float:
    momentum = float(config.get("momentum") or 0.0)
    if config.get("optimizer") in MOMENTUM_OPTIMIZERS and 0.0 <= momentum < 1.0:
        return STALL_GROWTH / (1.0 - momentum)
    return STALL_GROWTH


def proof(history: History, record: EpochRecord, window: Window, point: CheckPoint) -> Proof | None:
    """What the training statistics prove about the run, or None. `record` holds the
    epoch's so far (its validation fields are not read), `window` the latest steps'. Cheap:
    the loop asks this first and evaluates validation pairs only for a proof."""
    if point.step < MIN_CHECK_STEPS:
        return None
    if not math.isfinite(record.train_loss):
        return Proof(("diverged",), "the training loss is NaN/Inf: the weights are lost")
    if window.measured >= DEAD_MEASURED_STEPS:
        where = f"in the last {window.steps} steps ({window.measured} measured)"
        if window.tower_gradient <= MIN_GRADIENT_NORM:
            return Proof(DEAD_KINDS, f"the tower received no gradient {where}")
        if window.first_layer_gradient <= MIN_GRADIENT_NORM:
            return Proof(
                DEAD_KINDS,
                f"the tower's first layer received no gradient {where}: a layer of dead "
                "units cuts the images off",
                cut_off=True,
            )
    rates = [record.update_ratio, window.update_ratio if window.measured else 0.0]
    if not all(math.isfinite(r) for r in rates) or record.update_ratio <= 0.0:
        return None
    ratio, growth = max(rates), _growth(history.config)
    reach = ratio * growth * point.steps_left
    if reach < STALL_REACH:
        return Proof(
            ("stalled",),
            f"updates of {ratio:.3g} of the weights per step move them by at most "
            f"{reach:.2g} of their norm in the {point.steps_left} steps left, even {growth:.3g}x "
            "faster",
        )
    return None


def _lifeless(history: History, record: EpochRecord) -> str | None:
    """Why a tower without gradient stays so, from the validation pass: one output for all
    pairs, or identical images (|a-b| = 0 whatever the weights). None: it may yet recover."""
    if history.identical_pair_fraction >= 0.5:
        return f"{history.identical_pair_fraction:.0%} of training pairs show one image twice"
    if math.isfinite(record.output_std) and record.output_std < COLLAPSE_STD:
        return f"it gives one output for every validation pair (std {record.output_std:.2g})"
    return None


def _cut_off(record: EpochRecord) -> str | None:
    """Whether the validation pass shows images that no longer reach the output: one output
    for every pair (to rounding), at chance. Scores that still rank pairs, however close
    together, show that the images get through; so is a run whose pairs repeat one image
    (the data bug) not proven this way: its outputs still tell the test."""
    std, auc = record.output_std, record.val_auc
    if math.isfinite(std) and std <= ONE_OUTPUT_STD and not auc > NO_SIGNAL_AUC:
        return f"it gives one output for every validation pair (std {std:.2g}, val_auc {auc:.3g})"
    return None


def early_verdict(
    history: History, record: EpochRecord, window: Window, point: CheckPoint
) -> EarlyStop | None:
    """Stop now? `record` holds the statistics so far (training since the epoch began, and
    validation on the pairs evaluated), `window` the latest steps', `history` the run before
    them. A verdict only when the proof and the diagnosis with `record` agree on a failure."""
    found = proof(history, record, window, point)
    if found is None:
        return None
    if found.kinds == DEAD_KINDS:
        lifeless = _cut_off(record) if found.cut_off else _lifeless(history, record)
        if lifeless is None:
            return None
        found = replace(found, text=f"{found.text} and {lifeless}: nothing it computes can change")
    diagnosis = diagnose(replace(history, records=[*history.records, record]))
    proven = [f for f in diagnosis.findings if f.kind in found.kinds]
    if not proven:
        return None
    return EarlyStop(
        diagnosis.label,
        tuple(dict.fromkeys(f.kind for f in proven)),
        point.epoch,
        point.step,
        point.epoch_steps,
        found.text,
        proven[0].evidence_text,
    )
