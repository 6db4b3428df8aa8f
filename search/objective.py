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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from search.defaults import TRIAL_CHECKPOINT_EVERY_S
from search.recovery import INTERRUPTED_ATTR, OWNER_ATTR, process_token
from search.space import SearchSpace, suggest_config
from search.storage import CHECKPOINT_ATTR, RUN_ID_ATTR
from siamese import Diagnosis, PairData, TrainConfig, diagnose, fit
from siamese.diagnosis import early_stop_text
from siamese.errors import DiskFullError
from siamese.interrupts import InterruptCheck
from siamese.train import Callback, EpochRecord, FitResult, History
from tracking import TrackingCallback, tracked_run
from tracking.base import RUN_NAME_TAG, STATE_TAG, Tracker
from tracking.run import Terminated

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
class TrialPlan:
    """What one trial trains: its config, checkpoint folder (a retry resumes from the
    `last.pt` there) and the callbacks that report to Optuna and keep its weights."""

    trial: optuna.Trial
    config: TrainConfig
    folder: Path
    resume: Path | None
    callbacks: list[Callback]


@dataclass
class TrialRun:
    """A trial's MLflow run while it trains: the callbacks that track it, and the result
    the training hands back before the run is closed."""

    run_id: str | None
    callbacks: list[Callback]
    result: FitResult | None = None

    def finished(self) -> FitResult:
        if self.result is None:
            raise RuntimeError("the trial's training ended without a result")
        return self.result


@contextmanager
def recorded_failure(trial: optuna.Trial) -> Iterator[None]:
    """What ended a trial that did not finish goes on it: Ctrl-C or SIGTERM marks it for a
    retry when the study is resumed; an error is kept in one line for the report."""
    try:
        yield
    except (KeyboardInterrupt, Exception) as exc:
        note_failure(trial, exc)
        raise


def note_failure(trial: optuna.Trial, exc: BaseException) -> None:
    if isinstance(exc, KeyboardInterrupt):
        # Which signal: a SIGTERM (a scheduler's) is retried like a death (search.recovery).
        trial.set_user_attr(INTERRUPTED_ATTR, "SIGTERM" if isinstance(exc, Terminated) else True)
    elif isinstance(exc, Exception):
        trial.set_user_attr(ERROR_ATTR, one_line(exc))


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
    # A running trial's last.pt at most this often (None: the default of its path).
    checkpoint_every_s: float | None = None
    # The best val_auc this process logged a model for (see _is_best_converged).
    _best_logged: float = field(default=-math.inf, init=False, repr=False)
    # A trial failed on a full disk: the worker asks for no more (search.workers).
    disk_full: bool = field(default=False, init=False, repr=False)

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self.run(self.plan(trial))
        except DiskFullError:
            self.disk_full = True  # every next trial would fail the same way
            trial.study.stop()
            raise

    def plan(self, trial: optuna.Trial) -> TrialPlan:
        """The trial's config and folder, recorded on it before anything trains."""
        trial.set_user_attr(OWNER_ATTR, process_token())  # who to ask whether it still runs
        config = suggest_config(trial, self.base, self.space)
        folder = Path(
            trial.user_attrs.get(CHECKPOINT_ATTR) or self.checkpoint_root / f"trial-{trial.number}"
        )
        resume = folder / "last.pt" if (folder / "last.pt").is_file() else None
        trial.set_user_attr(CHECKPOINT_ATTR, str(folder))
        if resume is not None:  # a retry of a trial whose worker died or was interrupted
            trial.set_user_attr("resumed_from", str(resume))
        progress = [self.progress] if self.progress else []
        callbacks: list[Callback] = [
            InterruptCheck(),  # a Ctrl-C dropped in a finalizer stops at the epoch's end
            PruningCallback(trial),
            *progress,
        ]
        return TrialPlan(trial, config, folder, resume, callbacks)

    def run(self, plan: TrialPlan) -> float:
        """Train one planned trial with `fit`: its value, or TrialPruned / an error."""
        with recorded_failure(plan.trial), self.tracked(plan) as run:
            run.result = fit(
                plan.config,
                self.data,
                callbacks=[*plan.callbacks, *run.callbacks],
                checkpoint_dir=plan.folder,
                resume_from=plan.resume,
                lean_checkpoints=True,  # a finished trial keeps its best weights only
                checkpoint_every_s=TRIAL_CHECKPOINT_EVERY_S
                if self.checkpoint_every_s is None
                else self.checkpoint_every_s,
            )
        return trial_value(run.finished())

    @contextmanager
    def tracked(self, plan: TrialPlan) -> Iterator[TrialRun]:
        """Around a trial's training: its MLflow run nested under the study's (when
        tracked). Once the body has set `result`, the diagnosis goes on the trial and the
        run is named with its outcome; a NaN/Inf loss then fails both (TrialDiverged)."""
        trial = plan.trial
        if self.tracker is None:
            untracked = TrialRun(None, [])
            yield untracked
            result = untracked.finished()
            _record_verdict(trial, result, diagnose(result.history))
            return
        tags = {"optuna.study": self.study_name, "optuna.trial_number": str(trial.number)}
        name = f"trial-{trial.number}"
        with tracked_run(
            self.tracker,
            name,
            plan.config,
            self.device,
            tags,
            self.parent_run_id,
            # The run is made while the trial trains; its id goes on the trial as soon as
            # it exists (a dead worker's run is then found and closed: search.storage).
            on_made=lambda made: trial.set_user_attr(RUN_ID_ATTR, made),
        ) as run_id:
            tracking = TrackingCallback(
                self.tracker,
                run_id,
                log_model=lambda h: self._is_best_converged(trial, h),
                outcome_tags=lambda h, v: outcome_tags(trial.number, h, v),
            )
            run = TrialRun(run_id, [tracking])
            try:
                yield run
                self.tracker.run_id_of(run_id)  # the trial holds its run's id before it is told
                result = run.finished()
                # The record on_fit_end wrote holds the verdict, and the run's outcome name.
                _record_verdict(trial, result, tracking.verdict or diagnose(result.history))
            except TrialDiverged:  # already named, with its diagnosis
                raise
            except BaseException as exc:
                ending = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
                self._name(run_id, outcome_name(trial.number, "FAIL", ending), "FAIL")
                raise

    def _name(self, run_id: str, name: str, state: str) -> None:
        if self.tracker is not None:
            self.tracker.set_tags(run_id, {STATE_TAG: state, RUN_NAME_TAG: name})

    def _is_best_converged(self, trial: optuna.Trial, history: History) -> bool:
        """Log a model only for a trial that beats every converged trial so far: those are
        the only ones `promote --study` can pick, and exporting a model takes a second.
        "So far" includes the models this process logged for trials not yet told: a
        population's members end together, and only those that beat the ones before log."""
        best = history.best
        if best is None:
            return False
        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        values = [
            t.value
            for t in done
            if t.user_attrs.get("verdict") == "converged" and t.value is not None
        ]
        if best.val_auc <= max([*values, self._best_logged]):
            return False
        self._best_logged = best.val_auc
        return True


def trial_state(history: History) -> str:
    """The Optuna state a finished training gives its trial."""
    if history.stop_reason == "non_finite":
        return "FAIL"
    return "PRUNED" if history.stop_reason == "pruned" else "COMPLETE"


def trial_value(result: FitResult) -> float:
    """The trial's value (its best val_auc), or TrialPruned with why it was stopped."""
    history = result.history
    if history.stop_reason == "pruned":
        early = history.early_stop
        why = early_stop_text(early) if early else f"pruned at epoch {len(history.records)}"
        raise optuna.TrialPruned(why)
    best = history.best
    return best.val_auc if best is not None else 0.5


def outcome_name(number: int, state: str, label: str) -> str:
    """A trial's run name once it ends, e.g. `trial-3 · PRUNED · diverged`: the runs table
    then tells completed, pruned and failed trials (and why) apart at a glance."""
    return f"trial-{number} · {state} · {label}"


def outcome_tags(number: int, history: History, verdict: Diagnosis) -> dict[str, str]:
    """The state and name of a trial's run whose training ended on its own; none for one
    that an error or Ctrl-C ended (Objective.tracked names that one FAIL)."""
    if history.stop_reason in ("interrupted", "error"):
        return {}
    state = trial_state(history)
    return {STATE_TAG: state, RUN_NAME_TAG: outcome_name(number, state, verdict.label)}


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
