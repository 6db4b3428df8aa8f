"""Ctrl-C at the exact points where it used to leave a run RUNNING or FAILED, or print a
traceback (issue 9 item 7), each hit on purpose: a real SIGINT sent from inside a tracker
call, or the KeyboardInterrupt the signal raises there. tests/faults/test_interrupts.py
does the same from outside, with real timing."""

from __future__ import annotations

import io
import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import pytest
from rich.console import Console

from search.progress import Progress
from siamese import DataConfig, PairData, TrainConfig, fit
from siamese.errors import ConfigError, DiskFullError
from siamese.train import Callback
from tracking import FAILED, KILLED, InMemoryTracker, TrackingCallback, tracked_run
from tracking.base import ERROR_TAG, FINISHED

CONFIG = TrainConfig(epochs=1, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192))
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@pytest.fixture(autouse=True)
def ctrl_c_raises() -> Iterator[None]:
    """Python's own Ctrl-C handler, whatever pytest was started with (a shell starts
    background jobs with SIGINT ignored)."""
    previous: Handler = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


class CtrlCDuring(InMemoryTracker):
    """Sends itself SIGINT the first time `method` is called (after the call starts)."""

    def __init__(self, method: str, raise_instead: bool = False) -> None:
        super().__init__()
        self.method, self.raise_instead, self.sent = method, raise_instead, False

    def _maybe(self, method: str) -> None:
        if method == self.method and not self.sent:
            self.sent = True
            if self.raise_instead:
                raise KeyboardInterrupt  # what the signal raises in the middle of the call
            ctrl_c()

    def log_artifact(self, run_id: str, local_path: Path, artifact_dir: str | None = None) -> None:
        self._maybe("log_artifact")
        super().log_artifact(run_id, local_path, artifact_dir)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._maybe("log_text")
        super().log_text(run_id, text, artifact_file)

    def end_run(self, run_id: str, status: str = FINISHED) -> None:
        self._maybe("end_run")
        super().end_run(run_id, status)

    def start_run(
        self,
        name: str,
        params: dict[str, object],
        tags: dict[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        run_id = super().start_run(name, params, tags, parent_run_id)  # the store has it
        self._maybe("start_run")
        return run_id


def test_ctrl_c_while_a_run_writes_its_record_lands_after_it(
    tmp_path: Path, small_data: PairData
) -> None:
    """The first artifact is the checkpoints; curves (matplotlib's import), diagnosis and
    history follow: all are written, then the run stops KILLED."""
    tracker = CtrlCDuring("log_artifact")
    with pytest.raises(KeyboardInterrupt), tracked_run(tracker, "t", CONFIG, "cpu") as run_id:
        fit(CONFIG, small_data, [TrackingCallback(tracker, run_id)], checkpoint_dir=tmp_path)
    assert tracker.sent and tracker.get_run(run_id).status == KILLED
    written = tracker.list_artifacts(run_id)
    for name in ("curves.png", "diagnosis.txt", "diagnosis.json", "history.json"):
        assert name in written, written
    assert "diagnosis.verdict" in tracker.get_run(run_id).tags


class Reported(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_checkpoint(self, path: Path, kind: str, epoch: int) -> None:
        self.seen.append((kind, epoch))


def test_ctrl_c_while_a_checkpoint_is_written_lands_after_it_is_reported(
    tmp_path: Path, small_data: PairData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else tracking never hears of the file, and the KILLED run lacks its checkpoint."""
    real_fsync = os.fsync

    def fsync_then_ctrl_c(fd: int) -> None:
        real_fsync(fd)
        monkeypatch.undo()
        ctrl_c()

    monkeypatch.setattr(os, "fsync", fsync_then_ctrl_c)
    reported = Reported()
    with pytest.raises(KeyboardInterrupt):
        fit(CONFIG, small_data, [reported], checkpoint_dir=tmp_path)
    assert reported.seen == [("last", 1), ("best", 1)]


def test_an_error_raised_while_stopping_after_ctrl_c_still_ends_the_run_killed() -> None:
    """The issue's case: Ctrl-C cut matplotlib's import short, and the next import, in the
    cleanup, failed with KeyError: 'Collection:kwdoc'."""
    tracker = InMemoryTracker()
    with pytest.raises(KeyboardInterrupt), tracked_run(tracker, "t", CONFIG, "cpu") as run_id:
        try:
            raise KeyboardInterrupt
        finally:
            raise KeyError("Collection:kwdoc")
    run = tracker.get_run(run_id)
    assert run.status == KILLED
    assert run.tags[ERROR_TAG] == "interrupted; then, while stopping: KeyError: 'Collection:kwdoc'"


def test_ctrl_c_while_a_failure_is_recorded_ends_the_run_killed() -> None:
    tracker = CtrlCDuring("log_text", raise_instead=True)  # error.txt is being written
    with pytest.raises(KeyboardInterrupt), tracked_run(tracker, "t", CONFIG, "cpu") as run_id:
        raise RuntimeError("out of memory")
    assert tracker.sent and tracker.get_run(run_id).status == KILLED


@pytest.mark.parametrize("ends", ["well", "in an error"])
def test_ctrl_c_while_the_status_is_written_ends_the_run_killed(ends: str) -> None:
    tracker = CtrlCDuring("end_run")
    with pytest.raises(KeyboardInterrupt), tracked_run(tracker, "t", CONFIG, "cpu") as run_id:
        if ends != "well":
            raise RuntimeError("boom")
    assert tracker.sent and tracker.get_run(run_id).status == KILLED


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_just_after_the_store_made_the_run_ends_it_killed(signum: int) -> None:
    """Ctrl-C or SIGTERM between the store making the run and the code that ends it: held
    until the run's id is known, then raised, and the run ends KILLED (it stayed RUNNING)."""
    tracker = CtrlCDuring("start_run")
    tracker._maybe = lambda method: _send_once(tracker, method, signum)  # type: ignore[method-assign]
    body_ran = False
    with pytest.raises(KeyboardInterrupt), tracked_run(tracker, "t", CONFIG, "cpu"):
        body_ran = True
    assert tracker.sent and not body_ran
    ((run_id, run),) = tracker.runs.items()
    assert run.status == KILLED, run_id


def _send_once(tracker: CtrlCDuring, method: str, signum: int) -> None:
    if method == tracker.method and not tracker.sent:
        tracker.sent = True
        os.kill(os.getpid(), signum)


def test_an_error_alone_still_ends_the_run_failed() -> None:
    tracker = InMemoryTracker()
    with pytest.raises(DiskFullError), tracked_run(tracker, "t", CONFIG, "cpu") as run_id:
        raise DiskFullError("no space left on the device holding /x while writing last.pt")
    run = tracker.get_run(run_id)
    assert run.status == FAILED
    assert run.tags[ERROR_TAG] == (
        "DiskFullError: no space left on the device holding /x while writing last.pt"
    )


def _optimize(error: BaseException) -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        raise error

    Progress(Console(file=io.StringIO()), total=1)  # a search shows its progress
    study = optuna.create_study()
    study.optimize(objective, n_trials=1, catch=(Exception,))


def _trial_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("Trial 0 failed")]


def test_optuna_says_nothing_of_a_ctrl_c(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(KeyboardInterrupt):
        _optimize(KeyboardInterrupt())
    assert not _trial_lines(caplog)


def test_optuna_says_a_one_line_error_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    _optimize(ConfigError("--lr: expected a positive finite number, got -1.0"))
    failed, value = _trial_lines(caplog)
    assert "ConfigError('--lr: expected" in failed.getMessage() and failed.exc_info is None
    assert value.getMessage() == "Trial 0 failed with value None."


def test_optuna_says_nothing_of_a_full_disk_the_search_ends_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _optimize(DiskFullError("no space left on the device holding /x while writing last.pt"))
    assert not _trial_lines(caplog)


def test_optuna_keeps_the_traceback_of_an_unexpected_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _optimize(ZeroDivisionError("a bug"))
    failed, _ = _trial_lines(caplog)
    assert failed.exc_info is not None


def test_a_run_inside_an_except_block_that_ends_well_is_finished() -> None:
    tracker = InMemoryTracker()
    try:
        raise ValueError("handled by the caller")
    except ValueError:
        with tracked_run(tracker, "t", CONFIG, "cpu") as run_id:
            pass
    assert tracker.get_run(run_id).status == FINISHED


def test_ctrl_c_inside_a_journal_append_lands_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised inside the append's lock release, it became Optuna's FileNotFoundError
    traceback and a failed trial; here the record is whole and the lock let go first."""
    from optuna.storages.journal import JournalFileSymlinkLock

    from search.storage import open_storage

    url = f"journal:{tmp_path / 'j.log'}"
    trial = optuna.create_study(study_name="s", storage=open_storage(url)).ask()
    real_release = JournalFileSymlinkLock.release

    def release_after_ctrl_c(self: JournalFileSymlinkLock) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # lands here, while the lock is held
        real_release(self)

    monkeypatch.setattr(JournalFileSymlinkLock, "release", release_after_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trial.set_user_attr("epoch", 2)
    monkeypatch.setattr(JournalFileSymlinkLock, "release", real_release)
    assert not (tmp_path / "j.log.lock").exists()  # let go: the next append does not wait
    again = optuna.load_study(study_name="s", storage=open_storage(url))
    assert again.trials[0].user_attrs == {"epoch": 2}
