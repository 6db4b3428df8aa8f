"""A worker process that dies mid-trial leaves no zombie: its trial ends FAIL, its MLflow
run KILLED, and the trial is retried once, from its checkpoint, with the same parameters.
Real processes, real signals."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from search.env import LabEnv
from search.recovery import OWNER_ATTR, RETRY_OF_ATTR, owner_pid
from search.storage import RUN_ID_ATTR, open_storage
from tests.child_env import clean_env
from tracking.mlflow_tracker import MlflowTracker
from tracking.store import embedded_target

pytestmark = pytest.mark.slow  # processes that train for several seconds each

ROOT = Path(__file__).resolve().parents[2]
SLOW_TRIAL = ["--epochs", "12", "--train-pairs", "256", "--val-pairs", "64", "--device", "cpu"]
# Its trials of a few seconds write last.pt after every epoch, so a kill finds one to resume
# from (by default they would within 30 s; tests/siamese/test_keeper.py tests the interval).
SLOW_TRIAL += ["--checkpoint-every", "0"]
GOOD = ["--head", "abs", "--optimizer", "adam", "--lr", "1e-3", "--dropout", "0"]
WAIT_S = 240.0


def _start(home: Path, *args: str) -> subprocess.Popen[str]:
    env = clean_env()
    command = [sys.executable, "-m", "search.cli", "search", "--home", str(home), "--study", "z"]
    return subprocess.Popen(
        [*command, *SLOW_TRIAL, *GOOD, "--no-baseline", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _study(home: Path) -> optuna.Study:
    url = LabEnv(home).study_storage_url()
    return optuna.load_study(study_name="z", storage=open_storage(url))


def _running(home: Path) -> list[FrozenTrial]:
    if not (home / "optuna-journal.log").is_file():
        return []  # the search has not made its home yet
    try:
        return _study(home).get_trials(states=(TrialState.RUNNING,))
    except KeyError:  # the study is not created yet
        return []


def _a_trial_with_a_checkpoint(home: Path, process: subprocess.Popen[str]) -> FrozenTrial:
    """Waits for a RUNNING trial that has saved at least one epoch."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        for trial in _running(home):
            folder = home / "checkpoints" / "z" / f"trial-{trial.number}"
            if OWNER_ATTR in trial.user_attrs and (folder / "last.pt").is_file():
                return trial
        time.sleep(0.3)
    pytest.fail("no trial saved a checkpoint in time")


def _assert_recovered(home: Path, killed: FrozenTrial) -> None:
    trials = _study(home).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[killed.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == killed.number)
    assert retry.params == killed.params and retry.state != TrialState.WAITING
    assert retry.user_attrs["resumed_from"].endswith(f"trial-{killed.number}/last.pt")
    tracker = MlflowTracker(embedded_target(home))
    assert tracker.get_run(killed.user_attrs[RUN_ID_ATTR]).status == "KILLED"
    statuses = [r.info.status for r in tracker.client.search_runs([tracker.experiment_id])]
    assert "RUNNING" not in statuses


def test_a_killed_jobs_worker_is_recovered_and_its_trial_retried(tmp_path: Path) -> None:
    home = tmp_path / "home"
    process = _start(home, "--jobs", "2", "--trials", "2")
    killed = _a_trial_with_a_checkpoint(home, process)
    pid = owner_pid(killed.user_attrs[OWNER_ATTR])
    assert pid is not None and pid != process.pid
    os.kill(pid, signal.SIGKILL)
    output, _ = process.communicate(timeout=WAIT_S)
    assert process.returncode == 0, output
    assert "killed by SIGKILL" in output and "Traceback" not in output
    assert f"trial {killed.number}:" in output and "retried from its checkpoint" in output
    _assert_recovered(home, killed)


def test_a_killed_search_is_recovered_when_the_study_is_resumed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    process = _start(home, "--trials", "1")
    killed = _a_trial_with_a_checkpoint(home, process)
    process.kill()
    process.communicate(timeout=60)
    resumed = _start(home, "--trials", "0")
    output, _ = resumed.communicate(timeout=WAIT_S)
    assert resumed.returncode == 0, output
    assert f"trial {killed.number}: its process is gone" in output


def test_an_interrupted_trial_is_retried_from_its_checkpoint_on_resume(tmp_path: Path) -> None:
    home = tmp_path / "home"
    process = _start(home, "--trials", "1")
    killed = _a_trial_with_a_checkpoint(home, process)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=WAIT_S)
    assert process.returncode == 130, output
    assert _study(home).trials[killed.number].user_attrs.get("interrupted") is True
    resumed = _start(home, "--trials", "1")
    output, _ = resumed.communicate(timeout=WAIT_S)
    assert resumed.returncode == 0, output
    assert "interrupted earlier; retried from its checkpoint" in output
    _assert_recovered(home, killed)


def test_workers_stop_when_their_search_process_is_killed(tmp_path: Path) -> None:
    """kill -9 of `search --jobs 2` itself: its workers do not train on as orphans. Each
    stops as on SIGTERM (its trial FAIL with interrupted="SIGTERM", its run KILLED), and a
    resumed search retries the trial."""
    home = tmp_path / "home"
    process = _start(home, "--jobs", "2", "--trials", "4")
    held = _a_trial_with_a_checkpoint(home, process)
    worker = owner_pid(held.user_attrs[OWNER_ATTR])
    assert worker is not None and worker != process.pid
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 120
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker), "the worker outlived its search process"
    trial = _study(home).trials[held.number]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] == "SIGTERM"
    tracker = MlflowTracker(embedded_target(home))
    assert tracker.get_run(held.user_attrs[RUN_ID_ATTR]).status == "KILLED"
    resumed = _start(home, "--trials", "0")
    output, _ = resumed.communicate(timeout=WAIT_S)
    assert resumed.returncode == 0, output
    assert f"trial {held.number}: interrupted earlier; retried" in output


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, which init reaps, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
