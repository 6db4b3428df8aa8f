"""A worker whose MLflow store does not hold the study's parent run refuses to start: its
trials would land, orphaned, in a store nobody looks at."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from search.cli import cli

# Two homes, a search and a worker in one test: CI runs it.
pytestmark = pytest.mark.slow

TINY = ["--epochs", "1", "--train-pairs", "64", "--val-pairs", "32", "--device", "cpu"]


def test_a_worker_on_its_own_embedded_store_is_told_to_use_the_studys(tmp_path: Path) -> None:
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    storage = f"sqlite:///{machine_a / 'shared-study.db'}"
    created = CliRunner().invoke(
        cli,
        [
            "search",
            "--home",
            str(machine_a),
            "--study",
            "s",
            "--storage",
            storage,
            "--trials",
            "0",
            *TINY,
        ],
    )
    assert created.exit_code == 0, created.output
    joined = CliRunner().invoke(
        cli, ["worker", "--home", str(machine_b), "--study", "s", "--storage", storage]
    )
    assert joined.exit_code == 2, joined.output
    assert "logs its trials under MLflow run" in joined.output
    assert "--tracking-uri" in joined.output and "--no-track" in joined.output
    assert not machine_b.exists()  # refused before a store (or the home) was made for it
    with_store = CliRunner().invoke(
        cli,
        [
            "worker",
            "--home",
            str(machine_b),
            "--study",
            "s",
            "--storage",
            storage,
            "--tracking-uri",
            f"sqlite:///{machine_a / 'mlflow.db'}",
            "--trials",
            "1",
        ],
    )
    assert with_store.exit_code == 0, with_store.output


def test_a_worker_given_another_experiment_than_its_studys_is_refused(tmp_path: Path) -> None:
    """It logged to the study's experiment and said nothing of the flag."""
    home = tmp_path / "home"
    storage = f"journal:{home / 'optuna-journal.log'}"
    made = ["search", "--home", str(home), "--study", "s", "--trials", "0", *TINY]
    created = CliRunner().invoke(cli, [*made, "--experiment", "mine"])
    assert created.exit_code == 0, created.output
    worker = ["worker", "--home", str(home), "--study", "s", "--storage", storage]
    refused = CliRunner().invoke(cli, [*worker, "--experiment", "other"])
    assert refused.exit_code == 2, refused.output
    assert "--experiment other: study 's' logs its trials to experiment 'mine'" in refused.output
    same = CliRunner().invoke(cli, [*worker, "--experiment", "mine", "--trials", "1"])
    assert same.exit_code == 0, same.output


def test_a_worker_whose_studys_recorded_store_is_not_here_is_told_where_to_point(
    tmp_path: Path,
) -> None:
    """The store a study recorded may be on another machine: the worker says so, and how
    to reach it, not "no folder ... --tracking-uri", a flag the user never typed."""
    machine_a, store = tmp_path / "a", tmp_path / "shared" / "mlflow.db"
    store.parent.mkdir()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = ["--study", "s", "--storage", storage]
    args = ["search", "--home", str(machine_a), *study, "--trials", "0", *TINY]
    created = CliRunner().invoke(cli, [*args, "--tracking-uri", f"sqlite:///{store}"])
    assert created.exit_code == 0, created.output
    (store.parent).rename(tmp_path / "elsewhere")  # this machine has no such folder
    joined = CliRunner().invoke(cli, ["worker", "--home", str(tmp_path / "b"), *study])
    assert joined.exit_code == 2, joined.output
    assert "logs its trials under MLflow run" in joined.output, joined.output
    assert not (tmp_path / "shared").exists()
