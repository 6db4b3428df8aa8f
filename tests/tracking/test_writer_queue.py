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

from tracking import FAILED, FINISHED, embedded_target
from tracking.mlflow_tracker import MAX_RUNS_BEHIND, MlflowTracker
from tracking.writer_priority import LOWEST_PRIORITY


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
    store = HeldStore(tracker, monkeypatch)
    tracker.set_tags(run_id, {"a": "1"})
    deadline = time.monotonic() + 30
    while not store.callers and time.monotonic() < deadline:  # the writer is inside it now
        time.sleep(0.01)
    tracker.set_tags(run_id, {"b": "2"})
    store.release()
    tracker.flush()
    assert len(store.callers) == 2
    assert {"a", "b"} <= set(tracker.get_run(run_id).tags)


def test_a_new_run_waits_while_the_writer_is_more_than_two_runs_behind(
    tracker: MlflowTracker,
) -> None:
    """The low-priority writer may fall behind on a busy machine; a new run then waits for
    the oldest records, so the lag (and what a hard kill could cost) stays bounded."""
    gates = [threading.Event() for _ in range(MAX_RUNS_BEHIND + 1)]
    for gate in gates:
        tracker.defer(_waiting_for(gate), "a slow curve")
    started: list[str] = []
    starting = threading.Thread(target=lambda: started.append(tracker.start_run("r", {}, {})))
    starting.start()
    starting.join(timeout=0.5)
    assert starting.is_alive() and not started  # three runs' records behind: it waits
    gates[0].set()  # the oldest is written: two behind is allowed
    starting.join(timeout=30)
    assert not starting.is_alive() and len(started) == 1
    assert not gates[1].is_set()  # it did not wait for more than it had to
    for gate in gates[1:]:
        gate.set()
    tracker.flush()


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
    tracker.defer(lambda: seen.append(own_priority()), "a probe")
    tracker.flush()
    assert seen == [LOWEST_PRIORITY]
    assert own_priority() == before < LOWEST_PRIORITY


def own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
