"""One training step for K members at once: `torch.func.functional_call` + `vmap`.

The step reads only preallocated tensors (the members' weights and optimizer state, the
batch indices, the dropout masks, the per-member hyperparameters and which members are
active) and writes into them in place, with no host synchronisation: on CUDA it is recorded
once as a CUDA graph (through `siamese.train.gpu`, which a CPU test emulates) and replayed.
Its statistics are `StepRunner`'s, per member: the loss, the per-layer gradient norms and the
update ratio, summed on the device and read once per epoch, sampled every `STATS_EVERY`th
step as `fit` samples them.

Dropout takes its mask from outside the network (`population_masks`). Nothing random runs
inside vmap: it runs with randomness="error", so a random operation added to the network
later fails loudly here instead of silently drawing numbers that match no single run.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

from siamese.model import SiameseNet
from siamese.train import gpu
from siamese.train import step as single
from siamese.train.device_data import DeviceData
from siamese.train.population_masks import MASK_KEY, Masks
from siamese.train.population_optim import StackedOptimizer
from siamese.train.population_state import Stack
from siamese.train.precision import autocast
from siamese.train.step import GRAPH_WARMUP_STEPS, PATH_ERROR_CHARS


class PopulationStep:
    """Runs steps for all members and sums each member's statistics. `vmapped`: the
    forward and backward as one vmapped program (default on CUDA) or member by member
    (default on the CPU)."""

    def __init__(
        self,
        template: SiameseNet,
        stack: Stack,
        optimizer: StackedOptimizer,
        data: DeviceData,
        batch_size: int,
        masks: Masks,
        use_graph: bool,
        stats_every: int | None = None,
        vmapped: bool | None = None,
        *,
        precision: str,
    ) -> None:
        self.template, self.stack, self.optimizer, self.data = template, stack, optimizer, data
        self.masks, self.device, self.precision = masks, data.device, precision
        k, flat = stack.size, optimizer.state.flat
        self.vmapped_grads = vmap(grad_and_value(self._member_loss), randomness="error")
        self.vmapped = vmapped if vmapped is not None else self.device.type != "cpu"
        self.losses = torch.zeros(k, device=self.device)
        # Read when built, as StepRunner reads it: a benchmark sets it for both trainers.
        self.stats_every = stats_every or single.STATS_EVERY
        self.active = torch.ones(k, 1, dtype=torch.bool, device=self.device)
        self.batch_idx = torch.zeros(k, batch_size, dtype=torch.long, device=self.device)
        self.grad, self.previous = torch.empty_like(flat), torch.empty_like(flat)
        zeros = partial(torch.zeros, device=self.device, dtype=single.SUMS_DTYPE)  # as fit's
        self.loss_sum, self.ratio_sum = zeros(k), zeros(k)
        self.grad_sums, self.stat_steps = zeros(k, len(stack.layers)), zeros(())
        self.steps = 0
        self.active_list = [True] * k
        self.use_graph = use_graph
        self.graphs: dict[bool, gpu.Replayable] = {}
        self.path = "eager: warm-up" if use_graph else f"eager: {self.device.type}"
        self.eager_steps = 0

    def set_active(self, active: Sequence[bool]) -> None:
        """In place, between steps: a captured step reads this very tensor."""
        self.active.copy_(torch.tensor(list(active)).view(-1, 1))
        self.active_list = list(active)

    def reset_sums(self) -> None:
        for total in (self.loss_sum, self.grad_sums, self.ratio_sum, self.stat_steps):
            total.zero_()
        self.steps = 0

    def _member_loss(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        left: Tensor,
        right: Tensor,
        same: Tensor,
        mask: Tensor,
    ) -> Tensor:
        with autocast(self.precision, self.device):
            out = functional_call(
                self.template, {**params, **buffers, MASK_KEY: mask}, (left, right)
            )
        return self.template.loss(out, same)

    def _batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """(K, batch, H, W) left and right images and (K, batch) labels."""
        data, idx = self.data, self.batch_idx.flatten()
        shape = (*self.batch_idx.shape, *data.images.shape[1:])
        left = data.images.index_select(0, data.left.index_select(0, idx)).view(shape)
        right = data.images.index_select(0, data.right.index_select(0, idx)).view(shape)
        return left, right, data.labels.index_select(0, idx).view(self.batch_idx.shape)

    def _step_body(self, with_stats: bool) -> None:
        self.masks.in_step()
        flat = self.optimizer.state.flat
        batch = self._batch()
        losses = self._grads_vmap(batch) if self.vmapped else self._grads_loop(batch)
        if with_stats:
            self._gradient_stats()
            self.previous.copy_(flat)
        # A graph replays with whichever members are active then: it always selects.
        everyone = not self.use_graph and all(self.active_list)
        self.optimizer.step(self.grad, None if everyone else self.active)
        if with_stats:
            self._update_stats(flat)
        self.loss_sum.add_(losses.detach().to(single.SUMS_DTYPE))

    def _grads_vmap(self, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """All members in one program: what a CUDA graph records."""
        flat = self.optimizer.state.flat
        views, buffers = self.stack.views(flat), self.stack.buffers
        grads, losses = self.vmapped_grads(views, buffers, *batch, self.masks.buffer)
        ordered = [grads[slot.name].reshape(flat.shape[0], -1) for slot in self.stack.slots]
        torch.cat(ordered, dim=1, out=self.grad)
        return losses

    def _grads_loop(self, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Member by member, on the CPU, where vmap gains nothing (DESIGN.md) and its
        batched convolutions round differently from fit's plain ones. Plain autograd on each
        member's weights runs the very kernels `fit` runs: the same gradients, bit for bit
        (torch.func.grad's differ in the last bits), and a stopped member costs nothing. The
        state, optimizer and statistics are the population's all the same."""
        flat, (left, right, same) = self.optimizer.state.flat, batch
        views = self.stack.views(flat)
        for k in range(flat.shape[0]):
            if not self.active_list[k]:
                continue  # stopped: its update is masked out anyway (a vmapped step pays it)
            # Leaves that share the member's row: the optimizer updates the row in place.
            params = {name: view[k].detach().requires_grad_() for name, view in views.items()}
            buffers = {name: b[k] for name, b in self.stack.buffers.items()}
            mask = self.masks.buffer[k]
            loss = self._member_loss(params, buffers, left[k], right[k], same[k], mask)
            grads = torch.autograd.grad(loss, [params[slot.name] for slot in self.stack.slots])
            torch.cat([g.flatten() for g in grads], out=self.grad[k])
            self.losses[k] = loss.detach()
        return self.losses

    def _gradient_stats(self) -> None:
        # As fit: each parameter's norm (the norm kernel, as _foreach_norm: a plain sum of
        # squares rounds differently over the fc layer's 1.9M weights), squared, summed per
        # layer, square-rooted.
        squares = self._norms(self.grad).to(single.SUMS_DTYPE).pow(2)
        per_layer = torch.zeros_like(self.grad_sums).index_add_(1, self.stack.param_layer, squares)
        self.grad_sums.add_(per_layer.sqrt())

    def _update_stats(self, flat: Tensor) -> None:
        # As fit: per-parameter norms of the update and of the weights before it, combined.
        delta_norm = self._combined_norm(flat - self.previous)
        weight_norm = self._combined_norm(self.previous)
        self.ratio_sum.add_(delta_norm / weight_norm.clamp_min(1e-12))
        self.stat_steps.add_(1)

    def _combined_norm(self, rows: Tensor) -> Tensor:
        return self._norms(rows).pow(2).sum(dim=1).sqrt()

    def _norms(self, rows: Tensor) -> Tensor:
        """(K, parameters): each member's norm of each parameter's columns of `rows`."""
        slots = self.stack.slots
        norms = [
            torch.linalg.vector_norm(rows[:, s.start : s.start + s.size], dim=1) for s in slots
        ]
        return torch.stack(norms, dim=1)

    def run(self, batch_indices: Tensor) -> None:
        """One step on each member's pairs at `batch_indices` (K, batch) on the device."""
        self.batch_idx.copy_(batch_indices, non_blocking=True)
        self.masks.before_step(self.active_list)
        with_stats = self.steps % self.stats_every == 0
        graph = self._graph(with_stats)
        if graph is not None:
            graph.replay()
        else:
            self._step_body(with_stats)
            self.eager_steps += 1
        self.steps += 1

    def _graph(self, with_stats: bool) -> gpu.Replayable | None:
        if self.use_graph and not self.graphs and self.eager_steps >= GRAPH_WARMUP_STEPS:
            self._capture()
        return self.graphs.get(with_stats)

    def _capture(self) -> None:
        variants = (True, False) if self.stats_every > 1 else (True,)
        try:
            for with_stats in variants:
                step = partial(self._step_body, with_stats)
                self.graphs[with_stats] = gpu.capture_graph(step, self.device)
        except Exception as exc:  # train eagerly, correct and slower, and record why
            self.graphs.clear()
            self.use_graph = False
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:PATH_ERROR_CHARS]
            self.path = f"eager: capture failed: {why}"
            warnings.warn(f"CUDA graph capture failed, training eagerly: {why}", stacklevel=2)
            return
        self.path = "graph"

    def read_sums(self) -> list[tuple[float, dict[str, float], float]]:
        """Each member's mean loss, per-layer gradient norm and update ratio since the
        reset, in one host synchronisation."""
        k = self.loss_sum.shape[0]
        columns = [self.loss_sum[:, None], self.grad_sums, self.ratio_sum[:, None]]
        values = torch.cat([*columns, self.stat_steps.expand(k, 1)], dim=1).cpu()
        stat_steps = max(float(values[0, -1]), 1.0)
        values = values[:, :-1]
        out = []
        for row in values:
            stats = row[1:] / stat_steps
            grad = {name: float(v) for name, v in zip(self.stack.layers, stats[:-1], strict=True)}
            out.append((float(row[0]) / max(self.steps, 1), grad, float(stats[-1])))
        return out
