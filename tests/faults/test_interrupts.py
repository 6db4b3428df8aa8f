"""Ctrl-C at any moment of a search (issue 9 item 7): exit 130, the one line "interrupted"
(no traceback, Optuna's included), the study's run KILLED and no run left RUNNING.

Real processes, real SIGINT, real timing. The moments are found by watching the trials'
checkpoint files (last.pt is replaced as each epoch after the first begins; at a trial's end
its weights-only best.pt is written and last.pt removed): during an epoch, just after a
trial has kept its best.pt (its end: artifacts, diagnosis; then the next trial's run),
between trials, and at the end of the study (the report's figures). The exact
points are hit on purpose, in-process, by tests/faults/test_interrupt_points.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from siamese.train import load_checkpoint
from tests.child_env import clean_env
from tracking.base import FINISHED, KILLED
from tracking.mlflow_tracker import MlflowTracker
from tracking.store import embedded_target

pytestmark = pytest.mark.slow  # one search process per moment, several seconds each

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 3
# Every trial trains all its epochs: no pruner, and no early stop of the seed baseline.
SEARCH = ["search", "--study", "i", "--trials", "2", "--epochs", str(EPOCHS), "--pruner", "none"]
SEARCH += ["--no-early-stop"]
# Ctrl-C while each epoch's last.pt is written, not one every 30 s (the default).
SEARCH += ["--checkpoint-every", "0"]
SMALL = ["--train-pairs", "128", "--val-pairs", "64", "--device", "cpu"]
WAIT_S = 180.0


# A Moment's `saves` for a trial's end: its weights-only best.pt kept, its last.pt removed.
ENDED = -1


@dataclass(frozen=True)
class Moment:
    trial: int  # the trial whose files are watched
    saves: int  # SIGINT once its last.pt was saved this many times (or it ENDED) ...
    delay_s: float  # ... and this long after


# On 2 idle cores a trial's end takes: its record from 0 s after it kept its best.pt (the
# curves, with matplotlib's first import, in the writer thread meanwhile), the next trial's
# run made from a few hundredths of a second on (a Ctrl-C there left that run RUNNING).
MOMENTS = {
    "during an epoch": Moment(0, 1, 0.05),
    "as a trial's record starts": Moment(0, ENDED, 0.0),
    "as the next trial's run is made": Moment(0, ENDED, 0.07),
    "as the next trial starts": Moment(0, ENDED, 0.14),
    "between trials": Moment(0, ENDED, 0.6),
    "as the study ends": Moment(1, ENDED, 0.1),
}


def _start(home: Path) -> subprocess.Popen[str]:
    env = clean_env()
    command = [sys.executable, "-m", "search.cli", "--home", str(home), *SEARCH, *SMALL]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the signal goes to the search only, as a terminal's would
    )


def _wait_for(process: subprocess.Popen[str], folder: Path, saves: int) -> None:
    """Returns once the trial in `folder` saved its last.pt `saves` times (each save is a
    new file), or, for ENDED, once it saved it and then removed it for its best.pt."""
    last, best = folder / "last.pt", folder / "best.pt"
    seen, previous = 0, None
    deadline = time.monotonic() + WAIT_S
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the search ended or stalled before {folder} reached {saves}")
        try:
            found = last.stat()
            current: tuple[int, int] | None = (found.st_ino, found.st_mtime_ns)
        except FileNotFoundError:
            current = None
        if current is not None and current != previous:
            seen, previous = seen + 1, current
        if saves != ENDED and seen >= saves:
            return
        if saves == ENDED and seen and current is None and best.exists():
            return
        time.sleep(0.002)


@pytest.mark.parametrize("moment", list(MOMENTS.values()), ids=list(MOMENTS))
def test_ctrl_c_at_any_moment_of_a_search(tmp_path: Path, moment: Moment) -> None:
    home = tmp_path / "home"
    process = _start(home)
    _wait_for(process, home / "checkpoints" / "i" / f"trial-{moment.trial}", moment.saves)
    time.sleep(moment.delay_s)
    assert process.poll() is None, "the search ended before the signal"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == 130, stderr
    # click ends the terminal's "^C" line first: an empty line, then the one line.
    assert stderr.lstrip("\n").splitlines() == ["interrupted"], stderr
    tracker = MlflowTracker(embedded_target(home))
    runs = tracker.client.search_runs([tracker.experiment_id])
    (study,) = [r for r in runs if r.data.tags.get("siamese_lab.kind") == "study"]
    assert study.info.status == KILLED
    trials = {
        f"trial-{r.data.tags['optuna.trial_number']}": r.info.status for r in runs if r is not study
    }
    assert trials and set(trials.values()) <= {FINISHED, KILLED}, trials
    if moment.saves != ENDED:  # inside an epoch
        assert trials[f"trial-{moment.trial}"] == KILLED, trials


def test_ctrl_c_during_train_says_how_to_continue_the_run(tmp_path: Path) -> None:
    """Before "interrupted", the line with the run's last checkpoint and the command that
    continues it: the run's folder name is printed nowhere else until it ends."""
    home = tmp_path / "home"
    env = clean_env()
    command = [sys.executable, "-m", "search.cli", "--home", str(home), "train", "--no-track"]
    process = subprocess.Popen(
        [*command, "--epochs", "200", *SMALL],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + WAIT_S
    while not list(home.glob("checkpoints/*/last.pt")) and time.monotonic() < deadline:
        assert process.poll() is None, "train ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == 130, stderr
    (last,) = home.glob("checkpoints/*/last.pt")
    assert stderr.lstrip("\n").splitlines() == [
        f"continue it: siamese-lab --home {home} train --resume {last}",
        "interrupted",
    ]
    assert load_checkpoint(last)["epoch"] >= 1
