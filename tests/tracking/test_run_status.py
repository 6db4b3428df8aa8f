"""Runs always end FINISHED, FAILED or KILLED - never RUNNING."""

import pytest

from siamese import DataConfig, TrainConfig
from tracking import FAILED, FINISHED, KILLED, InMemoryTracker, tracked_run

CONFIG = TrainConfig(device="cpu", data=DataConfig(train_pairs=64, val_pairs=32))


def test_normal_exit_is_finished() -> None:
    tracker = InMemoryTracker()
    with tracked_run(tracker, "ok", CONFIG, "cpu") as run_id:
        pass
    run = tracker.get_run(run_id)
    assert run.status == FINISHED
    assert run.params["lr"] == "0.001" and run.params["data.source"] == "digits"
    assert run.tags["siamese_lab.version"] and run.tags["siamese_lab.torch"]


def test_an_error_is_failed_with_the_error_recorded() -> None:
    tracker = InMemoryTracker()
    with pytest.raises(RuntimeError), tracked_run(tracker, "boom", CONFIG, "cpu") as run_id:
        raise RuntimeError("out of memory")
    run = tracker.get_run(run_id)
    assert run.status == FAILED and "out of memory" in run.tags["siamese_lab.error"]
    assert "error.txt" in tracker.list_artifacts(run_id)


def test_ctrl_c_is_killed() -> None:
    tracker = InMemoryTracker()
    with pytest.raises(KeyboardInterrupt), tracked_run(tracker, "stop", CONFIG, "cpu") as run_id:
        raise KeyboardInterrupt
    assert tracker.get_run(run_id).status == KILLED
