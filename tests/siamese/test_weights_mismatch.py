"""A checkpoint of another network version (the tower before its layers had names) is bad
input naming the file, for scoring and for resuming alike."""

from pathlib import Path

import pytest
import torch

from siamese import CheckpointError, DataConfig, PairData, TrainConfig, fit
from siamese.scoring import scorer_from_checkpoint
from siamese.train import load_checkpoint, save_checkpoint

# The earlier tower was an nn.Sequential: its convolutions were features.0, .2, .5 and .7.
OLD_NAMES = {
    "conv1": "features.0",
    "conv2": "features.2",
    "conv3": "features.5",
    "conv4": "features.7",
}


def cfg(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192))


def _old_key(key: str) -> str:
    for new, old in OLD_NAMES.items():
        key = key.replace(f"tower.{new}.", f"tower.{old}.")
    return key


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_data: PairData) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    fit(cfg(1), small_data, checkpoint_dir=folder)
    return folder / "last.pt"


@pytest.fixture(scope="module")
def old_checkpoint(trained: Path) -> Path:
    payload = load_checkpoint(trained)
    payload["model"] = {_old_key(k): v for k, v in payload["model"].items()}
    save_checkpoint(trained.with_name("old.pt"), payload)
    return trained.with_name("old.pt")


def test_scoring_an_old_checkpoint_names_the_file_in_one_line(old_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match=r"old\.pt: its weights do not match") as caught:
        scorer_from_checkpoint(old_checkpoint)
    message = str(caught.value)
    assert "\n" not in message  # the CLI prints it as one line
    assert "missing 8 key(s), e.g. 'tower.conv1.bias'" in message
    assert "unexpected 8 key(s), e.g. 'tower.features.0.bias'" in message


def test_resuming_from_an_old_checkpoint_names_the_file(
    old_checkpoint: Path, small_data: PairData
) -> None:
    with pytest.raises(CheckpointError, match=r"old\.pt: its weights do not match"):
        fit(cfg(2), small_data, resume_from=old_checkpoint)


def test_reshaped_weights_are_named_too(tmp_path: Path, trained: Path) -> None:
    payload = load_checkpoint(trained)
    payload["model"]["tower.fc.bias"] = torch.zeros(7)
    save_checkpoint(tmp_path / "reshaped.pt", payload)
    with pytest.raises(CheckpointError, match=r"reshaped\.pt: .*size mismatch") as caught:
        scorer_from_checkpoint(tmp_path / "reshaped.pt")
    assert "\n" not in str(caught.value)


def test_a_matching_checkpoint_still_scores(trained: Path) -> None:
    scorer = scorer_from_checkpoint(trained)
    probs = scorer(torch.rand(3, 2, 40, 50))
    assert probs.shape == (3,)
