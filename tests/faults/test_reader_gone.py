"""A command whose reader leaves (`siamese-lab train | head -1`) carries on to its end."""

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from search.reader_gone import ReaderTolerantStream
from tests.child_env import clean_env

REPO = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "2", "--train-pairs", "64", "--val-pairs", "32", "--device", "cpu"]


def test_train_piped_into_a_reader_that_quits_still_finishes_its_run(tmp_path: Path) -> None:
    """It died at its next print with BrokenPipeError: a FAILED run, no checkpoint."""
    home = tmp_path / "home"
    env = clean_env()
    command = [sys.executable, "-m", "search.cli", "--home", str(home), "train", *TINY]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"training on cpu")
    process.stdout.close()  # what `| head -1` does once it has its line
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 0, stderr
    assert "Traceback" not in stderr
    with sqlite3.connect(home / "mlflow.db") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)]
    (folder,) = (home / "checkpoints").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]


class _ClosedPipe(io.StringIO):
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd, self.refusals = fd, 0

    def fileno(self) -> int:
        return self.fd

    def flush(self) -> None:
        if os.readlink(f"/proc/self/fd/{self.fd}") != os.devnull:
            self.refusals += 1
            raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc (Linux)")
def test_after_the_reader_left_everything_goes_to_dev_null(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "pipe-stand-in", os.O_WRONLY | os.O_CREAT)
    try:
        inner = _ClosedPipe(fd)
        stream = ReaderTolerantStream(inner)
        assert stream.write("epoch 1\n") == len("epoch 1\n")
        stream.flush()  # refused once, then the descriptor names /dev/null
        stream.flush()
        assert inner.refusals == 1 and os.readlink(f"/proc/self/fd/{fd}") == os.devnull
    finally:
        os.close(fd)


def _lab(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "search.cli", "--home", str(home), *args]


JOBS = ["search", "--jobs", "2", "--no-baseline", "--no-track", "--epochs", "1"]
JOBS += ["--train-pairs", "64", "--val-pairs", "32", "--device", "cpu"]


@pytest.mark.slow
def test_the_workers_of_search_jobs_train_on_when_the_reader_quits(tmp_path: Path) -> None:
    """Each local worker writes its trial lines to the same pipe: a worker died at its
    first line after the reader left, and its replacements too (4 of 8 trials ran)."""
    home = tmp_path / "home"
    process = subprocess.Popen(
        _lab(home, *JOBS, "--trials", "6"),
        cwd=REPO,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith(b"study ")
    process.stdout.close()
    assert process.wait(timeout=600) == 0
    report = subprocess.run(
        _lab(home, "report", "--study", "siamese-lab", "--json"),
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads(report.stdout)
    assert summary["n_trials"] == 6 and "FAIL" not in summary["states"], summary["states"]


@pytest.mark.slow
def test_search_jobs_json_prints_one_json_object(tmp_path: Path) -> None:
    """The workers printed their trial lines before it on standard output."""
    done = subprocess.run(
        _lab(tmp_path / "home", *JOBS, "--trials", "2", "--json"),
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["report"]["n_trials"] == 2
