"""A full disk (issue 9 item 6): one line naming the folder and the file, a nonzero exit,
and everything written before intact (the last good checkpoint, both stores).

The portable tests make fsync report ENOSPC, as NFS and quotas do, and writes to a file
opened with os.fdopen (how checkpoints are written; the last.pt of each epoch is not fsynced);
the real ones fill a 30 MB tmpfs (one 23 MB checkpoint fits, a second does not) and need
root to mount it."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from search.cli import cli
from siamese import DataConfig, EpochRecord, History, PairData, TrainConfig, fit
from siamese.errors import DiskFullError
from siamese.train import Callback, load_checkpoint, save_checkpoint
from tests.child_env import clean_env
from tracking import FAILED, InMemoryTracker, TrackingCallback, tracked_run
from tracking.base import ERROR_TAG
from tracking.mlflow_tracker import MlflowTracker
from tracking.store import embedded_target

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--train-pairs", "128", "--val-pairs", "64", "--device", "cpu"]
TINY = ["--train-pairs", "64", "--val-pairs", "32", "--device", "cpu"]


def _payload(epoch: int) -> dict[str, Any]:
    return {"model": {}, "optimizer": {}, "epoch": epoch, "config": {}, "history": {}, "rng": {}}


class FullDisk:
    """os.fsync of a file answers ENOSPC (or EDQUOT) once `full` is set (folders sync), and
    so does writing to a file opened with os.fdopen. `after_files` files are written first."""

    def __init__(self, code: int = errno.ENOSPC, after_files: int | None = None) -> None:
        self.code, self.after_files, self.files = code, after_files, 0
        self.full = after_files == 0
        self.real, self.real_fdopen = os.fsync, os.fdopen

    def __call__(self, fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode) and self.full:
            raise OSError(self.code, os.strerror(self.code))
        self.real(fd)

    def fdopen(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = self.real_fdopen(fd, *args, **kwargs)
        self.files += 1
        if self.after_files is not None and self.files > self.after_files:
            self.full = True
        if not self.full:
            return handle
        code = self.code

        class Refusing:  # the file object, except that writing finds the disk full
            def __enter__(self) -> Refusing:
                return self

            def __exit__(self, *exc: object) -> None:
                handle.close()

            def write(self, data: Any) -> int:
                raise OSError(code, os.strerror(code))

        return Refusing()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(os, "fsync", self)
        monkeypatch.setattr(os, "fdopen", self.fdopen)


@pytest.mark.parametrize(
    "code,why", [(errno.ENOSPC, "no space left"), (errno.EDQUOT, "disk quota exceeded")]
)
def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, why: str
) -> None:
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, _payload(1))
    monkeypatch.setattr(os, "fsync", FullDisk(code, after_files=0))
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint(path, _payload(2))
    monkeypatch.undo()
    assert str(caught.value) == f"{why} on the device holding {path.parent} while writing last.pt"
    assert isinstance(caught.value, OSError) and caught.value.errno == code
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left


class FillsUpAfter(Callback):
    """The disk fills up once epoch `epoch` is saved."""

    def __init__(self, disk: FullDisk, epoch: int) -> None:
        self.disk, self.epoch = disk, epoch

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        self.disk.full = self.disk.full or record.epoch >= self.epoch
        return None


def test_a_run_that_fills_the_disk_fails_with_that_line_and_keeps_its_last_checkpoint(
    tmp_path: Path, small_data: PairData, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk()
    disk.install(monkeypatch)
    tracker = InMemoryTracker()
    config = TrainConfig(epochs=3, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192))
    folder = tmp_path / "ck"
    with pytest.raises(DiskFullError), tracked_run(tracker, "full", config, "cpu") as run_id:
        tracking = TrackingCallback(tracker, run_id)
        fit(config, small_data, [FillsUpAfter(disk, 1), tracking], checkpoint_dir=folder)
    monkeypatch.undo()
    run = tracker.get_run(run_id)
    line = f"no space left on the device holding {folder} while writing last.pt"
    assert run.status == FAILED and run.tags[ERROR_TAG] == f"DiskFullError: {line}"
    assert run.tags["siamese_lab.stop_reason"] == "error"  # so no model is ever logged for it
    assert "siamese_lab.model_uri" not in run.tags
    assert load_checkpoint(folder / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]


def _one_error_line(stderr: str, exit_code: int, *needles: str) -> str:
    """A full disk is not bad input (2): exit 1, but one line like bad input, no traceback."""
    assert "Traceback" not in stderr and "enforce fail" not in stderr, stderr
    assert exit_code == 1, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no space left on the device holding ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_train_on_a_full_disk_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    FullDisk(after_files=1).install(monkeypatch)  # epoch 1's file is written
    args = ["train", "--home", str(home), "--no-track", "--epochs", "3", *TINY]
    result = CliRunner().invoke(cli, args)
    monkeypatch.undo()
    (folder,) = (home / "checkpoints").iterdir()
    _one_error_line(result.stderr, result.exit_code, f"{folder} while writing last.pt")
    assert load_checkpoint(folder / "last.pt")["epoch"] == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 30 MB tmpfs: room for one checkpoint (23 MB), not for the next beside it."""
    mount = tmp_path / "home" / "checkpoints"
    mount.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=30M", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _lab(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    command = [sys.executable, "-m", "search.cli", "--home", str(home), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _sound_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.slow
def test_train_on_a_really_full_disk(small_disk: Path) -> None:
    home = small_disk.parent
    done = _lab(home, "train", *SMALL, "--epochs", "3")
    (folder,) = small_disk.iterdir()
    line = _one_error_line(done.stderr, done.returncode, f"{folder} while writing last.pt")
    assert load_checkpoint(folder / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]
    _sound_sqlite(home / "mlflow.db")
    tracker = MlflowTracker(embedded_target(home))
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    assert run.info.status == FAILED
    assert run.data.tags[ERROR_TAG] == f"DiskFullError: {line.removeprefix('error: ')}"


@pytest.mark.slow
def test_search_on_a_really_full_disk_stops_with_one_line(small_disk: Path) -> None:
    """The first trial that meets the full disk fails with the one line in its run, the
    study stops there, and the search exits 1 with that line; no traceback, stores sound."""
    home = small_disk.parent
    adam = ["--no-baseline", "--optimizer", "adam"]  # 23 MB each: sgd's 16 MB fit twice
    adam += ["--checkpoint-every", "0"]  # every epoch's last.pt, not one within 30 s
    # 3 epochs: a trial writes epoch 1's last.pt as epoch 2 begins and epoch 2's as epoch 3
    # begins (its last epoch's state only if it is interrupted): that second one is too many.
    done = _lab(home, "search", "--study", "full", "--trials", "2", "--epochs", "3", *adam, *SMALL)
    folder = small_disk / "full" / "trial-0"
    line = f"no space left on the device holding {folder} while writing last.pt"
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: all 1 trial(s) of this search failed; trial 0: DiskFullError: {line}"
    ]
    tracker = MlflowTracker(embedded_target(home))
    runs = tracker.client.search_runs([tracker.experiment_id])
    trials = {r.info.run_name: r for r in runs if r.info.run_name.startswith("trial-")}
    assert sorted(trials) == ["trial-0 · FAIL · error"]
    run = trials["trial-0 · FAIL · error"]
    assert run.info.status == FAILED and run.data.tags[ERROR_TAG] == f"DiskFullError: {line}"
    assert load_checkpoint(folder / "last.pt")["epoch"] == 1
    _sound_sqlite(home / "mlflow.db")
    assert "RUNNING" not in {r.info.status for r in runs}
