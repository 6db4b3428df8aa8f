"""One resolution of the environment: home, MLflow target and study storage."""

from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from search.cli import cli
from search.env import LabEnv
from search.storage import open_storage


def test_the_home_variable_and_tracking_variable_are_read_when_asked(tmp_path: Path) -> None:
    env = LabEnv.from_environ({}, user_home=tmp_path)
    assert env.home == tmp_path / ".siamese-lab" and env.tracking_uri is None
    env = LabEnv.from_environ(
        {"SIAMESE_LAB_HOME": str(tmp_path / "h"), "MLFLOW_TRACKING_URI": "http://team:5000"}
    )
    assert env.home == tmp_path / "h" and env.tracking_uri == "http://team:5000"


def test_tracking_target_order_user_then_study_then_home(tmp_path: Path) -> None:
    embedded = LabEnv(tmp_path)
    assert embedded.tracking_target().uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert embedded.tracking_target("http://recorded:5000").uri == "http://recorded:5000"
    told = LabEnv(tmp_path, "http://other:5000")
    assert told.tracking_target("http://recorded:5000").uri == "http://other:5000"


def test_storage_is_the_users_else_the_homes_one_journal(tmp_path: Path) -> None:
    env = LabEnv(tmp_path)
    journal, legacy = env.default_storage_urls()
    assert journal.startswith("journal:") and legacy.startswith("sqlite:///")
    assert env.study_storage_url(1) == env.study_storage_url(4) == journal
    assert env.study_storage_url(1, "old") == journal  # no SQLite file in this home
    told = env.with_overrides(storage_url="postgresql://db/x")
    assert told.study_storage_url(4, "old") == "postgresql://db/x"
    assert env.with_overrides(storage_url=None) == env  # an unset flag changes nothing


def test_a_study_left_in_the_homes_sqlite_file_stays_there(tmp_path: Path) -> None:
    env = LabEnv(tmp_path)
    _journal, legacy = env.default_storage_urls()
    optuna.create_study(study_name="old", storage=open_storage(legacy))
    assert env.study_storage_url(1, "old") == legacy
    assert env.study_storage_url(1, "new") != legacy


def test_home_after_the_command_wins_over_home_before_it_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIAMESE_LAB_HOME", str(tmp_path / "from-env"))
    runner = CliRunner()
    args = ["--trials", "0", "--no-track", "--epochs", "1", "--train-pairs", "64"]
    before = runner.invoke(cli, ["--home", str(tmp_path / "before"), "search", *args])
    assert before.exit_code == 0, before.output
    assert (tmp_path / "before" / "optuna-journal.log").is_file()
    after = runner.invoke(
        cli,
        ["--home", str(tmp_path / "before"), "search", "--home", str(tmp_path / "after"), *args],
    )
    assert after.exit_code == 0, after.output
    assert (tmp_path / "after" / "optuna-journal.log").is_file()
    plain = runner.invoke(cli, ["search", *args])
    assert plain.exit_code == 0, plain.output
    assert (tmp_path / "from-env" / "optuna-journal.log").is_file()
