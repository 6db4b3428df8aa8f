"""Around the trainer's CUDA path, on the CPU: which path the steps took shows in the run's
MLflow tags and in `train`'s output, and a worker trains on the GPU it was given."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from search import workers
from search.cli import cli
from search.workers import WorkerSpec
from siamese import DataConfig, PairData, TrainConfig, fit, prepare_data
from siamese.train import gpu, step
from tracking import InMemoryTracker, TrackingCallback, tracked_run
from tracking.callback import STEP_PATH_TAG

TINY = DataConfig(train_pairs=128, val_pairs=64)
SMALL_FLAGS = ["--train-pairs", "128", "--val-pairs", "64", "--device", "cpu", "--no-track"]


def _failing_capture(step_fn: Callable[[], None], device: torch.device) -> gpu.Replayable:
    raise RuntimeError("emulated: operation not permitted when stream is capturing")


@pytest.fixture
def failing_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU steps take the graph path, and their capture fails as a CUDA one can."""
    monkeypatch.setattr(step, "uses_graph", lambda device: True)
    monkeypatch.setattr(gpu, "capture_graph", _failing_capture)


@pytest.fixture(scope="module")
def tiny_data() -> PairData:
    return prepare_data(TINY)


@pytest.mark.usefixtures("failing_capture")
@pytest.mark.filterwarnings("ignore:CUDA graph capture failed")
def test_a_failed_capture_is_a_tag_on_the_run(tiny_data: PairData) -> None:
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", data=TINY)
    tracker = InMemoryTracker()
    with tracked_run(tracker, "t", config, "cpu") as run_id:
        fit(config, tiny_data, [TrackingCallback(tracker, run_id)])
    tag = tracker.get_run(run_id).tags[STEP_PATH_TAG]
    assert tag.startswith("eager: capture failed: RuntimeError: emulated"), tag


@pytest.mark.usefixtures("failing_capture")
@pytest.mark.filterwarnings("ignore:CUDA graph capture failed")
def test_train_says_how_its_steps_ran(tmp_path: Path) -> None:
    args = ["train", "--home", str(tmp_path), *SMALL_FLAGS, "--epochs", "1", "--batch-size", "16"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "training steps: eager: capture failed: RuntimeError: emulated" in result.output


class _Stop(Exception):
    pass


def test_a_worker_makes_its_gpu_current_before_anything_else(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`search --devices 0,1`: worker 1's process trains on GPU 1 (its capture too), and
    opens no context on GPU 0 first."""
    order: list[str] = []
    monkeypatch.setattr(gpu, "make_current", lambda spec: order.append(f"current {spec}"))

    def no_storage(url: str, stale: object) -> None:
        order.append("storage")
        raise _Stop

    monkeypatch.setattr(workers, "open_storage", no_storage)
    (tmp_path / "j.log").touch()  # a worker joins a study's existing storage
    spec = WorkerSpec("s1", f"journal:{tmp_path / 'j.log'}", tmp_path, "cuda:1", 1)
    with pytest.raises(_Stop):
        workers.join_study(spec, Console(), lambda uri, experiment: None)
    assert order == ["current cuda:1", "storage"]
