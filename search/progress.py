"""Live progress: a rich status line for the running trial, one line per finished trial.
Plain lines only when the output is not a terminal (rich decides). Optuna's own report of
a failed trial is kept to what it adds: see `FailedTrialLines`."""

from __future__ import annotations

import collections
import logging
import re
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.status import Status

from search import gc_policy
from search.recovery import INTERRUPTED_ATTR, RETRY_OF_ATTR
from siamese.errors import DiskFullError, SiameseInputError
from siamese.train import Callback, EpochRecord, History

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Where Optuna says "Trial N failed with parameters ... because of the following error".
OPTUNA_TRIAL_LOGGER = "optuna.study._optimize"
_TRIAL = re.compile(r"Trial (\d+) failed")


class FailedTrialLines(logging.Filter):
    """Optuna logs a failed trial at WARNING with the whole traceback, then its value.

    - Ctrl-C or SIGTERM is no failure of the trial: both lines go (the command says
      "interrupted", and the run ends KILLED). A full disk stops the search, which ends
      with that one line: both go too.
    - An error that says all in one line (bad input): the line stays, the traceback goes.
    - Anything else is unexpected: the traceback is what helps, it stays."""

    def __init__(self) -> None:
        super().__init__()
        self.silenced: set[str] = set()  # trial numbers whose value line goes too

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        found = _TRIAL.match(record.getMessage())
        number = found.group(1) if found else ""
        if isinstance(error, KeyboardInterrupt | DiskFullError):
            self.silenced.add(number)  # the search ends with its own one line
            return False
        if error is None and number in self.silenced:
            self.silenced.discard(number)
            return False
        if isinstance(error, SiameseInputError):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_failed_trials() -> None:
    """Installs `FailedTrialLines` on Optuna's trial logger, once per process."""
    logger = logging.getLogger(OPTUNA_TRIAL_LOGGER)
    if not any(isinstance(f, FailedTrialLines) for f in logger.filters):
        logger.addFilter(FailedTrialLines())


class Progress(Callback):
    def __init__(self, console: Console, total: int | None) -> None:
        self.console, self.total = console, total
        self.status: Status | None = None
        quiet_failed_trials()  # every process that runs trials shows its progress

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
        """Optuna's trial-end callback. Counts are the whole study's, not this process's:
        with several workers, or a resumed study, they then match the study-wide total.
        After this process's first trial, everything trials need is loaded: frozen, the
        collector never walks it again (search.gc_policy)."""
        if self.status is not None:
            self.status.stop()
            self.status = None
        gc_policy.freeze_once(gc_policy.AFTER_FIRST_TRIAL)
        finished = study.get_trials(deepcopy=False, states=FINISHED)
        states = collections.Counter(t.state.name for t in finished)
        diagnoses = collections.Counter(_diagnosis(t) for t in finished)
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        early = trial.user_attrs.get("early_stop")
        if isinstance(early, dict):  # stopped inside epoch 1, its statistics proving a failure
            params += f"  (stopped at {float(early.get('fraction', 0)):.0%} of epoch {early.get('epoch')})"
        repeated = trial.user_attrs.get(RETRY_OF_ATTR)
        if repeated is not None:  # a dead worker's retry may run past the target: say why
            params += f"  (retry of trial {repeated})"
        total = max(self.total, len(finished)) if self.total else "?"
        self.console.print(
            f"trial {trial.number:>3} [{len(finished)}/{total}] {trial.state.name:<8} val_auc {value:<7} "
            f"{_diagnosis(trial):<22} {params}",
            highlight=False,
        )
        by_diagnosis = ", ".join(f"{k} {v}" for k, v in diagnoses.most_common())
        self.console.print(
            f"      best {_best(study)} | complete {states['COMPLETE']} pruned {states['PRUNED']} "
            f"failed {states['FAIL']} | {by_diagnosis}",
            highlight=False,
        )


def _best(study: optuna.Study) -> str:
    try:
        return f"{study.best_value:.4f} (#{study.best_trial.number})"
    except ValueError:
        return "-"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _diagnosis(trial: optuna.trial.FrozenTrial) -> str:
    """The trial's diagnosis; a trial that failed before it had one was interrupted (Ctrl-C
    or SIGTERM: it is retried on resume) or crashed."""
    if "diagnosis" in trial.user_attrs:
        return str(trial.user_attrs["diagnosis"])
    if trial.state != TrialState.FAIL:
        return "-"
    return "interrupted" if trial.user_attrs.get(INTERRUPTED_ATTR) else "crashed"
