"""One member of a population, seen from outside: its history, callbacks and checkpoints.

A member goes through the same callbacks as a `fit` run, in the same order per epoch:
the record is appended, then `on_epoch_end` may stop it. Its checkpoint files are fit's
(`CheckpointKeeper`): last.pt and best.pt with the same payload, but written at member end
and every `checkpoint_every_s` seconds instead of every epoch (K members each writing a
23 MB file per epoch would make a GPU population wait on the disk). The best epoch's state
is kept on the device meanwhile (`best_state` in the population), its history and RNG
state here, so best.pt is the best epoch's whichever epoch it is written at; so is the last
epoch's (`last_state`), which Ctrl-C or an error writes, as fit's keeper does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from siamese.config import TrainConfig
from siamese.model import SiameseNet
from siamese.train.callbacks import Callback
from siamese.train.checks import EARLY_STOP_REASON
from siamese.train.history import EpochRecord, History
from siamese.train.keeper import CheckpointKeeper
from siamese.train.loop import FitResult


@dataclass(frozen=True)
class Snapshot:
    """An epoch's state, besides the weights and optimizer state (kept on the device): its
    record, the history dict a checkpoint of it holds (stop_reason not yet set, as fit
    saves it), the member's RNG state and its buffers (the decision threshold) after it."""

    record: EpochRecord
    history: dict[str, object]
    rng: Tensor
    buffers: dict[str, Tensor]


@dataclass
class MemberResult(FitResult):
    """`fit`'s result, plus the error that ended this member alone (its callbacks or its
    checkpoint files failed; the other members went on). None when it ended otherwise."""

    error: BaseException | None = None


class Member:
    def __init__(
        self,
        config: TrainConfig,
        history: History,
        callbacks: Sequence[Callback],
        checkpoint_dir: Path | None,
        lean_checkpoints: bool = False,
    ) -> None:
        self.config, self.history, self.callbacks = config, history, list(callbacks)
        self.keeper = CheckpointKeeper(checkpoint_dir, self._notify, lean_checkpoints)
        self.active = True  # still training
        self.ended = False  # its callbacks' on_fit_end was called
        self.last: Snapshot | None = None
        self.best: Snapshot | None = None
        self.written_epoch = 0  # the last epoch whose files are on disk
        self.best_written_epoch = 0
        self.error: BaseException | None = None

    def _notify(self, path: Path, kind: str, epoch: int) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(path, kind, epoch)

    def add_epoch(self, record: EpochRecord, rng: Tensor, buffers: dict[str, Tensor]) -> bool:
        """Appends `record`; True when it is the member's best so far (by the rule the
        keeper applies: a finite training loss and a better finite validation AUC)."""
        self.history.records.append(record)
        self.last = Snapshot(record, self.history.to_dict(), rng, buffers)
        best_auc = self.best.record.val_auc if self.best is not None else -math.inf
        improved = (
            math.isfinite(record.train_loss)
            and math.isfinite(record.val_auc)
            and record.val_auc > best_auc
        )
        if improved:
            self.best = self.last
        return improved

    def stop_reason(self, record: EpochRecord) -> str | None:
        """Why the member stops after `record`, as fit decides it, or None to go on."""
        if not math.isfinite(record.train_loss) or not math.isfinite(record.val_loss):
            return "non_finite"
        reasons = [callback.on_epoch_end(record, self.history) for callback in self.callbacks]
        stop = EARLY_STOP_REASON if self.history.early_stop else next(filter(None, reasons), None)
        if stop:
            return stop
        return "completed" if record.epoch >= self.config.epochs else None

    @property
    def needs_write(self) -> bool:
        return self.last is not None and self.written_epoch < self.last.record.epoch

    def result(self, model: SiameseNet) -> MemberResult:
        kept = self.keeper
        return MemberResult(self.history, model, kept.best_path, kept.last_path, error=self.error)
