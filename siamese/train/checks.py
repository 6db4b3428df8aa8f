"""Check points inside an epoch: `siamese.early_stop` decides, this reads the device.

At every eighth of an epoch (`early_stop.CHECK_FRACTIONS`) the loop reads the running sums
(one host sync each): a NaN/Inf loss ends the epoch there. In epoch 1 of a run with
`config.early_stop`, when those sums prove a failure (`early_stop.proof`), a validation
sample and then every validation pair are evaluated; if the diagnosis agrees, the epoch
ends there and the run stops, its `history.early_stop` saying where and why. A run whose
sums prove nothing pays the reads and no evaluation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from siamese.config import TrainConfig
from siamese.early_stop import (
    CHECK_FRACTIONS,
    DEAD_MEASURED_STEPS,
    EARLY_EVAL_PAIRS,
    MIN_CHECK_STEPS,
    CheckPoint,
    Window,
    early_verdict,
    first_layer_gradient,
    proof,
    tower_gradient,
)
from siamese.model import SiameseNet
from siamese.train.device_data import DeviceData
from siamese.train.evaluate import EvalResult, evaluate
from siamese.train.history import EpochRecord, History

# Why a run stopped early ends it: Optuna and MLflow record it as pruned.
EARLY_STOP_REASON = "pruned"
Sums = tuple[float, dict[str, float], float]


class RunningSums(Protocol):
    """What the checks read: a StepRunner's device sums, or one population member's."""

    loss_sum: Tensor
    grad_sums: Tensor
    ratio_sum: Tensor
    stat_steps: Tensor

    @property
    def layers(self) -> list[str]: ...

    @property
    def steps(self) -> int: ...


@dataclass(frozen=True)
class Totals:
    """The step runner's sums since the epoch began and their counts (one host sync)."""

    steps: int
    measured: float
    loss: float
    grads: dict[str, float]
    ratio: float

    @classmethod
    def read(cls, runner: RunningSums) -> Totals:
        # The runner's own sums, read without resetting them (`read_sums` gives their means).
        flat = torch.cat(
            [
                runner.loss_sum.reshape(1),
                runner.grad_sums,
                runner.ratio_sum.reshape(1),
                runner.stat_steps.reshape(1),
            ]
        ).tolist()
        grads = dict(zip(runner.layers, flat[1:-2], strict=True))
        return cls(runner.steps, flat[-1], flat[0], grads, flat[-2])

    def means(self) -> Sums:
        """What `StepRunner.read_sums` returns: mean loss, gradient norms, update ratio."""
        n = max(self.measured, 1.0)
        grads = {k: v / n for k, v in self.grads.items()}
        return self.loss / max(self.steps, 1), grads, self.ratio / n

    def since(self, before: Totals | None) -> Window:
        if before is None:
            before = Totals(0, 0.0, 0.0, dict.fromkeys(self.grads, 0.0), 0.0)
        measured = self.measured - before.measured
        n = max(measured, 1.0)
        grads = {k: (v - before.grads[k]) / n for k, v in self.grads.items()}
        return Window(
            self.steps - before.steps,
            round(measured),
            tower_gradient(grads),
            (self.ratio - before.ratio) / n,
            first_layer_gradient(grads),
        )


def epoch_record(
    epoch: int, sums: Sums, result: EvalResult | None, seconds: float, pairs: int
) -> EpochRecord:
    """The record of an epoch (or of its first steps) from the training sums and a
    validation pass; without one, the validation fields are NaN."""
    train_loss, grad_norm, update_ratio = sums
    nan = math.nan
    return EpochRecord(
        epoch=epoch,
        train_loss=train_loss,
        val_loss=result.loss if result else nan,
        val_acc=result.acc if result else nan,
        val_auc=result.auc if result else nan,
        grad_norm=grad_norm,
        update_ratio=update_ratio,
        dead_unit_fraction=result.dead_unit_fraction if result else nan,
        head_zero_fraction=result.head_zero_fraction if result else nan,
        output_std=result.output_std if result else nan,
        output_mean=result.output_mean if result else nan,
        seconds=seconds,
        pairs_per_second=pairs / max(seconds, 1e-9),
    )


def check_steps(epoch_steps: int) -> frozenset[int]:
    """After how many steps of an epoch to check (not at its end: the loop's own)."""
    points = (round(f * epoch_steps) for f in CHECK_FRACTIONS)
    return frozenset(s for s in points if MIN_CHECK_STEPS <= s < epoch_steps)


class EpochChecks:
    """The check points of a run's epochs; `at` after a step, `after_epoch` at the end."""

    def __init__(
        self,
        config: TrainConfig,
        history: History,
        model: SiameseNet,
        runner: RunningSums,
        val: DeviceData,
    ) -> None:
        self.config, self.history, self.model = config, history, model
        self.runner, self.val = runner, val
        self.earlier: list[Totals] = []  # at the epoch's previous check points

    def steps(self, epoch_steps: int) -> frozenset[int]:
        """An epoch begins: after how many of its steps to check."""
        self.earlier = []
        return check_steps(epoch_steps)

    def _window(self, now: Totals) -> Window:
        """The latest steps with at least DEAD_MEASURED_STEPS measured (else the epoch's)."""
        enough = (
            t for t in reversed(self.earlier) if now.measured - t.measured >= DEAD_MEASURED_STEPS
        )
        return now.since(next(enough, None))

    def _judged(self, epoch: int) -> bool:
        return self.config.early_stop and epoch == 1

    def at(self, epoch: int, step: int, epoch_steps: int, started: float) -> EpochRecord | None:
        """After `step` steps: the record to end the epoch with, or None to go on."""
        totals = Totals.read(self.runner)
        window = self._window(totals)
        self.earlier.append(totals)
        sums = totals.means()
        if math.isfinite(sums[0]) and not self._judged(epoch):
            return None
        point = CheckPoint(epoch, step, epoch_steps, self.config.epochs)

        def record(result: EvalResult | None) -> EpochRecord:
            seconds = time.perf_counter() - started
            return epoch_record(epoch, sums, result, seconds, step * self.config.batch_size)

        if proof(self.history, record(None), window, point) is None:
            return None
        if self.val.labels.shape[0] > EARLY_EVAL_PAIRS:
            sample = evaluate(self.model, self.val, limit=EARLY_EVAL_PAIRS)
            if early_verdict(self.history, record(sample), window, point) is None:
                return None
        # Confirmed on every validation pair: the record the run keeps, and its diagnosis reads.
        kept = record(evaluate(self.model, self.val))
        verdict = early_verdict(self.history, kept, window, point)
        if verdict is None:
            return None
        self.history.early_stop = verdict.to_dict()
        return kept

    def after_epoch(self, record: EpochRecord, epoch_steps: int) -> None:
        """At the end of epoch 1, on its full record (not yet in the history). Not when it
        is the run's last epoch: a run that trained all its epochs did not stop early (a
        search trial of one epoch would be PRUNED "at 100% of epoch 1"); its diagnosis at
        the end says what failed."""
        last = record.epoch >= self.config.epochs
        if last or not self._judged(record.epoch) or not math.isfinite(record.train_loss):
            return
        window = self._window(Totals.read(self.runner))
        point = CheckPoint(record.epoch, epoch_steps, epoch_steps, self.config.epochs)
        verdict = early_verdict(self.history, record, window, point)
        if verdict is not None:
            self.history.early_stop = verdict.to_dict()
