"""A trial's run is made by the run maker's thread while the trial goes on: the caller gets
a stand-in id that every tracker call takes, and the run's own id once it exists."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from search.objective import Objective
from search.space import SearchSpace
from search.storage import RUN_ID_ATTR
from siamese import DataConfig, TrainConfig, prepare_data
from tests.tracking.held import HeldCall
from tracking import FAILED, FINISHED, KILLED, embedded_target
from tracking.mlflow_tracker import MlflowTracker
from tracking.run_maker import MAKER_THREAD, STAND_IN_PREFIX


@pytest.fixture
def tracker(tmp_path: Path) -> MlflowTracker:
    return MlflowTracker(embedded_target(tmp_path / "home"))


def test_the_run_is_made_in_the_makers_thread_and_started_when_asked_for(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    making = HeldCall(tracker, "create_run", monkeypatch)
    made: list[tuple[str, str]] = []
    asked_at = time.time()
    stand_in = tracker.start_run_soon(
        "trial-0",
        {"lr": 0.01},
        {"optuna.trial_number": "0"},
        None,
        lambda run_id: made.append((run_id, threading.current_thread().name)),
    )
    assert stand_in.startswith(STAND_IN_PREFIX)  # returned while the store is held
    tracker.log_metrics(stand_in, {"val_auc": 0.75}, step=1)
    tracker.set_tags(stand_in, {"diagnosis.verdict": "converged"})
    time.sleep(0.3)
    making.release()
    run_id = tracker.run_id_of(stand_in)
    assert len(run_id) == 32 and made == [(run_id, made[0][1])]
    assert made[0][1].startswith(MAKER_THREAD) and making.callers[0].startswith(MAKER_THREAD)
    tracker.end_run(stand_in, FINISHED)
    tracker.flush()  # the end is queued behind the run's other writes
    run = tracker.client.get_run(run_id)
    assert run.info.start_time < 1000 * (asked_at + 0.3)  # when asked for, not when made
    assert run.info.status == FINISHED and run.info.run_name == "trial-0"
    assert run.data.params == {"lr": "0.01"} and run.data.metrics == {"val_auc": 0.75}
    assert run.data.tags["diagnosis.verdict"] == "converged"
    assert tracker.get_run(stand_in).run_id == run_id  # reads take the stand-in too


def test_a_stand_in_nests_under_its_parent_and_ends_killed(tracker: MlflowTracker) -> None:
    parent = tracker.start_run("study", {}, {})
    stand_in = tracker.start_run_soon("trial-0", {}, {}, parent, lambda _: None)
    tracker.end_run(stand_in, KILLED)
    (child,) = tracker.child_runs(parent)
    assert child.run_id == tracker.run_id_of(stand_in) and child.status == KILLED


def test_a_run_the_store_could_not_make_is_said_where_its_id_is_needed_only(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database is locked")  # what the writer would retry for 6 s

    monkeypatch.setattr(tracker.client, "create_run", refused)
    stand_in = tracker.start_run_soon("trial-0", {"lr": 0.1}, {}, None, lambda _: None)
    tracker.log_metrics(stand_in, {"val_auc": 0.5}, step=1)
    with pytest.raises(RuntimeError, match="database is locked"):
        tracker.run_id_of(stand_in)
    tracker.end_run(stand_in, FINISHED)
    tracker.flush()  # the writes queued for it are dropped, not raised by a later drain
    assert tracker.client.search_runs([tracker.experiment_id]) == []


def test_a_failed_on_made_fails_the_caller_once_and_the_run_can_end(
    tracker: MlflowTracker,
) -> None:
    def broken(run_id: str) -> None:
        raise OSError("the study's storage is gone")

    stand_in = tracker.start_run_soon("trial-0", {}, {}, None, broken)
    with pytest.raises(OSError, match="storage is gone"):
        tracker.run_id_of(stand_in)
    run_id = tracker.run_id_of(stand_in)  # the run exists: ended like any other
    tracker.end_run(stand_in, FAILED)
    assert tracker.get_run(run_id).status == FAILED


def test_a_failed_on_made_reaches_the_trial_after_the_writer_wrote_for_the_run(
    tracker: MlflowTracker,
) -> None:
    """The writer's jobs for the run (its params) wait for it too: they must not take the
    failure the trial is to meet, or the trial is told without its run's id."""

    def broken(run_id: str) -> None:
        raise OSError("the study's storage is gone")

    stand_in = tracker.start_run_soon("trial-0", {"lr": 0.1}, {}, None, broken)
    tracker.flush()  # the params batch has been written (for the run, which exists)
    with pytest.raises(OSError, match="storage is gone"):
        tracker.run_id_of(stand_in)
    assert tracker.client.get_run(tracker.run_id_of(stand_in)).data.params == {"lr": "0.1"}


def test_a_search_trial_records_its_runs_own_id_made_off_its_thread(
    tracker: MlflowTracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    making = HeldCall(tracker, "create_run", monkeypatch)
    making.release()  # not held: only who made each run is recorded
    data = DataConfig(train_pairs=128, val_pairs=64)
    objective = Objective(
        TrainConfig(epochs=1, data=data),
        SearchSpace(),
        prepare_data(data),
        tmp_path / "trials",
        "s",
        tracker=tracker,
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=2)
    tracker.flush()
    for trial in study.trials:
        run = tracker.get_run(trial.user_attrs[RUN_ID_ATTR])
        assert run.tags["optuna.trial_number"] == str(trial.number)
        assert run.status == FINISHED
    assert making.callers == [f"{MAKER_THREAD}_0"] * 2
