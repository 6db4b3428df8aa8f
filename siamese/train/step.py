"""One optimisation step, with the statistics the diagnosis needs accumulated on the device.

Nothing here calls `.item()`: loss, gradient norms and update ratios are summed into device
tensors and read once per epoch, so a GPU never waits on the host between steps. On CUDA
the whole step (gather of the batch, forward, backward, statistics, optimizer) is captured
in one CUDA graph and replayed: this network is launch-bound at batch 32 (DESIGN.md). The
CUDA calls themselves live in `siamese.train.gpu`, where a CPU test emulates them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

from siamese.config import TrainConfig
from siamese.model import SiameseNet
from siamese.train import gpu
from siamese.train.device_data import DeviceData
from siamese.train.lean_optim import lean
from siamese.train.precision import autocast, resolve_precision

# Layer names for the per-layer gradient norms, by parameter-name prefix: the model's own
# attribute names, so a reordered or inserted layer cannot shift a statistic to another one.
LAYER_PREFIXES = (
    ("conv1", "tower.conv1."),
    ("conv2", "tower.conv2."),
    ("conv3", "tower.conv3."),
    ("conv4", "tower.conv4."),
    ("fc", "tower.fc."),
    ("head", "head."),
)
# Eager steps before capture: the optimizer creates its state lazily on the first step(s),
# and the step with statistics (step 0) and without (steps 1, 2) each run once before either
# is recorded.
GRAPH_WARMUP_STEPS = 3
# Gradient norms and update ratios are measured on every Nth step only, eagerly or in a
# graph: every step they cost ~5% of a CPU step, and ~25 extra small kernels in a graphed GPU
# step. 1 measures every step; `bench/gpu_checks.py` prints a graph's pairs/s both ways.
STATS_EVERY = 4
# The running sums are float64: after a blow-up they reach 1e10 and more, where a float32
# sum's step (1e3) swallows every later step's gradient norm, and the early stop's windows
# (differences of these sums) would read a small but live gradient as none.
SUMS_DTYPE = torch.float64
# False: CUDA steps run eagerly as well (the benchmark's "fit eager" arm).
GRAPHS_ENABLED = True
# Optimizer settings that belong to the device a run is on, not to what it has learned.
DEVICE_FLAGS = ("capturable", "fused", "foreach")
# Longest capture error kept in the recorded step path (one line, an MLflow tag).
PATH_ERROR_CHARS = 300


def uses_graph(device: torch.device) -> bool:
    """Whether steps on `device` run as a CUDA graph (the optimizer must then be capturable)."""
    return device.type == "cuda" and GRAPHS_ENABLED


def _eager_reason(device: torch.device) -> str:
    return device.type if device.type != "cuda" else "graphs disabled"


def layer_names(model: SiameseNet) -> list[str]:
    present = {
        name
        for name, prefix in LAYER_PREFIXES
        for p, _ in model.named_parameters()
        if p.startswith(prefix)
    }
    return [name for name, _ in LAYER_PREFIXES if name in present]


def _layer_index(model: SiameseNet, device: torch.device) -> Tensor:
    names = layer_names(model)
    index = []
    for param_name, _ in model.named_parameters():
        layer = next(name for name, prefix in LAYER_PREFIXES if param_name.startswith(prefix))
        index.append(names.index(layer))
    return torch.tensor(index, device=device)


class StepRunner:
    """Runs training steps on a device-resident data set and sums their statistics.

    `path` says how the steps ran: "graph", or "eager: <why>" ("cpu", "warm-up" when a run
    ended before its capture, "capture failed: ...")."""

    def __init__(
        self,
        model: SiameseNet,
        optimizer: torch.optim.Optimizer,
        train_data: DeviceData,
        config: TrainConfig,
        stats_every: int | None = None,
    ) -> None:
        self.model, self.optimizer, self.data = model, optimizer, train_data
        self.device = train_data.device
        self.precision = resolve_precision(config.precision, self.device)
        self.params = [p for p in model.parameters()]
        self.layer_index = _layer_index(model, self.device)
        self.layers = layer_names(model)
        self.stats_every = stats_every or STATS_EVERY
        self.batch_idx = torch.zeros(config.batch_size, dtype=torch.long, device=self.device)
        self.previous = [torch.empty_like(p) for p in self.params]
        self._allocate_sums()
        self.use_graph = uses_graph(self.device)
        self.graphs: dict[bool, gpu.Replayable] = {}  # with statistics or not -> its graph
        self.path = "eager: warm-up" if self.use_graph else f"eager: {_eager_reason(self.device)}"
        self.eager_steps = 0

    def _allocate_sums(self) -> None:
        """Once per run: a captured step writes to the very tensors it was recorded with."""
        zeros = partial(torch.zeros, device=self.device, dtype=SUMS_DTYPE)
        self.loss_sum, self.grad_sums = zeros(()), zeros(len(self.layers))
        self.ratio_sum, self.stat_steps = zeros(()), zeros(())
        self.steps = 0

    def reset_sums(self) -> None:
        """Zeroed in place: new tensors would leave the graph writing into the old, freed ones
        (read back as zeros from epoch 2 on, and memory later handed to other tensors)."""
        for total in (self.loss_sum, self.grad_sums, self.ratio_sum, self.stat_steps):
            total.zero_()
        self.steps = 0

    def _step_body(self, with_stats: bool = True) -> None:
        """The step, written once for eager use and for graph capture (no host syncs)."""
        idx, data = self.batch_idx, self.data
        left = data.images.index_select(0, data.left.index_select(0, idx))
        right = data.images.index_select(0, data.right.index_select(0, idx))
        same = data.labels.index_select(0, idx)
        with autocast(self.precision, self.device):
            out = self.model(left, right)
        loss = self.model.loss(out, same)
        loss.backward()
        if with_stats:
            self._gradient_stats()
            torch._foreach_copy_(self.previous, [p.detach() for p in self.params])
        self.optimizer.step()
        if with_stats:
            self._update_stats()
        self.loss_sum.add_(loss.detach().to(SUMS_DTYPE))

    def _gradient_stats(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        squares = torch.stack(torch._foreach_norm(grads)).to(SUMS_DTYPE).pow(2)
        per_layer = torch.zeros_like(self.grad_sums).index_add_(0, self.layer_index, squares)
        self.grad_sums.add_(per_layer.sqrt())

    def _update_stats(self) -> None:
        deltas = torch._foreach_sub([p.detach() for p in self.params], self.previous)
        delta_norm = torch.stack(torch._foreach_norm(deltas)).pow(2).sum().sqrt()
        weight_norm = torch.stack(torch._foreach_norm(self.previous)).pow(2).sum().sqrt()
        self.ratio_sum.add_(delta_norm / weight_norm.clamp_min(1e-12))
        self.stat_steps.add_(1)

    def run(self, batch_indices: Tensor) -> None:
        """One step on the pairs at `batch_indices` (a device tensor of batch_size)."""
        self.batch_idx.copy_(batch_indices, non_blocking=True)
        with_stats = self.steps % self.stats_every == 0
        graph = self._graph(with_stats)
        if graph is not None:
            graph.replay()
        else:
            self._eager(with_stats)
        self.steps += 1

    def _graph(self, with_stats: bool) -> gpu.Replayable | None:
        if self.use_graph and not self.graphs and self.eager_steps >= GRAPH_WARMUP_STEPS:
            self._capture()
        return self.graphs.get(with_stats)

    def _eager(self, with_stats: bool) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._step_body(with_stats)
        self.eager_steps += 1

    def _capture(self) -> None:
        """Record the step with statistics and, when they are sampled, the step without: one
        graph with a flag inside could not skip the statistics' kernels."""
        variants = (True, False) if self.stats_every > 1 else (True,)
        try:
            for with_stats in variants:
                # Each capture allocates the gradients in its own pool; every replay writes
                # them whole before its optimizer step reads them.
                self.optimizer.zero_grad(set_to_none=True)
                step = partial(self._step_body, with_stats)
                self.graphs[with_stats] = gpu.capture_graph(step, self.device)
        except Exception as exc:  # keep training correct, just slower, and record why
            self.graphs.clear()
            self.use_graph = False
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:PATH_ERROR_CHARS]
            self.path = f"eager: capture failed: {why}"
            warnings.warn(f"CUDA graph capture failed, training eagerly: {why}", stacklevel=2)
            return
        self.path = "graph"

    def read_sums(self) -> tuple[float, dict[str, float], float]:
        """Mean loss, per-layer gradient norm and update ratio since reset (one host sync)."""
        sums = torch.cat([self.loss_sum.reshape(1), self.grad_sums, self.ratio_sum.reshape(1)])
        values = torch.cat([sums, self.stat_steps.reshape(1)]).cpu()
        loss = float(values[0]) / max(self.steps, 1)
        stats = values[1:-1] / max(float(values[-1]), 1.0)
        grad = {name: float(v) for name, v in zip(self.layers, stats[:-1], strict=True)}
        return loss, grad, float(stats[-1])


def make_optimizer(
    config: TrainConfig, params: Sequence[Tensor], capturable: bool
) -> torch.optim.Optimizer:
    """`config.optimizer` with its lr, momentum and weight decay. In a CUDA graph, Adam-family
    optimizers keep their step count on the device (capturable). Eagerly, the fused kernels
    do one pass over the weights instead of a dozen (on the CPU the default is a per-tensor
    Python loop)."""
    common: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    fast: dict[str, Any] = {"capturable": True} if capturable else {"fused": True}
    momentum = config.momentum
    if config.optimizer == "sgd":
        sgd_fast = {} if capturable else fast
        return lean(torch.optim.SGD)(params, momentum=momentum, **common, **sgd_fast)
    if config.optimizer == "adam":
        return lean(torch.optim.Adam)(params, **common, **fast)
    if config.optimizer == "adamw":
        return lean(torch.optim.AdamW)(params, **common, **fast)
    rmsprop_fast = {"capturable": True} if capturable else {"foreach": True}  # no fused RMSprop
    return lean(torch.optim.RMSprop)(params, momentum=momentum, **common, **rmsprop_fast)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """`saved` into `optimizer`, which keeps its own device flags. torch would restore the
    saved capturable/fused/foreach: a GPU (capturable) state fails its first Adam step on the
    CPU with an AssertionError, and a CPU (fused) state on a GPU never captures. The flags go
    in before loading because they also decide where torch puts the step counts."""
    groups = [
        {**group, **{k: ours[k] for k in DEVICE_FLAGS if k in ours}}
        for group, ours in zip(saved["param_groups"], optimizer.param_groups, strict=False)
    ]
    optimizer.load_state_dict({**saved, "param_groups": groups})
