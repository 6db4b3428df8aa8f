"""The embedded store keeps every artifact in its home: MLflow's Default experiment, whose
artifacts go under the directory the store was first opened from, is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from search.cli import cli
from tests.faults.expect import bad_input

TINY = ["--epochs", "1", "--train-pairs", "64", "--val-pairs", "32"]


def test_the_default_experiment_is_refused_before_a_run_writes_outside_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where MLflow would put Default's artifacts: ./mlruns
    home = tmp_path / "home"
    result = CliRunner().invoke(
        cli, ["--home", str(home), "train", *TINY, "--experiment", "Default"]
    )
    bad_input(result, "--experiment Default: its artifacts go to", "outside the home folder")
    assert not (tmp_path / "mlruns").exists()
    assert not home.exists()  # refused before its store was made, and its empty folder gone
    trained = CliRunner().invoke(cli, ["--home", str(home), "train", *TINY, "--experiment", "mine"])
    assert trained.exit_code == 0, trained.output
    assert not (tmp_path / "mlruns").exists()


def test_another_sqlite_store_keeps_its_artifacts_beside_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's default, ./mlruns under the folder each command ran from, scattered a shared
    store's checkpoints and models over those folders."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = tmp_path / "shared" / "runs.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    args = ["--home", str(tmp_path / "home"), "train", *TINY, "--tracking-uri", uri]
    trained = CliRunner().invoke(cli, args)
    assert trained.exit_code == 0, trained.output
    assert not list(elsewhere.iterdir())  # no ./mlruns
    kept = [p.name for p in (store.parent / "mlartifacts").rglob("*.pt")]
    assert "best.pt" in kept
