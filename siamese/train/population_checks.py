"""fit's check points inside an epoch (`siamese.train.checks.EpochChecks`), per member.

Each member has fit's own `EpochChecks`, reading that member's row of the population's
running sums (`MemberSums`) and evaluating the scratch network once it holds the member's
weights: the same check steps, windows, proofs and verdicts as a `fit` run, from the same
numbers. A member whose loss went NaN/Inf, or whose statistics prove a failure in epoch 1
of an `early_stop` run, has its epoch cut there with the record fit keeps, and is masked
out of the step from then on while the others finish the epoch.
"""

from __future__ import annotations

import math

from torch import Tensor

from siamese.config import TrainConfig
from siamese.train.population_step import PopulationStep


class MemberSums:
    """Member k's running sums, as `Totals.read` reads a StepRunner's: views of its row,
    valid for the whole run (the population zeroes its sums in place)."""

    def __init__(self, step: PopulationStep, k: int) -> None:
        self.step = step
        self.loss_sum: Tensor = step.loss_sum[k]
        self.grad_sums: Tensor = step.grad_sums[k]
        self.ratio_sum: Tensor = step.ratio_sum[k]
        self.stat_steps: Tensor = step.stat_steps

    @property
    def layers(self) -> list[str]:
        return self.step.stack.layers

    @property
    def steps(self) -> int:
        return self.step.steps


def may_evaluate(config: TrainConfig, epoch: int, loss_sum: float) -> bool:
    """Whether fit's check point may evaluate validation pairs now (a NaN/Inf loss, or epoch
    1 of an early_stop run): only then does the scratch network need the member's weights."""
    return not math.isfinite(loss_sum) or (config.early_stop and epoch == 1)
