"""Refused before anything is made: a storage file a worker cannot join, a tracking URI
MLflow cannot keep runs at, training data that cannot be read. Exit 2, one line, and no
home, store, lock file or ./mlruns left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from search.cli import cli
from tests.faults.expect import TINY, bad_input


def _invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--home", str(home)])


@pytest.mark.parametrize("kind", ["journal", "SQLite"])
def test_a_worker_for_a_storage_file_that_does_not_exist_makes_nothing(
    tmp_path: Path, kind: str
) -> None:
    """A missing SQLite file became an empty Optuna database, left behind."""
    url = f"journal:{tmp_path / 'typo.log'}" if kind == "journal" else f"sqlite:///{tmp_path}/t.db"
    args = ["worker", "--study", "s", "--storage", url, "--no-track"]
    result = _invoke(tmp_path / "home", *args)
    bad_input(result, f"--storage {url}: no such {kind} file")
    assert not list(tmp_path.iterdir())  # neither the storage nor the home


@pytest.mark.parametrize(
    "uri,needle",
    [
        ("foo://bar", "not a tracking URI MLflow knows"),
        ("file:///tmp/mlruns", "MLflow's file store is in maintenance mode"),
        ("sqlite:///:memory:", "an in-memory store keeps nothing"),
        ("sqlite:///no/such/folder/mlflow.db", "no folder no/such/folder to hold it"),
        ("sqlite:///.", ". is a folder; expected the path of a file"),
    ],
)
@pytest.mark.parametrize(
    "args",
    [["train", *TINY], ["search", "--trials", "1", *TINY], ["diagnose", "abcdef12"]],
    ids=lambda a: a[0],
)
def test_a_tracking_uri_mlflow_cannot_keep_runs_at_is_refused_before_anything_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, needle: str, args: list[str]
) -> None:
    """MLflow's traceback (an unknown scheme, its file store), tracebacks after the whole
    training with its checkpoints in ./mlruns (sqlite:///:memory:), or the folder a typo
    named made for a new store."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "new" / "home"
    bad_input(
        _invoke(home, *args, "--tracking-uri", uri),
        f"--tracking-uri/MLFLOW_TRACKING_URI {uri}: {needle}",
    )
    assert not list(tmp_path.iterdir())  # no home, no ./mlruns, no lock file


def test_train_refused_for_its_data_leaves_no_home_behind(tmp_path: Path) -> None:
    """The MLflow store was made for the run before the data were read: a new home kept it."""
    home = tmp_path / "new" / "home"
    missing = tmp_path / "missing.npz"
    bad_input(_invoke(home, "train", *TINY, "--data", f"npz:{missing}"), str(missing))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "flag,value", [("--tracking-uri", "sqlite:///x.db"), ("--experiment", "e")]
)
def test_a_tracking_target_given_to_train_with_no_track_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str, value: str
) -> None:
    """It was ignored: the run trained untracked, and the user looked for it at the URI."""
    monkeypatch.chdir(tmp_path)
    result = _invoke(tmp_path / "home", "train", *TINY, "--no-track", flag, value)
    bad_input(result, f"{flag} {value}: given with --no-track, which logs nothing")
    assert not list(tmp_path.iterdir())


def test_a_tracking_uri_an_untracked_search_records_is_checked_too(tmp_path: Path) -> None:
    """The study keeps it for a later resume that tracks, which made the missing folder."""
    uri = f"sqlite:///{tmp_path / 'no' / 'such' / 'mlflow.db'}"
    args = ["search", "--trials", "1", *TINY, "--no-track", "--tracking-uri", uri]
    bad_input(_invoke(tmp_path / "home", *args), f"no folder {tmp_path / 'no' / 'such'} to hold it")
    assert not list(tmp_path.iterdir())
