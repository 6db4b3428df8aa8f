"""One contract, two trackers: the in-memory twin must behave like the MLflow one."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from siamese.model import SiameseNet
from siamese.scoring import PairScorer
from tracking import FAILED, FINISHED, KILLED, InMemoryTracker, Tracker, embedded_target


@pytest.fixture(params=["memory", "mlflow"])
def tracker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tracker]:
    if request.param == "memory":
        yield InMemoryTracker()
        return
    from tracking.mlflow_tracker import MlflowTracker

    yield MlflowTracker(embedded_target(tmp_path / "home"))


def test_run_lifecycle_params_and_tags(tracker: Tracker) -> None:
    run_id = tracker.start_run("r1", {"lr": 0.001, "head": "sq", "target": None}, {"k": "v"})
    run = tracker.get_run(run_id)
    assert run.status == "RUNNING" and run.name == "r1"
    assert run.params == {"lr": "0.001", "head": "sq", "target": "None"}
    tracker.set_tags(run_id, {"diagnosis.verdict": "converged"})
    tracker.end_run(run_id, FINISHED)
    run = tracker.get_run(run_id)
    assert (
        run.status == FINISHED
        and run.tags["k"] == "v"
        and run.tags["diagnosis.verdict"] == "converged"
    )


@pytest.mark.parametrize("status", [FAILED, KILLED])
def test_final_statuses(tracker: Tracker, status: str) -> None:
    run_id = tracker.start_run("r", {}, {})
    tracker.end_run(run_id, status)
    assert tracker.get_run(run_id).status == status


def test_metric_history_is_one_point_per_step(tracker: Tracker) -> None:
    run_id = tracker.start_run("r", {}, {})
    for epoch in (1, 2, 3):
        tracker.log_metrics(
            run_id, {"val_auc": 0.5 + epoch / 10, "train_loss": 1.0 / epoch}, step=epoch
        )
    tracker.end_run(run_id, FINISHED)  # flushes asynchronous writes
    assert tracker.metric_history(run_id, "val_auc") == [(1, 0.6), (2, 0.7), (3, 0.8)]
    assert tracker.get_run(run_id).metrics["train_loss"] == pytest.approx(1 / 3)


def test_artifacts_round_trip(tracker: Tracker, tmp_path: Path) -> None:
    run_id = tracker.start_run("r", {}, {})
    local = tmp_path / "best.pt"
    local.write_bytes(b"weights")
    tracker.log_artifact(run_id, local, "checkpoints")
    tracker.log_text(run_id, "hello", "diagnosis.txt")
    assert tracker.list_artifacts(run_id) == ["checkpoints/best.pt", "diagnosis.txt"]
    got = tracker.download_artifact(run_id, "checkpoints/best.pt", tmp_path / "dl")
    assert got.read_bytes() == b"weights"


def test_a_logged_checkpoint_keeps_its_bytes_when_the_file_is_saved_again(
    tracker: Tracker, tmp_path: Path
) -> None:
    """Checkpoints are saved by writing a new file and renaming it over the old name; what
    was logged before must not change with it (the MLflow tracker hard-links)."""
    run_id = tracker.start_run("r", {}, {})
    local = tmp_path / "best.pt"
    local.write_bytes(b"epoch 1")
    tracker.log_artifact(run_id, local, "checkpoints")
    newer = tmp_path / "best.pt.tmp"
    newer.write_bytes(b"epoch 2")
    os.replace(newer, local)
    got = tracker.download_artifact(run_id, "checkpoints/best.pt", tmp_path / "dl")
    assert got.read_bytes() == b"epoch 1"
    tracker.log_artifact(run_id, local, "checkpoints")  # logged again: the newer file wins
    got = tracker.download_artifact(run_id, "checkpoints/best.pt", tmp_path / "dl2")
    assert got.read_bytes() == b"epoch 2"


def test_nested_runs(tracker: Tracker) -> None:
    parent = tracker.start_run("study", {}, {})
    children = {tracker.start_run(f"trial-{i}", {}, {}, parent_run_id=parent) for i in range(3)}
    tracker.start_run("unrelated", {}, {})
    assert {r.run_id for r in tracker.child_runs(parent)} == children


def test_log_model_returns_a_uri_and_an_artifact(tracker: Tracker) -> None:
    run_id = tracker.start_run("r", {}, {})
    scorer = PairScorer(SiameseNet("sq", 0.0)).eval()
    uri = tracker.log_model(run_id, scorer)
    tracker.end_run(run_id, FINISHED)
    assert uri
    if uri.startswith("models:/"):
        import mlflow

        with tracker.using_store():  # type: ignore[attr-defined]
            loaded = mlflow.pytorch.load_model(uri)
        pairs = torch.rand(3, 2, 40, 50)
        assert torch.allclose(loaded(pairs), scorer(pairs), atol=1e-5)
