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
