"""The callback protocol: how tracking (MLflow) and pruning (Optuna) plug into `fit` from
outside without the core importing either. Every hook has a no-op default."""

from __future__ import annotations

from pathlib import Path

from siamese.train.history import EpochRecord, History


class Callback:
    def on_fit_start(self, history: History) -> None:
        """Called once, after the data is checked and before the first step."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch's first step (its previous epoch's files are written)."""

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        """Called after each epoch (and its checkpoints). Return a reason to stop the run."""
        return None

    def on_checkpoint(self, path: Path, kind: str, epoch: int) -> None:
        """Called after a checkpoint file (`kind` is "best" or "last") was written."""

    def on_fit_end(self, history: History) -> None:
        """Called once when training stops for any reason, interruption included."""
