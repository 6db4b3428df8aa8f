"""`train --resume` on a real checkpoint: flags a resume cannot honour are refused, not
ignored (issue 9 item 9), and a checkpoint whose weights do not fit its own config fails
before any data, MLflow run or epoch (item 5c). Nothing in the checkpoint folder changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from search.cli import cli
from siamese.train import load_checkpoint, save_checkpoint
from tests.faults.expect import TINY, bad_input, tree


def _train(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["train", "--home", str(home), *args])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """last.pt of a real one-epoch run (sq head, adam, lr 1e-3)."""
    home = tmp_path_factory.mktemp("trained")
    result = _train(home, *TINY, "--no-track", "--json")
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["checkpoints"]["last"])


@pytest.fixture
def edited(checkpoint: Path, tmp_path: Path) -> Path:
    """The same weights under a config that builds another network: relu2 has two outputs."""
    payload = load_checkpoint(checkpoint)
    payload["config"]["head"] = "relu2"
    path = tmp_path / "ck" / "edited.pt"
    save_checkpoint(path, payload)
    return path


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--head", "relu2", "--lr", "0.5"], "--head, --lr cannot change on a resume"),
        (["--preset", "seed"], "--preset cannot change"),
        (["--data", "shapes", "--seed", "3"], "--data, --seed cannot change"),
        (["--optimizer", "sgd", "--momentum", "0.5"], "--optimizer, --momentum cannot"),
        (["--batch-size", "16", "--dropout", "0.2", "--margin", "2"], "--batch-size, --dropout"),
        (["--train-pairs", "128", "--val-pairs", "64"], "--train-pairs, --val-pairs"),
        (["--task", "one-vs-rest", "--target", "3"], "--task, --target cannot"),
        (["--inject-bug", "same-image", "--weight-decay", "0.1"], "--inject-bug, --weight-decay"),
    ],
)
def test_flags_a_resume_cannot_honour_are_refused(
    checkpoint: Path, tmp_path: Path, flags: list[str], named: str
) -> None:
    folder = tree(checkpoint.parent)
    result = _train(tmp_path / "home", "--resume", str(checkpoint), "--epochs", "2", *flags)
    line = bad_input(result, f"--resume {checkpoint}: ", named)
    assert line.endswith("(the checkpoint fixes them); only --epochs, --device and --precision can")
    assert result.stdout == ""  # not one epoch trained
    assert tree(checkpoint.parent) == folder
    assert not (tmp_path / "home").exists()  # no MLflow store, so no run


def test_flags_that_repeat_the_checkpoints_config_are_fine(
    checkpoint: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "ck" / "last.pt"
    copy.parent.mkdir()
    copy.write_bytes(checkpoint.read_bytes())
    # The fixture's own values (sq head, adam, lr 1e-3, TINY's pairs), as a user retypes them.
    same = ["--head", "sq", "--optimizer", "adam", "--lr", "1e-3", "--train-pairs", "64"]
    result = _train(tmp_path / "home", "--resume", str(copy), "--epochs", "2", *same, "--no-track")
    assert result.exit_code == 0, result.output
    mixed = ["--head", "sq", "--lr", "0.5", "--val-pairs", "32", "--dropout", "0.2"]
    refused = _train(tmp_path / "home", "--resume", str(copy), "--epochs", "3", *mixed)
    bad_input(refused, f"--resume {copy}: --lr, --dropout cannot change on a resume")


def test_the_command_that_made_the_checkpoint_may_be_repeated(tmp_path: Path) -> None:
    made = ["--preset", "fixed", "--dropout", "0.1"]  # a preset, partly overridden
    result = _train(tmp_path / "a", *TINY, *made, "--no-track", "--json")
    assert result.exit_code == 0, result.output
    last = Path(json.loads(result.stdout)["checkpoints"]["last"])
    again = _train(tmp_path / "a", "--resume", str(last), "--epochs", "2", *made, "--no-track")
    assert again.exit_code == 0, again.output
    preset_alone = _train(
        tmp_path / "a", "--resume", str(last), "--epochs", "3", "--preset", "fixed"
    )
    bad_input(preset_alone, "--preset cannot change on a resume")  # its dropout is 0.3


def test_an_older_checkpoint_with_a_target_beside_same_class_takes_repeated_flags(
    checkpoint: Path, tmp_path: Path
) -> None:
    payload = load_checkpoint(checkpoint)
    payload["config"]["data"]["target"] = "3"  # kept by versions before 0.2.0's check
    old = tmp_path / "ck" / "old.pt"
    save_checkpoint(old, payload)
    result = _train(tmp_path / "home", "--resume", str(old), "--epochs", "2", "--lr", "1e-3")
    assert result.exit_code == 0, result.output


def test_a_missing_checkpoint_is_named_before_any_flag(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    result = _train(tmp_path / "home", "--resume", str(missing), "--train-pairs", "256")
    bad_input(result, f"{missing}: no such checkpoint file")


def test_a_resume_with_nothing_left_to_train_says_so(checkpoint: Path, tmp_path: Path) -> None:
    result = _train(tmp_path / "home", "--resume", str(checkpoint))
    bad_input(result, "already holds epoch 1 of 1", "give --epochs above 1")


def test_epochs_and_device_still_change_on_a_resume(checkpoint: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ck" / "last.pt"
    copy.parent.mkdir()
    copy.write_bytes(checkpoint.read_bytes())
    args = ["--resume", str(copy), "--epochs", "2", "--device", "cpu", "--no-track", "--json"]
    result = _train(tmp_path / "home", *args)
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in json.loads(result.stdout)["history"]["records"]] == [1, 2]


def test_weights_that_do_not_fit_the_config_fail_before_any_run(
    edited: Path, tmp_path: Path
) -> None:
    folder = tree(edited.parent)
    result = _train(tmp_path / "home", "--resume", str(edited), "--epochs", "3")  # tracked
    bad_input(result, f"{edited}: its weights do not match", "head.linear.weight")
    assert result.stdout == ""  # no epoch line
    assert tree(edited.parent) == folder  # no last.pt/best.pt written next to it
    assert not (tmp_path / "home").exists()  # no MLflow store: no run was created


def test_a_checkpoint_with_an_invalid_config_names_the_file(
    checkpoint: Path, tmp_path: Path
) -> None:
    payload = load_checkpoint(checkpoint)
    payload["config"]["head"] = "bogus"
    path = tmp_path / "bogus.pt"
    save_checkpoint(path, payload)
    image = tmp_path / "pixel.png"
    Image.new("L", (50, 40), 90).save(image)
    home = str(tmp_path / "home")
    resumed = CliRunner().invoke(cli, ["train", "--home", home, "--resume", str(path)])
    scored = CliRunner().invoke(
        cli, ["predict", "--home", home, "--model", str(path), str(image), str(image)]
    )
    for result in (resumed, scored):
        bad_input(result, f"{path}: its config is not valid (--head: expected ")
    assert not (tmp_path / "home").exists()


def test_a_resume_may_change_the_precision(checkpoint: Path, tmp_path: Path) -> None:
    """Like the device, the number format says how, not what: a run resumes in another."""
    copy = tmp_path / "run" / "last.pt"
    copy.parent.mkdir()
    copy.write_bytes(checkpoint.read_bytes())
    args = ["--resume", str(copy), "--epochs", "2", "--precision", "fp32", "--no-track"]
    result = _train(tmp_path / "home", *args, "--json")
    assert result.exit_code == 0, result.output
    saved = load_checkpoint(Path(json.loads(result.stdout)["checkpoints"]["last"]))
    assert saved["epoch"] == 2 and saved["config"]["precision"] == "fp32"
    assert saved["history"]["precision"] == "fp32"
