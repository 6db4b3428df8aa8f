"""One Optuna trial = one siamese.fit call, tracked as an MLflow run nested under the study's.

Completed trials return their best val_auc. Pruned trials end their run FINISHED with the
tag optuna.state=PRUNED: the pruner's, and those stopped inside their first epoch because
their statistics proved a failure (user attribute `early_stop`: verdict, step, proof).
Diverged or crashed trials end it FAILED with the error, and the study goes on. A trial
retried after its worker died resumes from the dead trial's last checkpoint (its user
attributes, checkpoint folder included, are copied to the retry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import optuna

from search.recovery import INTERRUPTED_ATTR, OWNER_ATTR, process_token
from search.space import SearchSpace, suggest_config
from search.storage import RUN_ID_ATTR
from siamese import Diagnosis, PairData, TrainConfig, diagnose, fit
from siamese.diagnosis import early_stop_text
from siamese.errors import DiskFullError
from siamese.train import Callback, EpochRecord, FitResult, History
from siamese.train.keep import KeepWeightsOnly
from tracking import TrackingCallback, tracked_run
from tracking.base import RUN_NAME_TAG, STATE_TAG, Tracker

CHECKPOINT_ATTR = "checkpoint_dir"
ERROR_ATTR = "error"  # what ended a failed trial, in one line
VERDICT = "verdict"  # the diagnosis verdict: converged, failed or incomplete
EARLY_STOP_ATTR = "early_stop"  # History.early_stop of a trial stopped inside epoch 1


def one_line(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500]


class TrialDiverged(RuntimeError):
    """The loss became NaN/Inf: Optuna records the trial as FAIL, MLflow the run as FAILED."""


class PruningCallback(Callback):
    """Reports val_auc to Optuna after each epoch and stops the run when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_fit_start(self, history: History) -> None:
        for record in history.records:  # a resumed run: the epochs done before the crash
            self._report(record)

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        self._report(record)
        return "pruned" if self.trial.should_prune() else None

    def _report(self, record: EpochRecord) -> None:
        if math.isfinite(record.val_auc):
            self.trial.report(record.val_auc, record.epoch)


@dataclass
class Objective:
    base: TrainConfig
    space: SearchSpace
    data: PairData
    checkpoint_root: Path
    study_name: str
    tracker: Tracker | None = None
    parent_run_id: str | None = None
    device: str = "cpu"
    progress: Callback | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(OWNER_ATTR, process_token())  # who to ask whether it still runs
        config = suggest_config(trial, self.base, self.space)
        folder = Path(
            trial.user_attrs.get(CHECKPOINT_ATTR) or self.checkpoint_root / f"trial-{trial.number}"
        )
        resume = folder / "last.pt" if (folder / "last.pt").is_file() else None
        trial.set_user_attr(CHECKPOINT_ATTR, str(folder))
        if resume is not None:  # a retry of a trial whose worker died or was interrupted
            trial.set_user_attr("resumed_from", str(resume))
        # KeepWeightsOnly comes before tracking, so that what is logged is the small file.
        progress = [self.progress] if self.progress else []
        callbacks: list[Callback] = [PruningCallback(trial), *progress, KeepWeightsOnly()]
        try:
            result = self._train(trial, config, callbacks, folder, resume)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a resumed study retries it once
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise
        except Exception as exc:
            trial.set_user_attr(ERROR_ATTR, one_line(exc))
            if isinstance(exc, DiskFullError):
                trial.study.stop()  # every next trial would fail the same way
            raise
        if result.history.stop_reason == "pruned":
            early = result.history.early_stop
            why = (
                early_stop_text(early)
                if early
                else f"pruned at epoch {len(result.history.records)}"
            )
            raise optuna.TrialPruned(why)
        best = result.history.best
        return best.val_auc if best is not None else 0.5

    def _train(
        self,
        trial: optuna.Trial,
        config: TrainConfig,
        callbacks: list[Callback],
        folder: Path,
        resume: Path | None,
    ) -> FitResult:
        if self.tracker is None:
            result = fit(
                config, self.data, callbacks=callbacks, checkpoint_dir=folder, resume_from=resume
            )
            _record_verdict(trial, result, diagnose(result.history))
            return result
        tags = {"optuna.study": self.study_name, "optuna.trial_number": str(trial.number)}
        name = f"trial-{trial.number}"
        with tracked_run(
            self.tracker, name, config, self.device, tags, self.parent_run_id
        ) as run_id:
            trial.set_user_attr(RUN_ID_ATTR, run_id)
            tracking = TrackingCallback(
                self.tracker, run_id, log_model=lambda h: self._is_best_converged(trial, h)
            )
            try:
                result = fit(
                    config,
                    self.data,
                    callbacks=[*callbacks, tracking],
                    checkpoint_dir=folder,
                    resume_from=resume,
                )
                state = "PRUNED" if result.history.stop_reason == "pruned" else "COMPLETE"
                if result.history.stop_reason == "non_finite":
                    state = "FAIL"
                verdict = tracking.verdict or diagnose(result.history)
                name = outcome_name(trial.number, state, verdict.label)
                self.tracker.set_tags(run_id, {STATE_TAG: state, RUN_NAME_TAG: name})
                _record_verdict(trial, result, verdict)
            except TrialDiverged:  # already named, with its diagnosis
                raise
            except BaseException as exc:
                ending = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
                name = outcome_name(trial.number, "FAIL", ending)
                self.tracker.set_tags(run_id, {STATE_TAG: "FAIL", RUN_NAME_TAG: name})
                raise
        return result

    def _is_best_converged(self, trial: optuna.Trial, history: History) -> bool:
        """Log a model only for a trial that beats every converged trial so far: those are
        the only ones `promote --study` can pick, and exporting a model takes a second."""
        best = history.best
        if best is None:
            return False
        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        values = [
            t.value
            for t in done
            if t.user_attrs.get("verdict") == "converged" and t.value is not None
        ]
        return not values or best.val_auc > max(values)


def outcome_name(number: int, state: str, label: str) -> str:
    """A trial's run name once it ends, e.g. `trial-3 · PRUNED · diverged`: the runs table
    then tells completed, pruned and failed trials (and why) apart at a glance."""
    return f"trial-{number} · {state} · {label}"


def _record_verdict(trial: optuna.Trial, result: FitResult, verdict: Diagnosis) -> None:
    """The diagnosis goes on the trial (the report and progress read it); a NaN/Inf loss
    then fails the trial."""
    trial.set_user_attr("diagnosis", verdict.label)
    trial.set_user_attr(VERDICT, verdict.verdict)
    early = result.history.early_stop
    if early:
        trial.set_user_attr(EARLY_STOP_ATTR, early)
    if result.history.stop_reason == "non_finite":
        where = f" at step {early['step']} of epoch {early['epoch']}" if early else ""
        raise TrialDiverged(
            f"trial {trial.number}: loss became NaN/Inf{where} (lr={result.history.config['lr']})"
        )
