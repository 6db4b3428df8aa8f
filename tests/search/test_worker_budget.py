"""How many trials a worker asks for (search.workers._optimize): the study's target counts
every worker's running trials, so N workers stop together at `--trials`, not N-1 past it."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from search.heartbeats import fail_stale_trials, hush_experimental_note
from search.objective import Objective
from search.progress import Progress
from search.setup import StudySetup
from search.workers import WorkerSpec, _optimize, worker_budget


class Quick:
    """A stand-in objective: the budget is what is tested, not training."""

    def __init__(self, disk_full_after: int | None = None) -> None:
        self.calls = 0
        self.disk_full = False
        self.disk_full_after = disk_full_after

    def __call__(self, trial: optuna.Trial) -> float:
        self.calls += 1
        self.disk_full = self.calls == self.disk_full_after
        return trial.suggest_float("lr", 1e-5, 1e-1, log=True)


def run(study: optuna.Study, objective: Quick, target: int | None, **spec: Any) -> None:
    setup = cast(StudySetup, SimpleNamespace(target_trials=target))
    progress = Progress(Console(file=io.StringIO()), total=target)
    budget = worker_budget(setup, WorkerSpec("s", "journal:x", Path("."), **spec))
    _optimize(study, cast(Objective, objective), budget, progress)


def study_with_a_trial_running_elsewhere() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.ask()  # another worker's trial, still training
    return study


def test_another_workers_running_trial_counts_toward_the_target() -> None:
    study = study_with_a_trial_running_elsewhere()
    objective = Quick()
    run(study, objective, target=4)
    assert objective.calls == 3
    states = [t.state for t in study.get_trials()]
    assert len(states) == 4 and states.count(TrialState.RUNNING) == 1


def test_a_worker_joining_a_study_at_its_target_asks_for_nothing() -> None:
    study = study_with_a_trial_running_elsewhere()
    objective = Quick()
    run(study, objective, target=1)
    assert objective.calls == 0 and len(study.get_trials()) == 1


def test_a_workers_own_trials_budget_and_a_full_disk_stop_it() -> None:
    study = optuna.create_study(direction="maximize")
    own = Quick()
    run(study, own, target=None, n_trials=2)
    assert own.calls == 2
    joined = Quick()  # `worker --trials 3` on a study made with `search --trials 0`
    run(study, joined, target=0, n_trials=3)
    assert joined.calls == 3
    full = Quick(disk_full_after=1)
    run(study, full, target=10)
    assert full.calls == 1  # every next trial would fail the same way


def test_a_queued_retry_runs_past_the_target_within_the_workers_own_count() -> None:
    study = optuna.create_study(direction="maximize")
    run(study, Quick(), target=2)
    study.enqueue_trial({"lr": 1e-3})  # a dead worker's retry, queued by its recovery
    retry = Quick()
    run(study, retry, target=2)
    assert retry.calls == 1 and len(study.get_trials()) == 3
    study.enqueue_trial({"lr": 2e-3})
    capped = Quick()
    run(study, capped, target=2, n_trials=0)  # `worker --trials` caps retries too
    assert capped.calls == 0


def test_failing_stale_trials_says_nothing_on_the_users_terminal(tmp_path: Path) -> None:
    with warnings.catch_warnings():  # (the storage's own note on its experimental argument)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=60
        )
    study = optuna.create_study(storage=storage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # what a plain `siamese-lab` process shows
        hush_experimental_note()  # as importing search.heartbeats does there
        fail_stale_trials(study)
    assert [str(w.message) for w in caught] == []


def test_a_local_worker_process_hushes_matplotlibs_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned, it runs child_main, not the command line that installs the filters.
    import search.parent_watch
    import search.workers

    monkeypatch.setattr(search.parent_watch, "stop_when_the_parent_dies", lambda: None)
    monkeypatch.setattr(search.workers, "join_study", lambda *args, **kwargs: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        search.workers.child_main(WorkerSpec("s", "journal:x", Path(".")))
        warnings.warn('Creating legend with loc="best" can be slow', UserWarning, stacklevel=1)
    assert caught == []
