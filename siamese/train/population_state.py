"""A population's members as stacked tensors, and each member back as what `fit` would hold.

Every member starts exactly as `fit` starts it: `torch.manual_seed(seed)`, `build_model`, the
training images' normalisation. Its weights become one row of a (K, N) tensor (parameters
in `named_parameters` order, each a view into that row), its buffers are stacked (K, ...).
Going back, a member is a plain `SiameseNet` state dict with `state_dict()`'s keys, and its
optimizer state is what torch.optim's `state_dict()` gives for the optimizer `fit` builds:
its checkpoints load, score and resume in `fit` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from siamese.config import TrainConfig
from siamese.model import SiameseNet, build_model
from siamese.train.initial import seeded_model
from siamese.train.population_optim import StackedState, torch_slots
from siamese.train.step import LAYER_PREFIXES, layer_names, make_optimizer


@dataclass(frozen=True)
class MemberStart:
    """A member as `fit` starts it: its state dict, and the CPU RNG state right after
    `build_model` (the generator `fit` then draws its dropout masks from)."""

    state: dict[str, Tensor]
    rng: Tensor


def start_member(config: TrainConfig, mean: float, std: float) -> MemberStart:
    # fork_rng: the caller's global RNG is left as it was (fit reseeds it; a population
    # keeps one generator per member instead). The CPU generator alone is seeded: the
    # network is built on the CPU, as in fit.
    with torch.random.fork_rng(devices=[]):
        model = seeded_model(config)
        model.set_normalization(mean, std)
        return MemberStart(model.state_dict(), torch.get_rng_state())


def quiet_model(config: TrainConfig, device: torch.device) -> SiameseNet:
    """A network of `config`'s shape whose initial weights do not matter, built without
    touching the global RNG (a scratch copy to evaluate members or hand one back)."""
    with torch.random.fork_rng(devices=[]):
        return build_model(config).to(device)


@dataclass(frozen=True)
class ParamSlot:
    name: str
    shape: torch.Size
    start: int
    size: int


class Stack:
    """The layout of K members' weights in one (K, N) tensor, and their buffers."""

    def __init__(self, template: SiameseNet, starts: Sequence[MemberStart], device: torch.device):
        self.slots: list[ParamSlot] = []
        offset = 0
        for name, param in template.named_parameters():
            self.slots.append(ParamSlot(name, param.shape, offset, param.numel()))
            offset += param.numel()
        self.keys = list(template.state_dict())  # state_dict order: parameters and buffers
        names = {s.name for s in self.slots}
        self.buffer_names = [k for k in self.keys if k not in names]
        rows = [torch.cat([s.state[p.name].flatten() for p in self.slots]) for s in starts]
        self.flat = torch.stack(rows).to(device)
        self.buffers = {
            name: torch.stack([s.state[name] for s in starts]).to(device)
            for name in self.buffer_names
        }
        self.layers = layer_names(template)
        self.param_layer = torch.tensor(
            [self.layers.index(_layer_of(s.name)) for s in self.slots], device=device
        )

    @property
    def size(self) -> int:
        return int(self.flat.shape[0])

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """Each parameter of every member, as a (K, *shape) view into `flat`'s rows."""
        k = flat.shape[0]
        return {s.name: flat[:, s.start : s.start + s.size].view(k, *s.shape) for s in self.slots}

    def member_state(
        self, flat: Tensor, k: int, buffers: dict[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Member `k`'s state dict (copies), keyed and ordered as `SiameseNet.state_dict()`;
        `buffers` as they were at an earlier epoch (else as they are)."""
        params = {s.name: flat[k, s.start : s.start + s.size].view(s.shape) for s in self.slots}
        values = {**params, **(buffers if buffers is not None else self.member_buffers(k))}
        return {key: values[key].detach().clone() for key in self.keys}

    def member_buffers(self, k: int) -> dict[str, Tensor]:
        return {name: b[k].clone() for name, b in self.buffers.items()}

    def load_into(self, model: nn.Module, flat: Tensor, k: int) -> None:
        """Member `k`'s weights and buffers copied into `model` (a scratch network)."""
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(flat[k], model.parameters())
            for name, buffer in model.named_buffers():
                if name in self.buffers:
                    buffer.copy_(self.buffers[name][k])

    def store_buffers(self, model: nn.Module, k: int) -> None:
        """`model`'s buffers back into member `k`'s: a validation pass sets the decision
        threshold there, as it does in fit's model."""
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in self.buffers:
                    self.buffers[name][k].copy_(buffer)


def _layer_of(param_name: str) -> str:
    return next(name for name, prefix in LAYER_PREFIXES if param_name.startswith(prefix))


def torch_optimizer_state(
    config: TrainConfig,
    stack: Stack,
    state: StackedState,
    k: int,
    model: SiameseNet,
    capturable: bool,
) -> dict[str, Any]:
    """Member `k`'s optimizer state as `make_optimizer(config, ...).state_dict()` would give
    it after the same steps: `fit --resume` loads it, and its param groups are fit's own."""
    params = list(model.parameters())
    optimizer = make_optimizer(config, params, capturable=capturable)
    steps = float(state.step[k, 0])
    if steps == 0:
        return optimizer.state_dict()  # torch keeps no state before the first step
    # The step count: a device tensor for fused or capturable optimizers, else a CPU one.
    on_device = config.optimizer != "sgd" and (capturable or config.optimizer != "rmsprop")
    for slot, param in zip(stack.slots, params, strict=True):
        values: dict[str, Tensor] = {
            name: state.slots[name][k, slot.start : slot.start + slot.size].view(slot.shape).clone()
            for name in torch_slots(config)
        }
        if config.optimizer != "sgd":
            device = param.device if on_device else torch.device("cpu")
            values["step"] = torch.tensor(steps, dtype=torch.float32, device=device)
        optimizer.state[param] = values
    return optimizer.state_dict()
