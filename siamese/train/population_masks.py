"""Dropout masks for a population, handed to the network from outside.

A member must draw exactly the masks `fit` draws with its seed (`ReplayMasks`, the CPU's
choice: equivalence is what is tested there), or all members must draw theirs in one call
inside the captured step (`DeviceMasks`, the CUDA one). Either way the masks reach the
network as a buffer of the template (`GivenMask`), so nothing random runs inside vmap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from siamese.model import SiameseNet
from siamese.train.population_state import MemberStart

# The template network's dropout module is replaced by `GivenMask`; this is its buffer.
MASK_KEY = "tower.dropout.mask"


class GivenMask(nn.Module):
    """Dropout whose mask (already scaled by 1 / (1 - p)) is handed in through
    functional_call. `x * mask` is what F.dropout computes once it has drawn its mask."""

    mask: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(()), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask


def masked_template(model: SiameseNet) -> SiameseNet:
    """`model` (a scratch copy) with its dropout taking the mask it is given."""
    model.tower.register_module("dropout", GivenMask())  # replaces the nn.Dropout
    return model


class Masks(Protocol):
    buffer: Tensor  # (K, 2 * batch, embedding) scaled masks the step reads

    def before_step(self, active: Sequence[bool]) -> None: ...

    def in_step(self) -> None: ...

    def rng_state(self, k: int) -> Tensor: ...


class ReplayMasks:
    """`fit`'s own masks, member by member, drawn on the host before each step: member k's
    generator starts where `fit`'s global one is after `build_model`, and draws with the
    call F.dropout makes on the CPU (`empty_like(x).bernoulli_(1 - p)`, then `/ (1 - p)`).
    K small host calls per step: the CPU's choice, where equivalence is what is tested."""

    def __init__(
        self, starts: Sequence[MemberStart], dropouts: Sequence[float], shape: tuple[int, ...]
    ):
        self.generators = [torch.Generator().manual_seed(0) for _ in starts]
        for generator, start in zip(self.generators, starts, strict=True):
            generator.set_state(start.rng)
        self.dropouts = list(dropouts)
        self.host = torch.ones(shape)
        self.buffer = self.host

    def to(self, device: torch.device) -> ReplayMasks:
        if device.type != "cpu":
            self.buffer = torch.ones(self.host.shape, device=device)
        return self

    def before_step(self, active: Sequence[bool]) -> None:
        for k, (p, generator) in enumerate(zip(self.dropouts, self.generators, strict=True)):
            if p > 0 and active[k]:  # fit draws nothing at p = 0
                self.host[k].bernoulli_(1 - p, generator=generator).div_(1 - p)
        if self.buffer is not self.host:
            self.buffer.copy_(self.host, non_blocking=True)

    def in_step(self) -> None:
        pass

    def rng_state(self, k: int) -> Tensor:
        return self.generators[k].get_state()


class DeviceMasks:
    """All members' masks in one draw inside the step, from the device's default generator
    (a CUDA graph replays it with fresh random numbers). Each member's are independent and
    distributed as `fit`'s, but they are not the masks `fit` would draw."""

    def __init__(
        self,
        starts: Sequence[MemberStart],
        dropouts: Sequence[float],
        shape: tuple[int, ...],
        device: torch.device,
    ):
        self.starts = list(starts)
        self.any = any(p > 0 for p in dropouts)
        p = torch.tensor(list(dropouts), device=device).view(-1, 1, 1)
        self.p, self.scale = p, 1.0 / (1.0 - p)
        self.buffer = torch.ones(shape, device=device)

    def before_step(self, active: Sequence[bool]) -> None:
        pass

    def in_step(self) -> None:
        if not self.any:
            return  # no dropout: the masks stay ones, and the generator is not drawn from
        keep = torch.rand(self.buffer.shape, device=self.buffer.device) >= self.p
        self.buffer.copy_(keep * self.scale)

    def rng_state(self, k: int) -> Tensor:
        return self.starts[k].rng  # fit's CPU generator, which its CUDA dropout never draws
