"""`Population`: K compatible members trained as one program, epoch by epoch.

The loop is fit's (siamese.train.loop), member by member where it must be: each member's
record is appended, its files kept, its callbacks asked whether to stop, and a member that
stops is masked out of the step (its weights and optimizer state no longer change) while
the others go on. One member's failing callback or checkpoint ends that member alone; a
failure of the shared step, or Ctrl-C, ends them all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from siamese.config import TrainConfig
from siamese.data import PairData
from siamese.errors import ConfigError
from siamese.files import signals_deferred
from siamese.model import EMBEDDING_DIM, SiameseNet
from siamese.train import gpu
from siamese.train.callbacks import Callback
from siamese.train.checks import EpochChecks, epoch_record
from siamese.train.device_data import DeviceData
from siamese.train.evaluate import EvalResult, evaluate
from siamese.train.history import EpochRecord, History
from siamese.train.loop import INITIAL_EVAL_PAIRS, _end, epoch_order, resolve_device
from siamese.train.population_checks import MemberSums, may_evaluate
from siamese.train.population_masks import DeviceMasks, Masks, ReplayMasks, masked_template
from siamese.train.population_members import Member, MemberResult, Snapshot
from siamese.train.population_optim import Hyper, StackedOptimizer, StackedState
from siamese.train.population_state import (
    Stack,
    quiet_model,
    start_member,
    torch_optimizer_state,
)
from siamese.train.population_step import PopulationStep
from siamese.train.precision import resolve_precision
from siamese.train.step import uses_graph

# A member's files are written when it ends and, while it runs, every this many seconds (at
# the end of the epoch that passes it): K members writing every epoch would wait on the disk.
DEFAULT_CHECKPOINT_EVERY_S = 300.0
_log = logging.getLogger(__name__)


def population_key(config: TrainConfig) -> tuple[object, ...]:
    """What the members of one population share: the network and its loss (the head, and
    the contrastive margin, a constant inside the loss), the optimizer's update rule, the
    batch shape, the device and its precision, and the data. Seed, lr, momentum, weight
    decay, dropout and epochs are each member's own."""
    margin = config.margin if config.head == "contrastive" else None
    shared = (config.head, margin, config.optimizer, config.batch_size, config.device)
    return (*shared, config.precision, config.data)


class Population:
    """K compatible members trained as one program. `masks`: "replay" draws fit's own
    dropout masks per member (the CPU default), "device" all members' in one call inside
    the step (the CUDA default: graph-capturable). `vmapped`: forward and backward of all
    members as one vmapped program (the CUDA default) or member by member (the CPU's)."""

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        data: PairData,
        callbacks: Sequence[Sequence[Callback]],
        checkpoint_dirs: Sequence[Path | None],
        checkpoint_every_s: float | None = DEFAULT_CHECKPOINT_EVERY_S,
        masks: str | None = None,
        vmapped: bool | None = None,
        lean_checkpoints: bool = False,
    ) -> None:
        if len({population_key(c) for c in configs}) != 1:
            raise ConfigError(
                "a population's members must share head, optimizer, batch size, "
                "device and data (see population_groups)"
            )
        self.configs, self.data = list(configs), data
        self.device = resolve_device(configs[0].device)
        self.checkpoint_every_s = checkpoint_every_s
        self.last_write = time.monotonic()
        with gpu.device_scope(self.device):
            self._build(masks or ("replay" if self.device.type == "cpu" else "device"), vmapped)
        self.members = [
            Member(config, self._history(config), cbs, folder, lean_checkpoints)
            for config, cbs, folder in zip(configs, callbacks, checkpoint_dirs, strict=True)
        ]
        self.checks = [
            EpochChecks(m.config, m.history, self.scratch, MemberSums(self.step, k), self.val)
            for k, m in enumerate(self.members)
        ]

    def _build(self, masks: str, vmapped: bool | None) -> None:
        first, device = self.configs[0], self.device
        mean, std = self.data.train.pixel_stats
        starts = [start_member(c, mean, std) for c in self.configs]
        self.template = masked_template(quiet_model(first, device))
        self.scratch = quiet_model(first, device)  # members are evaluated and saved through it
        self.stack = Stack(self.template, starts, device)
        state = StackedState.start(self.stack.flat, first.optimizer)
        self.optimizer = StackedOptimizer(first.optimizer, state, Hyper.of(self.configs, device))
        self.best_state = state.empty_like()
        # Every member's state at the end of the last epoch, and which epoch that was for each
        # (0: none yet): what Ctrl-C writes for a member whose last epoch is not on disk.
        self.last_state = state.empty_like()
        self.last_state_epochs = [0] * len(self.configs)
        self.train = DeviceData.put(self.data.train, self.data.train_pairs, device)
        self.val = DeviceData.put(self.data.val, self.data.val_pairs, device)
        shape = (len(starts), 2 * first.batch_size, EMBEDDING_DIM)
        dropouts = [c.dropout for c in self.configs]
        chosen: Masks = (
            ReplayMasks(starts, dropouts, shape).to(device)
            if masks == "replay"
            else DeviceMasks(starts, dropouts, shape, device)
        )
        self.step = PopulationStep(
            self.template,
            self.stack,
            self.optimizer,
            self.train,
            first.batch_size,
            chosen,
            use_graph=uses_graph(device),
            vmapped=vmapped,
            precision=resolve_precision(first.precision, device),
        )

    def _history(self, config: TrainConfig) -> History:
        return History(
            config.to_dict(),
            device=str(self.device),
            identical_pair_fraction=self.data.identical_train_pair_fraction,
            data_warnings=list(self.data.warnings),
        )

    def run(self) -> list[MemberResult]:
        with gpu.device_scope(self.device):
            self._start()
            try:
                epoch = 1
                while any(m.active for m in self.members):
                    self._epoch(epoch)
                    epoch += 1
            except BaseException as exc:
                self._abort(exc)
                raise
            return [m.result(self._model(k)) for k, m in enumerate(self.members)]

    def _start(self) -> None:
        for k, member in enumerate(self.members):
            initial = self._evaluate(k, limit=INITIAL_EVAL_PAIRS)
            member.history.initial_val_loss = initial.loss
            member.history.initial_output_std = initial.output_std
        for k in range(len(self.members)):
            self._guarded(k, partial(self._fit_start, k))
        self.step.set_active([m.active for m in self.members])

    def _fit_start(self, k: int) -> None:
        member = self.members[k]
        for callback in member.callbacks:
            callback.on_fit_start(member.history)

    def _epoch_start(self, k: int, epoch: int) -> None:
        for callback in self.members[k].callbacks:
            callback.on_epoch_start(epoch)

    def _epoch(self, epoch: int) -> None:
        before = [m.active for m in self.members]
        for k in (k for k, active in enumerate(before) if active):
            self._guarded(k, partial(self._epoch_start, k, epoch))
        after = [m.active for m in self.members]
        if after != before:  # a member whose hook failed has ended: it takes no more steps
            self.step.set_active(after)
            if not any(after):
                return
        started = time.perf_counter()
        batch, n_pairs = self.configs[0].batch_size, len(self.data.train_pairs)
        n_batches = n_pairs // batch  # whole batches only, as fit: one shape, graphable
        running = [k for k, m in enumerate(self.members) if m.active]
        records = self._train(epoch, n_batches, started)
        sums = self.step.read_sums()
        for k in running:
            if k not in records:  # the epoch's end, for members not cut at a check point
                result = self._evaluate(k)
                # The population's steps and the validations so far: K members' share.
                seconds = time.perf_counter() - started
                record = epoch_record(epoch, sums[k], result, seconds, n_batches * batch)
                self.checks[k].after_epoch(record, n_batches)
                records[k] = record
        improved = [False] * len(self.members)
        for k in running:
            member = self.members[k]
            member.history.step_path = self.step.path
            member.history.precision = self.step.precision
            rng, buffers = self.step.masks.rng_state(k), self.stack.member_buffers(k)
            improved[k] = member.add_epoch(records[k], rng, buffers)
        if any(improved):  # the best epoch's weights and optimizer state, kept on the device
            rows = torch.tensor(improved, device=self.device).view(-1, 1)
            self.best_state.take_rows(self.optimizer.state, rows)
        self._keep_last_state(epoch, running)
        if self._write_due():
            for k in running:
                self._guarded(k, partial(self._write, k, now=True))
        for k in running:
            self._guarded(k, partial(self._decide, k))
        self.step.set_active([m.active for m in self.members])

    def _train(self, epoch: int, n_batches: int, started: float) -> dict[int, EpochRecord]:
        """The epoch's steps; the records of members whose epoch a check point cut."""
        batch, n_pairs = self.configs[0].batch_size, len(self.data.train_pairs)
        orders = torch.stack([epoch_order(c, epoch, n_pairs) for c in self.configs])
        orders = orders.to(self.device)
        self.step.reset_sums()
        # Each member's checks start their epoch; the steps they check are fit's, alike.
        at = [checks.steps(n_batches) for checks in self.checks][-1]
        cut: dict[int, EpochRecord] = {}
        for step in range(n_batches):
            self.step.run(orders[:, step * batch : (step + 1) * batch])
            if step + 1 in at:
                cut.update(self._check(epoch, step + 1, n_batches, started, cut))
        return cut

    def _check(
        self, epoch: int, step: int, n_batches: int, started: float, cut: dict[int, EpochRecord]
    ) -> dict[int, EpochRecord]:
        """fit's check point after `step` steps, for every member still in the epoch; the
        members it cuts stop changing from the next step on."""
        losses = self.step.loss_sum.tolist()
        found = {}
        for k, member in enumerate(self.members):
            if not member.active or k in cut:
                continue
            if may_evaluate(member.config, epoch, losses[k]):
                self.stack.load_into(self.scratch, self.optimizer.state.flat, k)
            record = self.checks[k].at(epoch, step, n_batches, started)
            if record is not None:
                self.stack.store_buffers(self.scratch, k)  # the threshold it chose there
                found[k] = record
        if found:
            self.step.set_active(
                [m.active and k not in {**cut, **found} for k, m in enumerate(self.members)]
            )
        return found

    def _decide(self, k: int) -> None:
        member = self.members[k]
        if not member.active or member.last is None:
            return
        reason = member.stop_reason(member.last.record)
        if reason is None:
            return
        member.history.stop_reason = reason
        member.active = False
        self._write(k)
        member.keeper.finish(reason)  # as fit ends: kept files fsynced once, maybe weights only
        member.ended = True
        _end(member.callbacks, member.history, None)

    def _guarded(self, k: int, action: Callable[[], object]) -> None:
        """`action` for member k; an Exception ends that member alone, as it ends a fit run."""
        try:
            action()
        except Exception as exc:
            member = self.members[k]
            member.error = exc
            member.active = False
            if not member.ended:  # else its on_fit_end already ran (and raised this)
                member.ended = True
                member.history.stop_reason = "error"
                self._write_kept_quietly(k)  # as fit keeps an erring run's last epoch
                _settle_quietly(member)
                _end(member.callbacks, member.history, exc)

    def _keep_last_state(self, epoch: int, running: list[int]) -> None:
        """The epoch's end state of every member, on the device (a memcpy there, not K
        files): the epoch stays resumable from after a Ctrl-C however long since the last
        write (`checkpoint_every_s`: 300 s on a GPU), as each epoch of fit does."""
        self.last_state.copy_from(self.optimizer.state)
        for k in running:
            self.last_state_epochs[k] = epoch

    def _abort(self, exc: BaseException) -> None:
        """Every member still running ends: its files first (a second Ctrl-C waits for
        them), then its callbacks' on_fit_end, each member's whatever happens meanwhile."""
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        ending = [k for k, member in enumerate(self.members) if not member.ended]
        for k in ending:
            member = self.members[k]
            member.ended, member.active = True, False
            member.history.stop_reason = reason
        try:
            with signals_deferred():
                for k in ending:
                    self._write_kept_quietly(k)
                    _settle_quietly(self.members[k])
        finally:
            for k in ending:
                _end(self.members[k].callbacks, self.members[k].history, exc)

    def _write_kept_quietly(self, k: int) -> None:
        """Member k's last epoch (and best) as kept on the device, when its files are older:
        fit's keeper writes them as the run stops. One that cannot be written (the error that
        stops the run may be the device's) is a warning: that error is the one to see."""
        member = self.members[k]
        last = member.last
        if last is None or self.last_state_epochs[k] != last.record.epoch:
            return  # stopped before the copy of its last epoch was taken: nothing newer
        try:
            self._write(k, last_state=self.last_state)
        except Exception as exc:
            text = " ".join(str(exc).split())[:300]
            _log.warning("warning: member %d's last epoch was not written: %s", k, text)

    def _write_due(self) -> bool:
        if self.checkpoint_every_s is None:
            return False
        now = time.monotonic()
        if now - self.last_write < self.checkpoint_every_s:
            return False
        self.last_write = now
        return True

    def _write(self, k: int, now: bool = False, last_state: StackedState | None = None) -> None:
        """Member k's files for its last epoch, and for its best if that is earlier and not
        yet on disk (diverged weights are never written: the keeper skips them). A lean
        keeper holds the last epoch's until the member ends, unless `now`. `last_state`:
        where the last epoch's weights are (the live state until the next epoch trains)."""
        member = self.members[k]
        last, best = member.last, member.best
        if last is None or not member.needs_write:
            return
        state = self.optimizer.state if last_state is None else last_state
        if best is not None and best is not last and best.record.epoch > member.best_written_epoch:
            member.keeper.save_best(best.record, lambda: self._payload(k, best, self.best_state))
        member.keeper.save(last.record, lambda: self._payload(k, last, state))
        if now:
            member.keeper.write_pending()
        member.written_epoch = last.record.epoch
        if best is not None:
            member.best_written_epoch = best.record.epoch

    def _payload(self, k: int, snapshot: Snapshot, state: StackedState) -> dict[str, Any]:
        """What fit's checkpoint holds (the keeper adds epoch and best AUC)."""
        config = self.configs[k]
        optimizer = torch_optimizer_state(
            config, self.stack, state, k, self.scratch, uses_graph(self.device)
        )
        return {
            "model": self.stack.member_state(state.flat, k, snapshot.buffers),
            "optimizer": optimizer,
            "config": config.to_dict(),
            "history": snapshot.history,
            "rng": {"torch": snapshot.rng},
        }

    def _evaluate(self, k: int, limit: int | None = None) -> EvalResult:
        """fit's validation pass on member k (which may set its buffers, as in fit)."""
        self.stack.load_into(self.scratch, self.optimizer.state.flat, k)
        result = evaluate(self.scratch, self.val, limit=limit)
        self.stack.store_buffers(self.scratch, k)
        return result

    def _model(self, k: int) -> SiameseNet:
        model = quiet_model(self.configs[k], self.device)
        model.load_state_dict(self.stack.member_state(self.optimizer.state.flat, k))
        return model.train()


def _settle_quietly(member: Member) -> None:
    """fsync what a failing member keeps, as fit does; a failure to is not the error that
    ended it (its file stays written, only perhaps not yet on the disk)."""
    with contextlib.suppress(OSError):
        member.keeper.finish(member.history.stop_reason)
