"""A search's best converged trial so far offers its model; the MLflow tracker exports only
the last offer, once, when it flushes (a search's or a worker's end), not at every trial
that beats the best."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from siamese import DataConfig, PairData, TrainConfig, fit
from siamese.model import build_model
from siamese.train import FitResult
from siamese.train.checkpoint import save_checkpoint
from tracking import FINISHED, InMemoryTracker, Tracker, TrackingCallback, embedded_target
from tracking.base import MODEL_URI_TAG

CONFIG = TrainConfig(head="sq", optimizer="adam", lr=1e-3, epochs=2, device="cpu")


def _checkpoint(folder: Path) -> Path:
    """A weights-only best.pt, as a finished trial keeps it."""
    torch.manual_seed(0)
    net = build_model(CONFIG)
    path = folder / "best.pt"
    payload = {"model": net.state_dict(), "optimizer": {}, "rng": {}, "history": {}}
    save_checkpoint(path, {**payload, "epoch": 1, "config": CONFIG.to_dict()})
    return path


def _mlflow(tmp_path: Path) -> Tracker:
    from tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(embedded_target(tmp_path / "home"))


class Exports:
    """The runs whose model a tracker exported, in order."""

    def __init__(self, tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[str] = []
        export = tracker.log_model

        def recording(run_id: str, scorer: torch.nn.Module, name: str = "model") -> str:
            self.runs.append(run_id)
            return export(run_id, scorer, name)

        monkeypatch.setattr(tracker, "log_model", recording)


@pytest.mark.parametrize("kind", ["memory", "mlflow"])
def test_an_offered_model_is_logged_when_the_tracker_flushes_at_the_latest(
    kind: str, tmp_path: Path
) -> None:
    tracker = InMemoryTracker() if kind == "memory" else _mlflow(tmp_path)
    run_id = tracker.start_run("trial-1", {}, {})
    tracker.offer_model(run_id, _checkpoint(tmp_path), 0.9)
    tracker.end_run(run_id, FINISHED)
    tracker.flush()
    assert tracker.get_run(run_id).tags[MODEL_URI_TAG]


def test_mlflow_exports_the_last_offer_only_and_only_when_it_flushes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = _mlflow(tmp_path)
    exports = Exports(tracker, monkeypatch)
    checkpoint = _checkpoint(tmp_path)
    first, second, failed = (tracker.start_run(f"trial-{i}", {}, {}) for i in range(3))
    tracker.offer_model(first, checkpoint, 0.8)
    tracker.end_run(first, FINISHED)
    tracker.get_run(first)  # a read waits for the queue, not for an export
    tracker.offer_model(second, checkpoint, 0.85)  # a later trial beat the first
    tracker.end_run(second, FINISHED)
    tracker.end_run(failed, "FAILED")  # lands at once, still without an export
    assert exports.runs == []
    tracker.flush()
    assert exports.runs == [second]
    assert MODEL_URI_TAG in tracker.get_run(second).tags
    assert MODEL_URI_TAG not in tracker.get_run(first).tags
    tracker.flush()
    assert exports.runs == [second], "an offer is exported once"


def test_of_offers_made_together_the_best_is_exported_the_first_of_equals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A population's members end together, and each may beat the trials done before."""
    tracker = _mlflow(tmp_path)
    exports = Exports(tracker, monkeypatch)
    checkpoint = _checkpoint(tmp_path)
    members = [tracker.start_run(f"trial-{i}", {}, {}) for i in range(4)]
    for run_id, value in zip(members, (0.8, 0.93, 0.9, 0.93), strict=True):
        tracker.offer_model(run_id, checkpoint, value)
    tracker.flush()
    assert exports.runs == [members[1]]


def test_an_offer_that_cannot_be_exported_is_a_warning_naming_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = _mlflow(tmp_path)
    run_id = tracker.start_run("trial-1", {}, {})
    tracker.offer_model(run_id, tmp_path / "gone" / "best.pt", 0.9)
    with caplog.at_level(logging.WARNING):
        tracker.flush()
    assert run_id in caplog.text and "could not log the model" in caplog.text
    assert MODEL_URI_TAG not in tracker.get_run(run_id).tags


@pytest.fixture(scope="module")
def converged(small_data: PairData, tmp_path_factory: pytest.TempPathFactory) -> FitResult:
    folder = tmp_path_factory.mktemp("converged")
    config = replace(CONFIG, data=DataConfig(train_pairs=384, val_pairs=192))  # small_data's
    result = fit(config, small_data, checkpoint_dir=folder)
    assert result.best_checkpoint is not None
    return result


class Recording(InMemoryTracker):
    def __init__(self) -> None:
        super().__init__()
        self.offers: list[str] = []
        self.logged: list[str] = []

    def offer_model(self, run_id: str, checkpoint: Path, value: float) -> None:
        self.offers.append(run_id)
        super().offer_model(run_id, checkpoint, value)

    def log_model(self, run_id: str, scorer: torch.nn.Module, name: str = "model") -> str:
        self.logged.append(run_id)
        return super().log_model(run_id, scorer, name)


@pytest.mark.parametrize("rule", [True, "best so far"])
def test_the_callback_offers_a_searchs_model_and_logs_a_training_runs(
    converged: FitResult, rule: bool | str
) -> None:
    tracker = Recording()
    run_id = tracker.start_run("run", {}, {})
    wanted = True if rule is True else (lambda _history: True)
    callback = TrackingCallback(tracker, run_id, log_model=wanted)
    assert converged.best_checkpoint is not None
    callback.on_checkpoint(converged.best_checkpoint, "best", 2)
    callback.on_fit_end(converged.history)
    assert callback.verdict is not None and callback.verdict.verdict == "converged"
    assert tracker.offers == ([] if rule is True else [run_id])
    assert tracker.logged == [run_id]
    assert MODEL_URI_TAG in tracker.get_run(run_id).tags
