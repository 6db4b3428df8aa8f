"""A finished trial keeps its best weights only (issue 11: <= 8 MB a trial), still logged
to MLflow; an interrupted one keeps everything it needs to be retried."""

from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner

from search.cli import cli
from search.objective import Objective
from search.space import SearchSpace
from siamese import CheckpointError, DataConfig, PairData, TrainConfig, fit
from siamese.scoring import scorer_from_checkpoint
from siamese.train import keeper as keeper_module
from siamese.train import load_checkpoint
from siamese.train.keep import keep_weights_only
from tracking import InMemoryTracker

BASE = TrainConfig(epochs=2, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192))
ADAM = {"lr": 1e-3, "optimizer": "adam", "head": "abs", "dropout": 0.0}
LIMIT_BYTES = 8 * 1024 * 1024


def test_a_finished_trial_keeps_a_weights_only_best_checkpoint(
    tmp_path: Path, small_data: PairData
) -> None:
    tracker = InMemoryTracker()
    parent = tracker.start_run("study", {}, {})
    objective = Objective(
        BASE, SearchSpace(), small_data, tmp_path, "s", tracker=tracker, parent_run_id=parent
    )
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(ADAM)
    study.optimize(objective, n_trials=1)
    folder = tmp_path / "trial-0"
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt"]
    assert (folder / "best.pt").stat().st_size < LIMIT_BYTES
    payload = load_checkpoint(folder / "best.pt")
    assert payload["optimizer"] == {} and payload["resumable"] is False
    scorer_from_checkpoint(folder / "best.pt")  # still scores pairs
    run_id = study.trials[0].user_attrs["mlflow_run_id"]
    assert [a for a in tracker.list_artifacts(run_id) if a.startswith("checkpoints/")] == [
        "checkpoints/best.pt"
    ]
    with pytest.raises(CheckpointError, match="weights only"):
        fit(BASE, small_data, checkpoint_dir=tmp_path / "again", resume_from=folder / "best.pt")


def test_an_unfinished_run_keeps_what_a_retry_needs(tmp_path: Path, small_data: PairData) -> None:
    fit(BASE, small_data, checkpoint_dir=tmp_path)
    before = load_checkpoint(tmp_path / "last.pt")
    assert before["optimizer"]  # a run's own checkpoints keep the optimizer until it ends
    assert keep_weights_only(tmp_path) == tmp_path / "best.pt"
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.parametrize(
    ("flag", "last_pt_epochs"),
    [((), []), (("--checkpoint-every", "0"), [1])],
    ids=["default: within 30 s, none", "0: after every epoch"],
)
def test_checkpoint_every_sets_how_often_a_search_trial_writes_its_last_pt(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: tuple[str, ...],
    last_pt_epochs: list[int],
) -> None:
    """A 2-epoch trial writes epoch 1's last.pt as epoch 2 begins only when asked to write
    after every epoch; either way it ends with its weights-only best.pt alone."""
    epochs: list[int] = []
    real_save = keeper_module.save_checkpoint

    def recording_save(path: Path, payload: dict[str, Any], durable: bool = True) -> None:
        if path.name == "last.pt":
            epochs.append(int(payload["epoch"]))
        real_save(path, payload, durable)

    monkeypatch.setattr(keeper_module, "save_checkpoint", recording_save)
    small = ["--train-pairs", "128", "--val-pairs", "64", "--device", "cpu", "--epochs", "2"]
    trial = ["--trials", "1", "--no-baseline", "--pruner", "none", "--no-early-stop"]
    args = ["search", "--home", str(tmp_path), "--no-track", *small, *trial, *flag]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert epochs == last_pt_epochs
    folder = tmp_path / "checkpoints" / "siamese-lab" / "trial-0"
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt"]
