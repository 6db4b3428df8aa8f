"""Several processes on one study: a journal file on one machine, PostgreSQL across machines
(here: worker processes on one machine against a real PostgreSQL server)."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from search.cli import cli
from search.storage import open_storage

# Several processes, a PostgreSQL server and kill -9: CI runs these (`-m slow`).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KILLED_TRIAL_EPOCHS = 30
TINY = ["--device", "cpu", "--train-pairs", "128", "--val-pairs", "64", "--pruner", "none"]


def _create(home: Path, study: str, storage: str, *extra: str) -> str:
    args = [
        "search",
        "--home",
        str(home),
        "--study",
        study,
        "--storage",
        storage,
        "--trials",
        "0",
        *TINY,
        *extra,
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def _worker(
    home: Path, study: str, storage: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "search.cli",
        "worker",
        "--home",
        str(home),
        "--study",
        study,
        "--storage",
        storage,
        *extra,
    ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_two_processes_on_a_journal_share_trials_and_lose_none(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = CliRunner().invoke(
        cli,
        [
            "search",
            "--home",
            str(home),
            "--study",
            "j",
            "--jobs",
            "2",
            "--trials",
            "4",
            "--epochs",
            "1",
            *TINY,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(
        study_name="j", storage=open_storage(f"journal:{home / 'optuna-journal.log'}")
    )
    trials = study.get_trials()
    assert len(trials) >= 4 and len({t.number for t in trials}) == len(trials)
    assert all(t.state.is_finished() for t in trials)
    first = min(trials, key=lambda t: t.number)  # a new study starts with the original network
    assert (
        first.params["head"] == "relu2"
        and first.params["lr"] == 1e-6
        and "baseline" in first.user_attrs
    )
    workers = {t.user_attrs["mlflow_run_id"] for t in trials}
    assert len(workers) == len(trials)  # one MLflow run per trial, none shared or lost


def test_sqlite_refuses_parallel_writers(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "search",
            "--home",
            str(tmp_path),
            "--jobs",
            "2",
            "--storage",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--trials",
            "1",
        ],
    )
    assert result.exit_code == 2 and "not safe" in result.output


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get("SIAMESE_LAB_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail(
                "SIAMESE_LAB_TEST_PG_URL is unset under CI: .ci/run starts PostgreSQL and sets it"
            )
        pytest.skip(
            "no PostgreSQL: run `export SIAMESE_LAB_TEST_PG_URL=$(bash scripts/test-services.sh)` as root"
        )
    return url


def test_a_killed_worker_trial_is_retried_with_its_parameters(tmp_path: Path, pg_url: str) -> None:
    home, study_name = tmp_path / "home", f"pg-{uuid.uuid4().hex[:8]}"
    fast_heartbeat = {"SIAMESE_LAB_HEARTBEAT_S": "1", "SIAMESE_LAB_GRACE_S": "3"}
    # Enough epochs that the kill lands mid-trial even when this machine is slow to poll: an
    # epoch here takes ~0.15 s, so with 4 the trial could end before the signal.
    created = _create(
        home,
        study_name,
        pg_url,
        "--epochs",
        str(KILLED_TRIAL_EPOCHS),
        "--lr",
        "1e-3",
        "--optimizer",
        "adam",
    )
    # A shared study logging to this machine's own MLflow store: the user is told.
    assert "workers elsewhere need --tracking-uri" in created
    storage = open_storage(pg_url)
    every_epoch = ("--checkpoint-every", "0")  # a last.pt to resume from, not one within 30 s
    doomed = _worker(home, study_name, pg_url, "--trials", "1", *every_epoch, env=fast_heartbeat)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(
            (home / "checkpoints" / study_name).glob("*/last.pt")
        ):
            time.sleep(0.3)
        assert list((home / "checkpoints" / study_name).glob("*/last.pt")), doomed.communicate(
            timeout=5
        )[0]
        doomed.send_signal(signal.SIGKILL)  # mid-trial: after epoch 1's checkpoint, before the end
        doomed.wait(timeout=30)
    finally:
        doomed.kill()
    time.sleep(4)  # past the grace period: the dead worker's heartbeat is stale
    survivor = _worker(home, study_name, pg_url, "--trials", "1", env=fast_heartbeat)
    output, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, output

    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
    dead, retry = trials[0], trials[1]
    assert dead.state == optuna.trial.TrialState.FAIL
    assert retry.system_attrs.get("failed_trial") == dead.number
    assert retry.params == dead.params and retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs.get("resumed_from", "").endswith("last.pt")  # resumed, not restarted
    assert sorted(retry.intermediate_values) == list(range(1, KILLED_TRIAL_EPOCHS + 1))
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]

    from tracking import embedded_target
    from tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(embedded_target(home))
    assert tracker.get_run(dead.user_attrs["mlflow_run_id"]).status == "FAILED"
    assert tracker.get_run(retry.user_attrs["mlflow_run_id"]).status == "FINISHED"
