"""The MLflow tracker's writes go through its writer thread, in order: a trial never waits
on a synced SQLite commit (or a server) for its params or tags, and every read waits for
what was written before it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tracking import FAILED, FINISHED, embedded_target
from tracking.mlflow_tracker import MlflowTracker


@pytest.fixture
def tracker(tmp_path: Path) -> MlflowTracker:
    return MlflowTracker(embedded_target(tmp_path / "home"))


class HeldStore:
    """The store's log_batch, held until `release` (a slow disk, a slow server)."""

    def __init__(self, tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.callers: list[str] = []
        write = tracker.client.log_batch

        def held(*args: Any, **kwargs: Any) -> None:
            self.callers.append(threading.current_thread().name)
            assert self.gate.wait(timeout=60), "never released"
            write(*args, **kwargs)

        monkeypatch.setattr(tracker.client, "log_batch", held)

    def release(self) -> None:
        self.gate.set()


def test_params_and_tags_do_not_wait_on_the_store(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = HeldStore(tracker, monkeypatch)
    run_id = tracker.start_run("trial-0", {"lr": 0.01}, {"optuna.trial_number": "0"})
    tracker.set_tags(run_id, {"diagnosis.verdict": "converged"})
    tracker.rename_run(run_id, "trial-0 · COMPLETE · converged")
    assert not store.gate.is_set()  # still held, and none of the calls above waited
    store.release()
    run = tracker.get_run(run_id)  # a read waits for the writes before it
    assert run.params == {"lr": "0.01"} and run.tags["diagnosis.verdict"] == "converged"
    assert run.name == "trial-0 · COMPLETE · converged"
    assert store.callers and all(name.startswith("mlflow-writer") for name in store.callers)


def test_tags_land_in_the_order_given(tracker: MlflowTracker) -> None:
    run_id = tracker.start_run("r", {}, {})
    for value in ("first", "second", "third"):
        tracker.set_tags(run_id, {"k": value})
    tracker.end_run(run_id, FINISHED)
    tracker.flush()
    assert tracker.get_run(run_id).tags["k"] == "third"


def test_a_failed_end_lands_after_the_writes_before_it(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = HeldStore(tracker, monkeypatch)
    run_id = tracker.start_run("r", {}, {})
    tracker.set_tags(run_id, {"siamese_lab.error": "boom"})
    threading.Timer(0.2, store.release).start()
    tracker.end_run(run_id, FAILED)  # waits for the queue, then ends the run
    run = tracker.get_run(run_id)
    assert run.status == FAILED and run.tags["siamese_lab.error"] == "boom"


def test_writes_not_waited_for_when_one_fails_are_waited_for_next_time(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = tracker.start_run("r", {}, {})
    tracker.flush()
    gate, write = threading.Event(), tracker.client.log_batch
    calls: list[str] = []

    def failing_then_held(*args: Any, **kwargs: Any) -> None:
        calls.append("call")
        if len(calls) == 1:
            raise RuntimeError("the store refused it")
        assert gate.wait(timeout=60)
        write(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", failing_then_held)
    tracker.set_tags(run_id, {"a": "1"})
    tracker.set_tags(run_id, {"b": "2"})
    with pytest.raises(RuntimeError, match="refused"):
        tracker.flush()
    threading.Timer(0.2, gate.set).start()
    tracker.flush()  # the second write, still queued, is waited for now
    assert gate.is_set() and tracker.get_run(run_id).tags["b"] == "2"
