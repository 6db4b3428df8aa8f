"""A process that runs trials freezes what it loaded, once after MLflow and its store and
once after its first trial, so that collections and the exit do not walk it again."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from rich.console import Console

from search import gc_policy
from search.env import LabEnv
from search.progress import Progress


@pytest.fixture
def fresh_policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The policy as in a new process, its collections and freezes recorded instead of made
    (this test process keeps collecting as before)."""
    monkeypatch.setattr(gc_policy, "_done", set())
    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))

    def collect(*_: int) -> int:
        calls.append("collect")
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    yield calls
    assert gc.isenabled()


def test_loading_collects_nothing_and_freezes_the_first_time_only(
    fresh_policy: list[str],
) -> None:
    for _ in range(2):
        with gc_policy.loading():
            assert not gc.isenabled()
        assert gc.isenabled()
    assert fresh_policy == ["freeze"]  # no collection: the load leaves next to no garbage


def test_loading_leaves_the_collector_as_it_found_it_after_an_error_too(
    fresh_policy: list[str],
) -> None:
    gc.disable()
    try:
        with gc_policy.loading():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), gc_policy.loading():
        raise RuntimeError("the store did not open")
    assert gc.isenabled()


def test_each_freeze_happens_once_per_process(fresh_policy: list[str]) -> None:
    assert gc_policy.freeze_once(gc_policy.AFTER_FIRST_TRIAL) is True
    assert gc_policy.freeze_once(gc_policy.AFTER_FIRST_TRIAL) is False
    assert gc_policy.freeze_once(gc_policy.AFTER_LOAD, collect=False) is True
    assert fresh_policy == ["collect", "freeze", "freeze"]


def test_the_tracker_loads_with_the_collector_paused_then_freezes(
    fresh_policy: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracking.mlflow_tracker as mlflow_tracker

    seen: list[bool] = []

    class Recording:
        def __init__(self, _target: object) -> None:
            seen.append(gc.isenabled())

    monkeypatch.setattr(mlflow_tracker, "MlflowTracker", Recording)
    LabEnv(tmp_path / "home").tracker()
    assert seen == [False] and fresh_policy == ["freeze"]


def test_the_first_trials_end_freezes_what_trials_loaded(fresh_policy: list[str]) -> None:
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    study.enqueue_trial({"x": 2.0})
    progress = Progress(Console(quiet=True), 2)
    study.optimize(lambda t: t.suggest_float("x", 0, 3), n_trials=1, callbacks=[progress])
    assert fresh_policy == ["collect", "freeze"]
    study.optimize(lambda t: t.suggest_float("x", 0, 3), n_trials=1, callbacks=[progress])
    assert fresh_policy == ["collect", "freeze"]
