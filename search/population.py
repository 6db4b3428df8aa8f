"""`search --population K`: K trials asked of Optuna at once and trained as one program.

Each member is a trial of its own, as under `study.optimize`: planned by the same Objective
(config, checkpoint folder, callbacks), tracked as its own MLflow run nested under the
study's, reported to the pruner every epoch, diagnosed, and told to Optuna with its value,
PRUNED or FAIL. The sampler is TPE with constant_liar (search/setup.py), so a batch asked at
once spreads out instead of repeating one proposal. A retried trial (its worker died, or
Ctrl-C stopped it) resumes from its last.pt alone, through `fit`: a population starts every
member from its first epoch. Ctrl-C fails every trial of the batch with `interrupted` set,
so a resumed study retries each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.heartbeats import beating, fail_stale_trials
from search.objective import (
    Objective,
    TrialPlan,
    TrialRun,
    note_failure,
    recorded_failure,
    trial_value,
)
from search.progress import OPTUNA_TRIAL_LOGGER, Progress
from siamese.errors import DiskFullError
from siamese.interrupts import raise_if_interrupted
from siamese.train import Callback
from siamese.train.population import fit_population

# A trial's outcome: its value, TrialPruned, or what failed it.
Outcome = float | BaseException
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


@dataclass(frozen=True)
class Budget:
    """When a worker stops asking: the study's target (finished and running trials), this
    worker's own count, and its time."""

    target: int | None = None
    n_trials: int | None = None
    timeout: float | None = None


def run_populations(
    study: optuna.Study, objective: Objective, size: int, budget: Budget, progress: Progress
) -> None:
    """Batches of at most `size` trials until the budget is spent or the disk is full."""
    started, asked = time.monotonic(), 0
    while budget.timeout is None or time.monotonic() - started < budget.timeout:
        raise_if_interrupted()  # a Ctrl-C dropped in a finalizer stops before the next batch
        fail_stale_trials(study)
        room = room_left(study, budget, size, asked)
        if room <= 0:
            return
        asked += room
        if _run_batch(study, objective, room, progress):
            return


def room_left(study: optuna.Study, budget: Budget, size: int, asked: int) -> int:
    """How many trials a worker that has asked `asked` may ask now, at most `size`. The
    study's target counts running trials: every worker's, so that together they stop at it
    (two that finish at the same moment may each start one more)."""
    room = size
    if budget.n_trials is not None:
        room = min(room, budget.n_trials - asked)
    if budget.target is not None:
        counted = study.get_trials(deepcopy=False, states=COUNTED)
        room = min(room, budget.target - len(counted))
    return room


@dataclass
class _Batch:
    """The trials asked together, each told exactly once."""

    study: optuna.Study
    progress: Progress
    untold: list[optuna.Trial] = field(default_factory=list)
    disk_full: bool = False

    def ask(self) -> optuna.Trial:
        trial = self.study.ask()
        self.untold.append(trial)
        return trial

    def tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        self.untold.remove(trial)
        frozen = _tell(self.study, trial, outcome)
        self.disk_full |= isinstance(outcome, DiskFullError)
        self.progress(self.study, frozen)

    def fail_untold(self, why: BaseException) -> None:
        """Trials asked but never trained (Ctrl-C came first): FAIL, marked for a retry."""
        for trial in list(self.untold):
            note_failure(trial, why)
            self.untold.remove(trial)
            self.study.tell(trial, state=TrialState.FAIL)


def _run_batch(study: optuna.Study, objective: Objective, n: int, progress: Progress) -> bool:
    """Ask `n` trials, train them, tell each. True when the disk filled up (every next
    trial would fail the same way). Ctrl-C is raised once every trial is told."""
    batch = _Batch(study, progress)
    try:
        plans = [objective.plan(batch.ask()) for _ in range(n)]
        # Optuna keeps a trial's storage id private; its heartbeat is recorded by that id.
        with beating(study._storage, [p.trial._trial_id for p in plans]):
            for plan in (p for p in plans if p.resume is not None):
                _tell_and_raise_interrupt(batch, plan.trial, _train_alone(objective, plan))
            fresh = [p for p in plans if p.resume is None]
            outcomes = _train_together(objective, fresh)
            for plan, outcome in zip(fresh, outcomes, strict=True):
                batch.tell(plan.trial, outcome)
            for outcome in outcomes:
                if isinstance(outcome, KeyboardInterrupt):
                    raise outcome
    except BaseException as exc:
        batch.fail_untold(exc)
        raise
    return batch.disk_full


def _tell_and_raise_interrupt(batch: _Batch, trial: optuna.Trial, outcome: Outcome) -> None:
    batch.tell(trial, outcome)
    if isinstance(outcome, KeyboardInterrupt):
        raise outcome


def _train_alone(objective: Objective, plan: TrialPlan) -> Outcome:
    try:
        return objective.run(plan)
    except (Exception, KeyboardInterrupt) as exc:  # TrialPruned among them
        return exc


@dataclass
class _Member:
    plan: TrialPlan
    stack: ExitStack = field(default_factory=ExitStack)
    run: TrialRun | None = None


def _train_together(objective: Objective, plans: Sequence[TrialPlan]) -> list[Outcome]:
    """Every plan's run opened, the population trained, every run closed (in reverse, as
    nested `with` blocks would: each run holds the SIGTERM handler of the one before)."""
    members: list[_Member] = []
    shared: BaseException | None = None  # what stopped them all: Ctrl-C, a failed step
    results = None
    try:
        for plan in plans:
            members.append(_Member(plan))
            members[-1].stack.enter_context(recorded_failure(plan.trial))
            members[-1].run = members[-1].stack.enter_context(objective.tracked(plan))
        results = fit_population(
            [m.plan.config for m in members],
            objective.data,
            [[*m.plan.callbacks, *_tracking(m)] for m in members],
            [m.plan.folder for m in members],
            max_size=len(members),
            lean_checkpoints=True,  # as a trial's fit: a finished one keeps its best weights only
            **_cadence(objective.checkpoint_every_s),
        )
    except (Exception, KeyboardInterrupt) as exc:
        shared = exc
    outcomes: list[Outcome] = []
    for plan in plans[len(members) :]:  # never opened: Ctrl-C came while runs started
        assert shared is not None
        note_failure(plan.trial, shared)
        outcomes.append(shared)
    for index in reversed(range(len(members))):
        member = members[index]
        if results is not None and member.run is not None:
            member.run.result = results[index]
        error = shared if results is None else results[index].error
        outcomes.insert(0, _close(member, error))
    return outcomes


def _tracking(member: _Member) -> list[Callback]:
    return list(member.run.callbacks) if member.run is not None else []


def _close(member: _Member, error: BaseException | None) -> Outcome:
    """Ends the member's run and records its verdict; what the trial is told."""
    try:
        if error is not None:
            member.stack.__exit__(type(error), error, error.__traceback__)
            return error
        member.stack.close()  # a NaN loss raises TrialDiverged here, with its diagnosis
        assert member.run is not None
        return trial_value(member.run.finished())
    except (Exception, KeyboardInterrupt) as exc:  # TrialPruned among them
        return exc


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> FrozenTrial:
    if isinstance(outcome, optuna.TrialPruned):
        return study.tell(trial, state=TrialState.PRUNED)
    if isinstance(outcome, BaseException):
        _log_failed(trial, outcome)
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, outcome)


def _log_failed(trial: optuna.Trial, error: BaseException) -> None:
    """Optuna's own two lines for a failed trial, which `FailedTrialLines` trims as it
    trims them under `optimize`."""
    logger = logging.getLogger(OPTUNA_TRIAL_LOGGER)
    logger.warning(
        f"Trial {trial.number} failed with parameters: {trial.params} "
        f"because of the following error: {error!r}.",
        exc_info=(type(error), error, error.__traceback__),
    )
    logger.warning(f"Trial {trial.number} failed with value None.")


def _cadence(seconds: float | None) -> dict[str, float]:
    """--checkpoint-every for a population when given (else fit_population's own default)."""
    return {} if seconds is None else {"checkpoint_every_s": seconds}
