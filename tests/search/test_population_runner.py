"""The population runner's failure paths, on in-memory Optuna studies and the in-memory
tracker: Ctrl-C, a member that fails alone, the worker's budget, and the heartbeats that
keep a shared study's other workers from taking K quiet trials for a dead worker's."""

from __future__ import annotations

import io
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from rich.console import Console

from search.heartbeats import beating
from search.objective import Objective
from search.population import Budget, run_populations
from search.progress import Progress
from search.space import FloatRange, SearchSpace
from siamese import DataConfig, PairData, TrainConfig
from siamese.train import Callback, EpochRecord, History
from tracking import InMemoryTracker

BASE = TrainConfig(
    epochs=1, batch_size=32, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192)
)
SPACE = SearchSpace(lr=FloatRange(1e-4, 1e-2, log=True), fixed={"dropout": 0.0, "head": "abs"})
LRS = (1e-3, 2e-3, 3e-3)


class RaiseAt(Callback):
    """Raises `error` at the end of epoch 1 of the member trained with learning rate `lr`
    (every member, when None)."""

    def __init__(self, error: BaseException, lr: float | None = None) -> None:
        self.error, self.lr = error, lr

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        if self.lr is None or history.config["lr"] == self.lr:
            raise self.error
        return None


def _searched(
    data: PairData, root: Path, callback: Callback, budget: Budget, size: int = 3
) -> tuple[optuna.Study, InMemoryTracker, BaseException | None]:
    """The three enqueued trials run as populations; what the run raised, if anything."""
    tracker = InMemoryTracker()
    parent = tracker.start_run("study-s", {}, {"optuna.study": "s"})
    study = optuna.create_study(direction="maximize")
    for lr in LRS:
        study.enqueue_trial({"lr": lr, "optimizer": "adam"})
    objective = Objective(BASE, SPACE, data, root, "s", tracker, parent, "cpu", callback)
    progress = Progress(Console(file=io.StringIO()), None)
    try:
        run_populations(study, objective, size, budget, progress)
    except BaseException as exc:
        return study, tracker, exc
    return study, tracker, None


def test_ctrl_c_fails_every_member_and_marks_it_for_a_retry(
    small_data: PairData, tmp_path: Path
) -> None:
    interrupt = RaiseAt(KeyboardInterrupt(), lr=LRS[0])
    study, tracker, raised = _searched(small_data, tmp_path, interrupt, Budget(n_trials=3))
    assert isinstance(raised, KeyboardInterrupt)  # the search stops, as under optimize
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials)
    assert all(t.user_attrs["interrupted"] for t in trials)  # a resumed study retries each
    for trial in trials:
        run = tracker.get_run(str(trial.user_attrs["mlflow_run_id"]))
        assert run.status == "KILLED" and run.name == f"trial-{trial.number} · FAIL · interrupted"


def test_a_member_whose_callback_fails_fails_alone(small_data: PairData, tmp_path: Path) -> None:
    broken = RaiseAt(RuntimeError("progress display broke"), lr=LRS[1])
    study, tracker, raised = _searched(small_data, tmp_path, broken, Budget(n_trials=3))
    assert raised is None
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["error"] == "RuntimeError: progress display broke"
    runs = [tracker.get_run(str(t.user_attrs["mlflow_run_id"])) for t in trials]
    assert [r.status for r in runs] == ["FINISHED", "FAILED", "FINISHED"]
    assert runs[1].name == "trial-1 · FAIL · error"
    # the others trained to their end, their curves whole
    assert len(tracker.metric_history(runs[0].run_id, "val_auc")) == BASE.epochs


def test_the_budget_splits_into_populations_of_at_most_size(
    small_data: PairData, tmp_path: Path
) -> None:
    study, _, raised = _searched(small_data, tmp_path, Callback(), Budget(n_trials=3), size=2)
    assert raised is None
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    ends = [t.datetime_complete for t in trials]
    assert trials[2].datetime_start > max(e for e in ends[:2] if e is not None)  # type: ignore[operator]


def test_heartbeats_keep_every_member_alive_while_it_trains(tmp_path: Path) -> None:
    storage = RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    trials = [study.ask() for _ in range(3)]
    with beating(storage, [t._trial_id for t in trials]):
        time.sleep(3.5)  # past the grace period: only the beats keep them alive
        optuna.storages.fail_stale_trials(study)
        assert all(t.state == TrialState.RUNNING for t in study.get_trials())
    time.sleep(3.5)  # and without them, the same wait makes every one of them stale
    optuna.storages.fail_stale_trials(study)
    assert all(t.state == TrialState.FAIL for t in study.get_trials())


def test_members_ending_together_log_a_model_only_when_they_beat_the_ones_before(
    small_data: PairData, tmp_path: Path
) -> None:
    """No trial of the batch is told (COMPLETE) yet when the members end: the models this
    process logged meanwhile count as the best so far, or every member would export one."""
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.7, user_attrs={"verdict": "converged"}))
    objective = Objective(BASE, SPACE, small_data, tmp_path, "s")
    trial = study.ask()

    def wants_model(val_auc: float) -> bool:
        history = cast(History, SimpleNamespace(best=SimpleNamespace(val_auc=val_auc)))
        return objective._is_best_converged(trial, history)

    assert [wants_model(auc) for auc in (0.65, 0.8, 0.75, 0.8, 0.9)] == [
        False,  # below the told trial's 0.7
        True,
        False,  # below 0.8, logged by a member that ended before it
        False,
        True,
    ]
