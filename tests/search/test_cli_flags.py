"""Out-of-range numbers on the command line exit 2 naming the flag, before any work."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from search.cli import cli


@pytest.mark.parametrize(
    "args,flag",
    [
        (["search", "--trials", "-1"], "--trials"),
        (["search", "--jobs", "0"], "--jobs"),
        (["search", "--timeout", "0"], "--timeout"),
        (["search", "--timeout", "nan"], "--timeout"),
        (["worker", "--study", "s", "--storage", "journal:x", "--timeout", "nan"], "--timeout"),
        (["worker", "--study", "s", "--storage", "journal:x", "--trials", "0"], "--trials"),
        (["ui", "--port", "99999"], "--port"),
    ],
)
def test_out_of_range_flags_exit_2(tmp_path: Path, args: list[str], flag: str) -> None:
    result = CliRunner().invoke(cli, [*args, "--home", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}'" in result.output
    assert not list(tmp_path.iterdir())  # no study, store or checkpoint was created


@pytest.mark.parametrize(
    "args,line",
    [
        (["train", "--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got -1"),
        (
            ["train", "--seed", str(2**32)],
            f"--seed: expected an integer in [0, 4294967295], got {2**32}",
        ),
        (["search", "--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got -1"),
        (
            ["data", "check", "--seed", "-1"],
            "--seed: expected an integer in [0, 4294967295], got -1",
        ),
        (
            ["train", "--weight-decay", "inf"],
            "--weight-decay: expected a finite number >= 0, got inf",
        ),
        (["train", "--margin", "inf"], "--margin: expected a positive finite number, got inf"),
        (
            ["train", "--train-pairs", "1000000000000"],
            "--train-pairs: expected an integer in [2, 10000000], got 1000000000000",
        ),
        (
            ["data", "check", "--val-pairs", str(10**23)],
            f"--val-pairs: expected an integer in [2, 10000000], got {10**23}",
        ),
    ],
)
def test_values_no_generator_or_optimizer_can_take_exit_2_with_one_line(
    tmp_path: Path, args: list[str], line: str
) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: {line}"]
    assert not (tmp_path / "home").exists()


def test_more_local_workers_than_the_cores_can_hold_exit_2_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo such as --jobs 400 would start 400 processes that exhaust the memory."""
    from search import training

    monkeypatch.setattr(training, "usable_cores", lambda: 2)
    home = tmp_path / "home"
    result = CliRunner().invoke(cli, ["--home", str(home), "search", "--jobs", "9"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: --jobs 9: this machine has 2 CPU core(s), room for at most 8 local workers "
        "(each holds about 0.5 GB and shares the cores); more machines join with "
        "`siamese-lab worker`"
    ]
    assert not home.exists()


def test_usable_cores_are_this_process_s_share() -> None:
    import os

    from search.training import usable_cores

    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_bad_data_for_a_new_study_is_refused_before_the_study_exists(tmp_path: Path) -> None:
    """Stored with data it cannot read, a study could neither run nor be resumed with other
    data (a resume refuses a --data that differs from the stored one)."""
    home = tmp_path / "home"
    missing = tmp_path / "missing.npz"
    bad = CliRunner().invoke(cli, ["--home", str(home), "search", "--data", f"npz:{missing}"])
    assert bad.exit_code == 2, bad.output
    assert bad.output.strip().splitlines() == [
        f"error: {missing}: no such file; expected an .npz with arrays x and y"
    ]
    assert not (home / "mlflow.db").exists()  # no study run either
    good = CliRunner().invoke(cli, ["--home", str(home), "search", "--trials", "0"])
    assert good.exit_code == 0, good.output
    assert "(new)" in good.output


@pytest.mark.parametrize("char", ["?", "%", "#"])
def test_a_home_the_store_uri_cannot_name_is_refused(tmp_path: Path, char: str) -> None:
    """sqlite:///HOME/mlflow.db: with a ? in HOME the database went to the folder before it,
    outside the home; a % made MLflow fail with a traceback."""
    home = tmp_path / f"h{char}20x"
    result = CliRunner().invoke(cli, ["--home", str(home), "train", "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: the home folder {home} (--home or SIAMESE_LAB_HOME): contains {char}, which "
        "the MLflow store's URI cannot hold; expected a path without ? # %"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing made, here or beside it


@pytest.mark.parametrize("alias", ["", "a b", "../x", "v1", "Latest"])
def test_an_alias_mlflow_refuses_is_refused_before_a_version_is_registered(
    tmp_path: Path, alias: str
) -> None:
    """MLflow checks the alias only after promote has registered a version for it: each
    attempt left a stray version (and `latest` named the newest of them)."""
    home = tmp_path / "home"
    result = CliRunner().invoke(
        cli, ["--home", str(home), "promote", "--run", "abcdef", "--alias", alias]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: --alias {alias!r}: expected letters, digits, _ and - (at most 255), not "
        "latest or vN (MLflow's names for versions)"
    ]
    assert not home.exists()


@pytest.mark.parametrize(
    "storage,expected",
    [
        ("sqlite:///", "sqlite:///PATH of a file"),
        ("sqlite:///:memory:", "sqlite:///PATH of a file"),
        ("journal:", "journal:PATH of a file"),
        ("journal:{tmp}", "journal:PATH of a file"),
    ],
)
def test_a_storage_that_keeps_no_study_is_refused(
    tmp_path: Path, storage: str, expected: str
) -> None:
    """In memory, the study ended with the process (and its heartbeat printed tracebacks);
    journal: with no file was an IsADirectoryError traceback."""
    url = storage.format(tmp=tmp_path)
    args = ["--home", str(tmp_path / "home"), "search", "--storage", url, "--trials", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: --storage {url!r}: expected {expected}"]
