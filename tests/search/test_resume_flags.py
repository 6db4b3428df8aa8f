"""A resumed study keeps the settings it was created with: a flag that would change them is
refused with one line naming it (it used to be ignored without a word); the same command
again, or one that changes only what a worker may choose (--device), adds to the study."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from search.cli import cli
from tests.faults.expect import bad_input

TINY = ["--train-pairs", "128", "--val-pairs", "64", "--no-track", "--trials", "0"]
CREATED_WITH = ["--head", "sq", "--epochs", "2", "--sampler", "random"]


def _search(home: Path, *flags: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), "search", "--study", "s", *TINY, *flags])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    created = _search(tmp_path, *CREATED_WITH)
    assert created.exit_code == 0, created.output
    return tmp_path


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--head", "relu2"], "--head"),
        (["--epochs", "3", "--pruner", "none"], "--epochs, --pruner"),
        (["--train-pairs", "256"], "--train-pairs"),
        (["--sampler", "tpe"], "--sampler"),
        (["--lr", "1e-3"], "--lr"),  # fixing what the study searches is a change too
        (["--experiment", "other"], "--experiment"),  # its trials would leave its run
    ],
)
def test_a_flag_that_differs_from_the_study_is_refused(
    home: Path, flags: list[str], named: str
) -> None:
    journal = (home / "optuna-journal.log").read_bytes()
    result = _search(home, *CREATED_WITH, *flags)
    bad_input(result, "--study s: it exists", f"{named} differ", "name a new --study")
    assert (home / "optuna-journal.log").read_bytes() == journal  # nothing written


@pytest.mark.parametrize(
    "flags",
    [CREATED_WITH, [], [*CREATED_WITH, "--device", "cpu"], ["--experiment", "siamese-lab"]],
    ids=["the same command", "no flags", "another device", "its own experiment"],
)
def test_the_same_settings_resume_the_study(home: Path, flags: list[str]) -> None:
    result = _search(home, *flags)
    assert result.exit_code == 0, result.output
    assert "(resumed, with its stored space and base config)" in result.output


@pytest.mark.slow  # three searches with MLflow, two of them with worker processes
def test_every_trial_of_a_study_logs_to_the_study_s_experiment(tmp_path: Path) -> None:
    """Resumed without --experiment, or by local workers (--jobs), a study's trials went to
    the default experiment, away from the study's own run."""
    import mlflow

    home = tmp_path / "home"
    tiny = ["--train-pairs", "128", "--val-pairs", "64", "--epochs", "1", "--no-baseline"]
    runs = [["--experiment", "exp-a", "--trials", "1"], ["--trials", "1"], ["--jobs", "2"]]
    for flags in runs:
        args = ["--home", str(home), "search", "--study", "s", *tiny, *flags]
        result = CliRunner().invoke(cli, [*args, "--trials", "2"] if "--jobs" in flags else args)
        assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    counts = {
        e.name: len(client.search_runs([e.experiment_id])) for e in client.search_experiments()
    }
    # The study's run and its 4-5 trials' (a second worker may start one past the target).
    assert counts.pop("exp-a") >= 1 + 4 and not any(counts.values()), counts
