"""The MLflow tracker's writes go through its writer thread, in order: a trial never waits
on a synced SQLite commit (or a server) for its params or tags, and every read waits for
what was written before it."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from siamese import TrainConfig
from tests.tracking.held import HeldCall
from tracking import FAILED, FINISHED, embedded_target, mlflow_tracker
from tracking.mlflow_tracker import MlflowTracker
from tracking.run import tracked_run
from tracking.writer_priority import LOWEST_PRIORITY


@pytest.fixture
def tracker(tmp_path: Path) -> MlflowTracker:
    return MlflowTracker(embedded_target(tmp_path / "home"))


def test_params_and_tags_do_not_wait_on_the_store(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = HeldCall(tracker, "log_batch", monkeypatch)
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
    store = HeldCall(tracker, "log_batch", monkeypatch)
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
    tracker.defer(lambda: None, "work between the two, so they stay two writes")
    tracker.set_tags(run_id, {"b": "2"})
    with pytest.raises(RuntimeError, match="refused"):
        tracker.flush()
    threading.Timer(0.2, gate.set).start()
    tracker.flush()  # the second write, still queued, is waited for now
    assert gate.is_set() and tracker.get_run(run_id).tags["b"] == "2"


def test_writes_queued_behind_each_other_are_one_batch_in_their_order(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the writer is busy, a run's params, tags and metrics that queue up behind each
    other are one log_batch, with the values one call at a time would leave; work queued in
    between, another run or a param logged again start a new one."""
    run_id = tracker.start_run("r", {}, {})
    other = tracker.start_run("other", {}, {})
    tracker.flush()
    batches: list[tuple[str, int, int, int]] = []
    write = tracker.client.log_batch

    def counted(run: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        batches.append((run, len(metrics), len(params), len(tags)))
        write(run, metrics, params, tags)

    monkeypatch.setattr(tracker.client, "log_batch", counted)
    busy = threading.Event()

    def slow_curve() -> None:
        busy.wait(timeout=60)

    tracker.defer(slow_curve, "a slow curve")  # the writer is busy meanwhile
    tracker.set_tags(run_id, {"state": "RUNNING", "k": "1"})
    tracker.log_metrics(run_id, {"loss": 0.9, "auc": 0.6}, step=1)
    tracker.set_tags(run_id, {"state": "COMPLETE"})  # the later value wins
    tracker.log_metrics(run_id, {"loss": 0.5}, step=2)
    tracker.set_tags(other, {"k": "other"})  # another run: a batch of its own
    tracker.defer(lambda: None, "work queued after")
    tracker.set_tags(run_id, {"after": "yes"})  # after that work, not before it
    busy.set()
    tracker.flush()
    assert batches == [(run_id, 3, 0, 2), (other, 0, 0, 1), (run_id, 0, 0, 1)]
    run = tracker.get_run(run_id)
    assert run.tags["state"] == "COMPLETE" and run.tags["k"] == "1" and run.tags["after"] == "yes"
    assert tracker.metric_history(run_id, "loss") == [(1, 0.9), (2, 0.5)]


def test_a_batch_the_writer_has_taken_takes_nothing_more(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = tracker.start_run("r", {}, {})
    tracker.flush()
    store = HeldCall(tracker, "log_batch", monkeypatch)
    tracker.set_tags(run_id, {"a": "1"})
    deadline = time.monotonic() + 30
    while not store.callers and time.monotonic() < deadline:  # the writer is inside it now
        time.sleep(0.01)
    tracker.set_tags(run_id, {"b": "2"})
    store.release()
    tracker.flush()
    assert len(store.callers) == 2
    assert {"a", "b"} <= set(tracker.get_run(run_id).tags)


def test_a_new_run_waits_for_records_that_waited_too_long(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The low-priority writer may fall behind on a busy machine; a new run then waits for
    the records queued more than MAX_LAG_S ago (not for newer ones), so the lag, and what a
    hard kill could cost, stays bounded. Inside the run's SIGTERM handling (tracked_run)."""
    monkeypatch.setattr(mlflow_tracker, "MAX_LAG_S", 0.3)
    old, new = threading.Event(), threading.Event()
    tracker.defer(_waiting_for(old), "a curve queued long ago")
    time.sleep(0.5)
    tracker.defer(_waiting_for(new), "a curve just queued")
    started: list[str] = []

    def start() -> None:
        with tracked_run(tracker, "r", TrainConfig(), "cpu") as run_id:
            started.append(run_id)

    starting = threading.Thread(target=start)
    starting.start()
    starting.join(timeout=0.5)
    assert starting.is_alive() and not started  # the old record is overdue: it waits
    old.set()
    starting.join(timeout=30)
    assert not starting.is_alive() and len(started) == 1
    assert not new.is_set()  # the fresh one was not waited for
    new.set()
    tracker.flush()


def test_a_drain_cut_short_still_waits_for_the_write_it_was_waiting_on(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a drain waits: the write it waited on (not done yet) stays queued, and
    the next drain waits for it and reports its failure."""
    release = threading.Event()

    def slow_failure() -> None:
        release.wait(timeout=60)
        raise RuntimeError("the store refused it")

    tracker._write(slow_failure)
    waited = tracker._pending[0]
    monkeypatch.setattr(waited, "result", _interrupted_once(waited.result))
    with pytest.raises(KeyboardInterrupt):
        tracker.flush()
    release.set()
    with pytest.raises(RuntimeError, match="refused"):
        tracker.flush()


def _interrupted_once(result: Callable[..., object]) -> Callable[..., object]:
    calls: list[int] = []

    def wait(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return result(*args, **kwargs)

    return wait


def _waiting_for(gate: threading.Event) -> Callable[[], None]:
    def work() -> None:
        gate.wait(timeout=60)

    return work


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_writer_runs_at_the_lowest_priority_and_the_caller_keeps_its_own(
    tracker: MlflowTracker,
) -> None:
    """The writer yields its core to the training beside it (tracking.writer_priority);
    the thread that trains keeps its priority."""
    seen: list[int] = []
    before = own_priority()
    if before >= LOWEST_PRIORITY:
        pytest.skip("the tests themselves run at the lowest priority")
    tracker.defer(lambda: seen.append(own_priority()), "a probe")
    tracker.flush()
    assert seen == [LOWEST_PRIORITY]
    assert own_priority() == before < LOWEST_PRIORITY


def own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
