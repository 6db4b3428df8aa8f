"""torch.optim's SGD (momentum), Adam, AdamW and RMSprop over K members at once.

Every member's weights are one row of a (K, N) tensor and its hyperparameters are (K, 1)
tensors, so one step is a dozen whole-population operations (no Python loop over members or
weights: one CUDA graph records it). The update rules are torch.optim's as of torch 2.13,
with its defaults (Adam betas 0.9/0.999, eps 1e-8; RMSprop alpha 0.99, eps 1e-8; no
dampening, nesterov, amsgrad or centering): SGD and RMSprop add `weight_decay * w` to the
gradient, Adam too, AdamW decays the weights by `1 - lr * weight_decay` before its update.
Each operation is the one torch's kernels round like: on the CPU, SGD's and RMSprop's
updates equal torch's bit for bit (`addcmul` where torch adds with `alpha=`, a fused
multiply-add), Adam's and AdamW's differ from the fused kernel's in the last bit of about
1% of the weights. The step size and bias corrections are per member, in double, as there.

A member that is not active (it diverged, was pruned or is done) keeps its weights and its
optimizer state bit for bit: the new values are selected with `torch.where`, never blended
with a 0/1 factor, because 0 * NaN is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from siamese.config import TrainConfig

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8
# The per-parameter state torch.optim keeps for each optimizer (besides "step").
SLOTS = {
    "sgd": ("momentum_buffer",),
    "adam": ("exp_avg", "exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq"),
    "rmsprop": ("square_avg", "momentum_buffer"),
}


@dataclass
class StackedState:
    """What training changes: weights (K, N), optimizer slots (K, N) each, steps (K, 1)."""

    flat: Tensor
    slots: dict[str, Tensor]
    # float64: the bias corrections 1 - beta ** step are computed from it in double, as
    # torch's fused CPU kernels do; torch stores float32, which holds any step count exactly.
    step: Tensor

    @classmethod
    def start(cls, flat: Tensor, kind: str) -> StackedState:
        slots = {name: torch.zeros_like(flat) for name in SLOTS[kind]}
        step = torch.zeros(flat.shape[0], 1, dtype=torch.float64, device=flat.device)
        return cls(flat, slots, step)

    def tensors(self) -> list[Tensor]:
        return [self.flat, *self.slots.values(), self.step]

    def empty_like(self) -> StackedState:
        slots = {name: torch.empty_like(t) for name, t in self.slots.items()}
        return StackedState(torch.empty_like(self.flat), slots, torch.zeros_like(self.step))

    def copy_from(self, source: StackedState) -> None:
        """Every member's values of `source`, in place."""
        for mine, theirs in zip(self.tensors(), source.tensors(), strict=True):
            mine.copy_(theirs)

    def take_rows(self, source: StackedState, rows: Tensor) -> None:
        """Copy `source`'s values of the members where `rows` (K, 1) is True, in place."""
        for mine, theirs in zip(self.tensors(), source.tensors(), strict=True):
            mine.copy_(torch.where(rows, theirs, mine))


@dataclass(frozen=True)
class Hyper:
    """Per-member hyperparameters, (K, 1) float64 on the training device."""

    lr: Tensor
    momentum: Tensor
    weight_decay: Tensor

    @classmethod
    def of(cls, configs: Sequence[TrainConfig], device: torch.device) -> Hyper:
        def column(values: list[float]) -> Tensor:
            return torch.tensor(values, dtype=torch.float64, device=device).unsqueeze(1)

        return cls(
            column([c.lr for c in configs]),
            column([c.momentum for c in configs]),
            column([c.weight_decay for c in configs]),
        )


class StackedOptimizer:
    """One optimizer kind for a whole population; `step` updates `state` in place."""

    def __init__(self, kind: str, state: StackedState, hyper: Hyper) -> None:
        self.kind, self.state = kind, state
        # float32 copies: a float64 (K, 1) factor would promote every (K, N) operation.
        self.neg_lr = -hyper.lr.float()  # torch's w.add_(update, alpha=-lr), via addcmul
        self.momentum = hyper.momentum.float()
        self.weight_decay = hyper.weight_decay.float()
        self.lr64 = hyper.lr
        # AdamW's decay factor, computed in double like torch's Python float `1 - lr * wd`.
        self.decay = (1.0 - hyper.lr * hyper.weight_decay).float()
        self.some_without_momentum = bool((hyper.momentum == 0).any())

    def step(self, grad: Tensor, active: Tensor | None) -> None:
        """One update from `grad` (K, N) for the members where `active` (K, 1) is True;
        None: every member (the caller knows, and no graph replays this with others)."""
        state = self.state
        step = state.step + 1 if active is None else torch.where(active, state.step + 1, state.step)
        if self.kind == "sgd":
            new = self._sgd(grad)
        elif self.kind == "rmsprop":
            new = self._rmsprop(grad)
        else:
            new = self._adam(grad, step, decoupled=self.kind == "adamw")
        flat, slots = new
        for target, value in ((state.flat, flat), *((state.slots[n], v) for n, v in slots.items())):
            target.copy_(value if active is None else torch.where(active, value, target))
        state.step.copy_(step)

    def _l2(self, grad: Tensor) -> Tensor:
        # torch: grad.add(param, alpha=weight_decay), one fused multiply-add that addcmul
        # matches bit for bit (grad + wd * w rounds twice). Adding 0 * w changes no grad.
        return torch.addcmul(grad, self.weight_decay, self.state.flat)

    def _sgd(self, grad: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # torch starts the buffer as a copy of the first gradient: 0 * momentum + g is that.
        g = self._l2(grad)
        buf = self.state.slots["momentum_buffer"].mul(self.momentum).add_(g)
        return torch.addcmul(self.state.flat, buf, self.neg_lr), {"momentum_buffer": buf}

    def _rmsprop(self, grad: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        g = self._l2(grad)
        square_avg = self.state.slots["square_avg"].mul(RMSPROP_ALPHA)
        square_avg.addcmul_(g, g, value=1 - RMSPROP_ALPHA)
        avg = square_avg.sqrt().add_(RMSPROP_EPS)
        buf = self.state.slots["momentum_buffer"].mul(self.momentum).addcdiv_(g, avg)
        slots = {"square_avg": square_avg, "momentum_buffer": buf}
        with_momentum = torch.addcmul(self.state.flat, buf, self.neg_lr)
        if not self.some_without_momentum:
            return with_momentum, slots
        # torch's step without momentum, w + (-lr * g) / avg, rounds differently from the
        # buffer's (g / avg, the same value): both where members differ.
        without = torch.addcdiv(self.state.flat, g * self.neg_lr, avg)
        return torch.where(self.momentum > 0, with_momentum, without), slots

    def _adam(
        self, grad: Tensor, step: Tensor, decoupled: bool
    ) -> tuple[Tensor, dict[str, Tensor]]:
        beta1, beta2 = ADAM_BETAS
        flat = self.state.flat * self.decay if decoupled else self.state.flat
        g = grad if decoupled else self._l2(grad)
        exp_avg = self.state.slots["exp_avg"].lerp(g, 1 - beta1)
        exp_avg_sq = self.state.slots["exp_avg_sq"].mul(beta2)
        exp_avg_sq.addcmul_(g, g, value=1 - beta2)
        # A member that has not stepped yet (step 0) divides by 0 here; where() drops it.
        step_size = (self.lr64 / (1 - beta1**step)).float()
        bias_correction2_sqrt = (1 - beta2**step).sqrt().float()
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
        new = flat - step_size * exp_avg / denom
        return new, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


def torch_slots(config: TrainConfig) -> tuple[str, ...]:
    """The slots the torch optimizer `config` builds keeps (SGD and RMSprop keep no momentum
    buffer at momentum 0)."""
    slots = SLOTS[config.optimizer]
    return tuple(name for name in slots if name != "momentum_buffer" or config.momentum != 0)
