"""Studies survive their processes: no parameter set runs twice, one study per name in a
home, a half-made study finishes its setup, and a store that fails leaves nothing behind."""

import socket
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result

from search.cli import cli
from search.env import LabEnv
from search.setup import make_sampler, stored_setup, write_setup
from search.storage import open_storage, study_exists
from siamese.errors import DiskFullError
from tests.faults.expect import bad_input

TINY = ["--epochs", "1", "--train-pairs", "64", "--val-pairs", "32", "--device", "cpu"]


def _search(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["search", "--home", str(home), *TINY, *args])


def _study(home: Path, name: str) -> optuna.Study:
    url = LabEnv(home).study_storage_url()
    return optuna.load_study(study_name=name, storage=open_storage(url))


def test_two_samplers_of_one_study_never_draw_the_same_point_and_a_rerun_draws_them_again() -> None:
    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("lr", 1e-6, 1e-1, log=True)

    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(study_name="s", storage=storage, sampler=make_sampler("tpe", 7))
    second = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler("tpe", 7))
    for study in (first, second, first, second):  # two workers taking turns
        study.optimize(objective, n_trials=1)
    drawn = [t.params["lr"] for t in first.trials]
    assert len(set(drawn)) == 4
    rerun = optuna.create_study(sampler=make_sampler("tpe", 7))
    rerun.optimize(objective, n_trials=4)
    assert [t.params["lr"] for t in rerun.trials] == drawn


def test_workers_and_resumes_never_repeat_a_parameter_set(tmp_path: Path) -> None:
    home = tmp_path / "home"
    args = ["--study", "k2", "--no-track", "--no-baseline"]
    assert _search(home, *args, "--jobs", "2", "--trials", "3").exit_code == 0
    resumed = _search(home, *args, "--trials", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed" in resumed.output
    url = LabEnv(home).study_storage_url()
    study = _study(home, "k2")
    setup, before = stored_setup(study._storage, "k2"), len(study.trials)
    assert setup is not None and setup.target_trials == before  # (5 but for a photo finish)
    # A search elsewhere asks for one more trial: the worker runs it.
    write_setup(study, replace(setup, target_trials=before + 1))
    joined = CliRunner().invoke(
        cli, ["worker", "--home", str(home), "--study", "k2", "--storage", url, "--no-track"]
    )
    assert joined.exit_code == 0, joined.output
    trials = _study(home, "k2").get_trials(deepcopy=False)
    assert len(trials) == before + 1
    keys = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(keys)) == len(keys), keys


def test_one_home_holds_one_study_per_name_however_it_was_started(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = _search(home, "--study", "k2", "--jobs", "2", "--trials", "0", "--no-track")
    assert made.exit_code == 0, made.output
    again = _search(home, "--study", "k2", "--trials", "0", "--no-track")
    assert again.exit_code == 0, again.output
    assert "(resumed" in again.output
    assert not (home / "optuna.db").exists()
    report = CliRunner().invoke(cli, ["report", "--study", "k2", "--home", str(home)])
    assert report.exit_code == 0, report.output


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_mlflow_leaves_no_half_made_study(tmp_path: Path) -> None:
    home = tmp_path / "home"
    uri = f"http://127.0.0.1:{_closed_port()}"
    failed = _search(home, "--study", "h", "--trials", "1", "--tracking-uri", uri)
    assert failed.exit_code == 2, failed.output
    assert uri in failed.output and "Traceback" not in failed.output
    assert not (home / "optuna-journal.log").exists()  # a new home: not even an empty one
    home.mkdir(exist_ok=True)  # (a refused command removes the new home it made, if empty)
    storage = open_storage(LabEnv(home).study_storage_url())
    assert not study_exists(storage, "h")
    rerun = _search(home, "--study", "h", "--trials", "0", "--no-track")
    assert "(new)" in rerun.output


def test_bad_data_for_a_new_home_leaves_no_study_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    failed = _search(home, "--study", "d", "--trials", "1", "--data", f"npz:{tmp_path / 'no.npz'}")
    assert failed.exit_code == 2, failed.output
    assert not (home / "optuna-journal.log").exists()
    journal = tmp_path / "elsewhere" / "j.log"
    args = ["--storage", f"journal:{journal}", "--data", f"npz:{tmp_path / 'no.npz'}"]
    assert _search(home, "--study", "d", "--trials", "1", *args).exit_code == 2
    assert not journal.exists()


def test_a_study_created_but_never_set_up_starts_as_new_with_its_baseline(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    storage = open_storage(LabEnv(home).study_storage_url())
    optuna.create_study(study_name="half", storage=storage)  # what a crash midway leaves
    result = _search(home, "--study", "half", "--trials", "1", "--no-track")
    assert result.exit_code == 0, result.output
    assert "(new)" in result.output
    first = _study(home, "half").trials[0]
    assert first.params["head"] == "relu2" and first.params["lr"] == 1e-6  # the seed network


def test_a_search_whose_every_trial_crashed_is_no_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_args: object, **_kwargs: object) -> None:
        raise DiskFullError(f"no space left on the device holding {tmp_path} while writing last.pt")

    monkeypatch.setattr("search.objective.fit", crash)
    result = _search(tmp_path / "home", "--study", "full", "--trials", "3", "--no-track")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: all 1 trial(s) of this search failed; trial 0: DiskFullError: no space left on "
        f"the device holding {tmp_path} while writing last.pt"
    ]  # the first full disk stopped the study: no second trial tried
    assert "Traceback" not in result.output


def test_a_search_whose_every_trial_diverged_is_a_result(tmp_path: Path) -> None:
    args = ["--study", "hot", "--trials", "2", "--no-track", "--no-baseline"]
    hot = ["--lr", "50", "--optimizer", "sgd", "--head", "sq", "--momentum", "0"]
    result = _search(tmp_path / "home", *args, *hot)
    assert result.exit_code == 0, result.output
    assert "diverged" in result.output


def test_a_sqlite_storage_with_a_query_is_found_again(tmp_path: Path) -> None:
    # Its query (?timeout=30) is no part of the file's name: the study must resume, not
    # start again as new over the stored one.
    url = f"sqlite:///{tmp_path / 'q.db'}?timeout=30"
    made = _search(tmp_path / "home", "--storage", url, "--trials", "0", "--train-pairs", "64")
    assert made.exit_code == 0, made.output
    again = _search(tmp_path / "home", "--storage", url, "--trials", "0", "--train-pairs", "96")
    bad_input(again, "--train-pairs")  # the stored study's setting, as for any resume


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_new_storage_file_in_a_missing_folder_is_refused_before_anything_is_made(
    tmp_path: Path, kind: str
) -> None:
    """A typo in the folder: SQLite refused to make the file, and a journal made both."""
    home, missing = tmp_path / "home", tmp_path / "no" / "such"
    url = f"sqlite:///{missing / 's.db'}" if kind == "sqlite" else f"journal:{missing / 'j.log'}"
    bad_input(_search(home, "--storage", url, "--trials", "1"), f"no folder {missing} to hold it")
    assert not home.exists() and not missing.exists()  # not even an empty home folder
    memory = _search(home, "--storage", "sqlite:///:memory:", "--trials", "1")
    bad_input(memory, "expected sqlite:///PATH of a file")
    assert not home.exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--data", "npz:{tmp}/missing.npz"], "no such file"),
        (["--storage", "sqlite:///{tmp}/no/such/s.db"], "no folder"),
    ],
    ids=["data", "storage"],
)
def test_a_refused_search_leaves_no_home_it_made_and_keeps_one_it_found(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    new_home = tmp_path / "new" / "home"
    bad_input(_search(new_home, *args, "--trials", "1"), needle)
    assert not (tmp_path / "new").exists()  # the folders it made for the home, parents too
    found = tmp_path / "found"
    found.mkdir()
    bad_input(_search(found, *args, "--trials", "1"), needle)
    assert found.is_dir() and not list(found.iterdir())


def test_resuming_a_study_adds_no_second_creation_to_its_journal(tmp_path: Path) -> None:
    """create_study(load_if_exists=True) appended a creation record on every resume, and on
    a resume refused after it."""
    import json

    home = tmp_path / "home"
    small = ["--trials", "0", "--train-pairs", "64", "--no-track"]
    for _ in range(3):
        done = _search(home, *small)
        assert done.exit_code == 0, done.output
    ops = [json.loads(line)["op_code"] for line in (home / "optuna-journal.log").open()]
    assert ops.count(0) == 1  # JournalOperation.CREATE_STUDY


@pytest.mark.parametrize("command", ["search", "worker"])
def test_a_journal_that_is_not_one_is_refused_and_left_as_it_was(
    tmp_path: Path, command: str
) -> None:
    """Optuna failed on it with a JSONDecodeError traceback."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nline two\n")
    url = f"journal:{notes}"
    args = ["--study", "s", "--storage", url, "--no-track"]
    home = tmp_path / "home"
    result = CliRunner().invoke(cli, [command, "--home", str(home), *args])
    bad_input(result, f"--storage {url}: not an Optuna journal")
    assert notes.read_text() == "my notes\nline two\n" and not home.exists()
