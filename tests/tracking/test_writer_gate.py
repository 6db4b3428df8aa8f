"""The writer keeps out of the main thread's way between two trainings (tracking.writer_gate):
held from an epoch's end to the next epoch's steps, never for long, and never while
someone waits for it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import mlflow
import pytest

from siamese import PairData, TrainConfig, fit
from siamese.train import Callback, EpochRecord, History
from tracking import TrackingCallback, embedded_target
from tracking.mlflow_tracker import MlflowTracker
from tracking.writer_gate import WriterGate


def _waits(gate: WriterGate) -> threading.Thread:
    waiting = threading.Thread(target=gate.wait, daemon=True)
    waiting.start()
    return waiting


def test_a_held_gate_waits_until_it_is_released() -> None:
    gate = WriterGate(max_hold_s=60)
    gate.hold()
    waiting = _waits(gate)
    waiting.join(timeout=0.3)
    assert waiting.is_alive() and gate.held
    gate.release()
    waiting.join(timeout=10)
    assert not waiting.is_alive() and not gate.held


def test_a_hold_ends_by_itself_and_holding_again_does_not_extend_it() -> None:
    now = [100.0]
    gate = WriterGate(max_hold_s=2.0, clock=lambda: now[0])
    gate.hold()
    now[0] = 101.5
    gate.hold()  # still the first hold: its bound counts from 100.0
    assert gate.held
    now[0] = 102.1
    assert not gate.held
    gate.wait()  # returns at once: the hold has lasted too long


def test_a_hold_that_ran_out_is_over_and_a_new_one_starts() -> None:
    now = [100.0]
    gate = WriterGate(max_hold_s=2.0, clock=lambda: now[0])
    gate.hold()
    now[0] = 103.0
    assert not gate.held
    gate.hold()  # a new hold, counted from now
    assert gate.held
    now[0] = 104.9
    assert gate.held


def test_a_hold_runs_out_while_the_writer_waits() -> None:
    gate = WriterGate(max_hold_s=0.5)
    gate.hold()
    started = time.monotonic()
    waiting = _waits(gate)
    waiting.join(timeout=30)
    assert not waiting.is_alive() and 0.4 <= time.monotonic() - started < 30


def test_an_open_gate_does_not_wait() -> None:
    gate = WriterGate(max_hold_s=60)
    started = time.monotonic()
    gate.wait()
    assert time.monotonic() - started < 1.0


@pytest.fixture
def tracker(tmp_path: Path) -> MlflowTracker:
    return MlflowTracker(embedded_target(tmp_path / "home"))


def _landed(tracker: MlflowTracker, run_id: str) -> dict[str, str]:
    """The run's tags as the store has them now (another client: no wait for the queue)."""
    return dict(mlflow.MlflowClient(tracker.uri).get_run(run_id).data.tags)


def test_a_held_writer_writes_nothing_until_released(tracker: MlflowTracker) -> None:
    """Held, the writer starts no job: the batch queued meanwhile is not taken, and the
    writes behind it join it (one transaction, in their order) until it is let go."""
    tracker._gate.max_hold_s = 60
    run_id = tracker.start_run("r", {}, {})
    tracker.flush()
    tracker.hold_writer()
    tracker.set_tags(run_id, {"a": "1", "k": "first"})
    time.sleep(0.5)
    queued = tracker._pending[-1]
    batch = tracker._open_batch
    assert batch is not None and not batch.taken and not queued.done()
    tracker.set_tags(run_id, {"b": "2", "k": "second"})
    assert tracker._pending == [queued] and tracker._open_batch is batch  # joined, not queued
    assert "a" not in _landed(tracker, run_id)
    tracker.release_writer()
    queued.result(timeout=30)
    tags = _landed(tracker, run_id)
    assert (tags["a"], tags["b"], tags["k"]) == ("1", "2", "second")


def test_a_new_run_waiting_for_overdue_records_releases_the_writer(
    tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracking import mlflow_tracker

    monkeypatch.setattr(mlflow_tracker, "MAX_LAG_S", 0.0)
    tracker._gate.max_hold_s = 60
    tracker.hold_writer()
    drawn: list[str] = []
    tracker.defer(lambda: drawn.append("curves"), "a record now overdue")
    started = time.monotonic()
    tracker.catch_up()
    assert drawn == ["curves"] and time.monotonic() - started < 30


def test_waiting_for_the_writer_releases_it(tracker: MlflowTracker) -> None:
    tracker._gate.max_hold_s = 60
    run_id = tracker.start_run("r", {}, {})
    tracker.hold_writer()
    tracker.set_tags(run_id, {"a": "1"})
    started = time.monotonic()
    assert tracker.get_run(run_id).tags["a"] == "1"  # a read waits for the queue
    assert time.monotonic() - started < 30 and not tracker._gate.held


def test_a_run_asked_for_while_the_writer_is_held_is_made_once_released(
    tracker: MlflowTracker,
) -> None:
    """A trial's run is made while it trains, not while it is set up: the maker waits for
    the gate like the writer."""
    tracker._gate.max_hold_s = 60
    tracker.hold_writer()
    made: list[str] = []
    stand_in = tracker.start_run_soon("trial-1", {}, {}, None, made.append)
    time.sleep(0.5)
    assert made == [] and tracker.client.search_runs([tracker.experiment_id]) == []
    tracker.release_writer()  # the trial's steps start
    deadline = time.monotonic() + 30
    while not made and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made == [tracker.run_id_of(stand_in)]


def test_waiting_for_a_run_not_yet_made_releases_the_writer(tracker: MlflowTracker) -> None:
    """A trial that ends before it trains (an error in its set-up) waits for its run's id:
    not for the hold to run out."""
    tracker._gate.max_hold_s = 60
    tracker.hold_writer()
    stand_in = tracker.start_run_soon("trial-1", {}, {}, None, lambda _: None)
    started = time.monotonic()
    run_id = tracker.run_id_of(stand_in)
    assert time.monotonic() - started < 30 and not tracker._gate.held
    assert tracker.client.get_run(run_id).info.run_name == "trial-1"


class GateProbe(Callback):
    """Whether the writer is held at each hook, after the tracking callback's turn."""

    def __init__(self, tracker: MlflowTracker) -> None:
        self.tracker = tracker
        self.seen: list[tuple[str, bool]] = []

    def on_epoch_start(self, epoch: int) -> None:
        self.seen.append((f"steps {epoch}", self.tracker._gate.held))

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        self.seen.append((f"end {record.epoch}", self.tracker._gate.held))
        return None


class ReleaseAtTheEnd(Callback):
    """Lets the writer go after the last epoch's end, so that only on_fit_end can hold it."""

    def __init__(self, tracker: MlflowTracker, epochs: int) -> None:
        self.tracker, self.epochs = tracker, epochs

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        if record.epoch == self.epochs:
            self.tracker.release_writer()
        return None


def test_fit_holds_the_writer_between_its_epochs_and_after_its_run(
    tracker: MlflowTracker, small_data: PairData
) -> None:
    tracker._gate.max_hold_s = 60
    run_id = tracker.start_run("r", {}, {})
    probe = GateProbe(tracker)
    config = TrainConfig(epochs=2, batch_size=32, seed=0)
    tracking = TrackingCallback(tracker, run_id, False)
    fit(config, small_data, callbacks=[tracking, probe, ReleaseAtTheEnd(tracker, 2)])
    assert probe.seen == [("steps 1", False), ("end 1", True), ("steps 2", False), ("end 2", True)]
    assert tracker._gate.held  # by on_fit_end: until the next run's steps or a wait for it
    tracker.flush()
    assert not tracker._gate.held
