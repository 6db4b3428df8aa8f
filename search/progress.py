"""Live progress: a rich status line for the running trial, one line per finished trial.
Plain lines only when the output is not a terminal (rich decides)."""

from __future__ import annotations

import collections
from typing import Any

import optuna
from rich.console import Console
from rich.status import Status

from siamese.train import Callback, EpochRecord, History


class Progress(Callback):
    def __init__(self, console: Console, total: int | None) -> None:
        self.console, self.total = console, total
        self.status: Status | None = None
        self.diagnoses: collections.Counter[str] = collections.Counter()
        self.states: collections.Counter[str] = collections.Counter()

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        if self.console.is_terminal:
            text = f"running trial: epoch {record.epoch} train_loss {record.train_loss:.4f} val_auc {record.val_auc:.3f}"
            if self.status is None:
                self.status = self.console.status(text)
                self.status.start()
            else:
                self.status.update(text)
        return None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna's trial-end callback."""
        if self.status is not None:
            self.status.stop()
            self.status = None
        self.states[trial.state.name] += 1
        self.diagnoses[str(trial.user_attrs.get("diagnosis", "-"))] += 1
        done = sum(self.states.values())
        best = _best(study)
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        self.console.print(
            f"trial {trial.number:>3} [{done}/{self.total or '?'}] {trial.state.name:<8} val_auc {value:<7} "
            f"{trial.user_attrs.get('diagnosis', '-'):<22} {params}",
            highlight=False,
        )
        diagnoses = ", ".join(f"{k} {v}" for k, v in self.diagnoses.most_common())
        self.console.print(
            f"      best {best} | complete {self.states['COMPLETE']} pruned {self.states['PRUNED']} "
            f"failed {self.states['FAIL']} | {diagnoses}",
            highlight=False,
        )


def _best(study: optuna.Study) -> str:
    try:
        return f"{study.best_value:.4f} (#{study.best_trial.number})"
    except ValueError:
        return "-"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
