"""`siamese-lab train` end to end through click's CliRunner, on small real data."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from search.cli import cli

SMALL = ["--train-pairs", "256", "--val-pairs", "128", "--device", "cpu", "--no-track"]


def _train(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["train", "--home", str(home), *SMALL, *args])


def test_train_prints_a_table_and_the_diagnosis(tmp_path: Path) -> None:
    result = _train(tmp_path, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "val_auc" in result.output and "Diagnosis:" in result.output
    (kept,) = list((tmp_path / "checkpoints").glob("*/last.pt"))
    assert f"checkpoints: {kept.parent}" in result.output


def test_seed_preset_says_why_in_plain_words(tmp_path: Path) -> None:
    result = _train(tmp_path, "--preset", "seed", "--epochs", "2")
    assert result.exit_code == 0, result.output  # a failed convergence is a result, not an error
    assert "FAILED TO CONVERGE" in result.output
    assert "same output for every pair" in result.output
    assert "learning rate is too low" in result.output
    assert "--head sq" in result.output


def test_the_seed_preset_runs_to_its_end_unless_early_stop_is_asked(tmp_path: Path) -> None:
    full = json.loads(_train(tmp_path, "--preset", "seed", "--epochs", "2", "--json").stdout)
    assert full["config"]["early_stop"] is False and full["history"]["early_stop"] is None
    assert len(full["history"]["records"]) == 2
    result = _train(tmp_path, "--preset", "seed", "--epochs", "2", "--early-stop")
    assert result.exit_code == 0, result.output
    assert "note: stopped early at step" in result.output and "collapsed+stalled" in result.output


def test_search_stops_early_by_default_and_no_early_stop_turns_it_off() -> None:
    from search.space import base_and_space

    assert base_and_space({}, None)[0].early_stop is True
    assert base_and_space({"early_stop": False}, None)[0].early_stop is False


def test_json_is_one_object_with_history_and_diagnosis(tmp_path: Path) -> None:
    result = _train(
        tmp_path, "--epochs", "2", "--json", "--head", "abs", "--optimizer", "sgd", "--lr", "0.02"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["config"]["head"] == "abs" and payload["config"]["lr"] == 0.02
    assert [r["epoch"] for r in payload["history"]["records"]] == [1, 2]
    assert all("val_auc" in r for r in payload["history"]["records"])
    assert payload["diagnosis"]["verdict"] in ("converged", "failed")
    assert Path(payload["checkpoints"]["last"]).is_file()


def test_flags_override_the_preset(tmp_path: Path) -> None:
    result = _train(tmp_path, "--preset", "seed", "--lr", "0.01", "--epochs", "1", "--json")
    config = json.loads(result.stdout)["config"]
    assert config["head"] == "relu2" and config["optimizer"] == "sgd" and config["lr"] == 0.01


def test_a_run_that_diverges_in_its_first_epoch_names_no_checkpoint_folder(
    tmp_path: Path,
) -> None:
    result = _train(tmp_path, "--lr", "1e308", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "checkpoints: none (no epoch ended with a finite loss)" in result.output
    assert not (tmp_path / "checkpoints").exists()


def test_diverging_run_exits_zero_with_diverged(tmp_path: Path) -> None:
    result = _train(tmp_path, "--optimizer", "sgd", "--lr", "50", "--epochs", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["diagnosis"]["kinds"] == ["diverged"]


def test_resume_continues_a_run(tmp_path: Path) -> None:
    first = json.loads(_train(tmp_path, "--epochs", "1", "--json").stdout)
    last = first["checkpoints"]["last"]
    again = ["train", "--home", str(tmp_path), "--resume", last, "--epochs", "2"]
    result = CliRunner().invoke(cli, [*again, "--json", "--no-track"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)["history"]["records"]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0] == first["history"]["records"][0]


def test_corrupt_resume_file_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    result = CliRunner().invoke(cli, ["train", "--resume", str(bad), "--no-track"])
    assert result.exit_code == 2 and "bad.pt" in result.output and "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,floor",
    [
        (
            [
                "--preset",
                "fixed",
                "--optimizer",
                "adam",
                "--lr",
                "1e-3",
                "--task",
                "one-vs-rest",
                "--target",
                "3",
            ],
            0.95,
        ),
        (["--task", "same-class", "--head", "abs", "--optimizer", "adam", "--lr", "1e-3"], 0.93),
    ],
)
def test_digits_reach_the_issue_auc_in_five_epochs(
    tmp_path: Path, args: list[str], floor: float
) -> None:
    result = CliRunner().invoke(
        cli, ["train", "--home", str(tmp_path), "--device", "cpu", "--no-track", "--json", *args]
    )
    payload = json.loads(result.stdout)
    assert payload["config"]["epochs"] == 5 and payload["config"]["data"]["train_pairs"] == 2048
    assert max(r["val_auc"] for r in payload["history"]["records"]) >= floor
    assert payload["diagnosis"]["verdict"] == "converged"


def test_resuming_another_homes_checkpoint_leaves_that_home_as_it_was(tmp_path: Path) -> None:
    """The resumed run is this home's: it wrote into the other home's checkpoint folder,
    replacing its last.pt and best.pt."""
    first = json.loads(_train(tmp_path / "a", "--epochs", "1", "--json").stdout)
    folder = Path(first["checkpoints"]["last"]).parent
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = _train(
        tmp_path / "b", "--resume", first["checkpoints"]["last"], "--epochs", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    resumed = json.loads(result.stdout)["checkpoints"]
    assert Path(resumed["last"]).parent.parent == tmp_path / "b" / "checkpoints"
    assert Path(resumed["best"]).is_file()


def test_resuming_in_the_same_home_goes_on_in_the_runs_folder(tmp_path: Path) -> None:
    first = json.loads(_train(tmp_path, "--epochs", "1", "--json").stdout)
    last = first["checkpoints"]["last"]
    result = _train(tmp_path, "--resume", last, "--epochs", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoints"]["last"] == last


def test_the_resume_hint_names_the_resumed_file_until_the_new_folder_has_a_last_pt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resume into a new folder stopped in its first epoch has no last.pt there yet."""
    from search.cli.train import _print_resume_hint

    source, folder = tmp_path / "a" / "last.pt", tmp_path / "b" / "run"
    source.parent.mkdir()
    source.write_bytes(b"checkpoint")
    folder.mkdir(parents=True)
    _print_resume_hint(folder, source, tmp_path / "b")
    assert capsys.readouterr().err.strip().endswith(f"train --resume {source}")
    (folder / "last.pt").write_bytes(b"checkpoint")
    _print_resume_hint(folder, source, tmp_path / "b")
    assert capsys.readouterr().err.strip().endswith(f"train --resume {folder / 'last.pt'}")
