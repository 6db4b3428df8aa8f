"""Where a study lives: Optuna's own storages, chosen for how many processes write to it.

- one process: SQLite in the home folder (the default);
- several processes on one machine (--jobs N): a JournalStorage file, because SQLite is not
  safe for parallel writers;
- several machines: PostgreSQL (or any RDB URL) with pool_pre_ping, a heartbeat, and stale
  trials (a worker that died) retried with the same parameters.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial

from siamese.errors import SiameseInputError, clipped
from siamese.files import signals_deferred
from tracking.base import ERROR_TAG, FAILED, STATE_TAG

MAX_RETRY = 3
# Bytes of a journal's first line read to tell it is one (a record is a few hundred).
JOURNAL_LINE_PEEK = 1 << 20
# The tracker writes a trial's run id here; the stale-trial handler and `promote` read it.
RUN_ID_ATTR = "mlflow_run_id"
# A trial's checkpoint folder, recorded before it trains: its retry resumes from there.
CHECKPOINT_ATTR = "checkpoint_dir"


@dataclass(frozen=True)
class Heartbeat:
    """A worker that has not beaten its heart for `grace_s` seconds is dead; its trial is
    retried. Tests shorten both through the environment, read when a storage opens."""

    interval_s: int = 30
    grace_s: int = 120

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Heartbeat:
        interval = int(environ.get("SIAMESE_LAB_HEARTBEAT_S", "30"))
        return cls(interval, int(environ.get("SIAMESE_LAB_GRACE_S", str(4 * interval))))


class StaleTrialHandler:
    """Runs when a worker stopped beating its heart: closes the dead trial's MLflow run (so
    nothing stays RUNNING) and queues a retry with the same parameters (up to MAX_RETRY
    times in a row). The retry inherits the trial's checkpoint folder and resumes from there."""

    def __init__(self, tracker: Any = None) -> None:
        self.tracker = tracker
        with quiet_optuna():
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if self.tracker is not None and run_id:
            error = "worker died (no heartbeat); trial retried"
            try:
                self.tracker.set_tags(run_id, {ERROR_TAG: error, STATE_TAG: "FAIL"})
                self.tracker.end_run(run_id, FAILED)
            except Exception as exc:  # the retry matters more than the bookkeeping
                logging.getLogger(__name__).warning("could not close run %s: %s", run_id, exc)
        from search.recovery import retry_attrs  # (it imports this module)

        # Optuna's retry copies every user attribute: not the dead trial's owner, run or
        # outcome, and it says which trial it repeats (recover_orphans then sees it).
        repeated = copy.copy(trial)
        repeated.user_attrs = retry_attrs(trial)
        self.retry(study, repeated)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """The heartbeat is "experimental" in Optuna 5 but is what makes dead workers' trials
    retry; Optuna's own INFO lines would interleave with the progress lines."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


def check_storage_url(url: str) -> None:
    """A storage URL that cannot hold a study is bad input, said before anything is made."""
    if url.startswith("journal:"):
        given = url.removeprefix("journal:")
        if not given.strip() or Path(given).is_dir():
            raise SiameseInputError(f"--storage {url!r}: expected journal:PATH of a file")
        _check_folder_exists(url, Path(given))
        return
    if "://" not in url:
        raise SiameseInputError(
            f"--storage {url!r}: expected journal:PATH, sqlite:///PATH or postgresql://..."
        )
    if url.startswith("sqlite") and url.partition("://")[2].strip("/") in ("", ":memory:"):
        # An in-memory database: the study would end with the process, its trials unseen.
        raise SiameseInputError(f"--storage {url!r}: expected sqlite:///PATH of a file")
    file = _sqlite_file(url)
    if file is not None:
        _check_folder_exists(url, file)


def _check_folder_exists(url: str, file: Path) -> None:
    """A storage file goes into an existing folder: a typo in its path is said, not made
    (SQLite makes the file and not its folder; Optuna's journal made both)."""
    if not file.parent.is_dir():
        raise SiameseInputError(
            f"--storage {url}: no folder {file.parent} to hold it; expected an existing folder"
        )


def _sqlite_file(url: str) -> Path | None:
    """The file of a sqlite:///PATH URL (its ?query is no part of the name); None otherwise."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///").partition("?")[0])


def _check_is_journal(url: str, path: Path) -> None:
    """An existing file that is not an Optuna journal (notes, a CSV) is one line: Optuna
    failed on it with a JSONDecodeError traceback (and would append its records to it)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(JOURNAL_LINE_PEEK)
    except (FileNotFoundError, IsADirectoryError):
        return  # a new journal; a folder is refused by check_storage_url
    except OSError as exc:
        raise SiameseInputError(f"--storage {url}: cannot read ({exc.strerror or exc})") from exc
    if not first.strip():
        return  # empty: a journal nothing was written to yet
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise SiameseInputError(
            f"--storage {url}: not an Optuna journal (its first line is no journal record); "
            "expected a journal file that `siamese-lab search` created, or a new file name"
        )


class WholeAppendJournal(JournalFileBackend):
    """Optuna's journal file, each append done whole: Ctrl-C or SIGTERM during one is acted
    on once it ends. Raised inside the append's lock release (between renaming the lock
    file and removing it), KeyboardInterrupt became Optuna's FileNotFoundError traceback,
    and the trial failed with that instead of stopping as interrupted."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with signals_deferred():
            super().append_logs(logs)


def open_storage(url: str, stale_callback: StaleTrialHandler | None = None) -> BaseStorage:
    """`journal:PATH`, or an SQLAlchemy URL (sqlite:///..., postgresql://...)."""
    check_storage_url(url)
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        _check_is_journal(url, path)
        return JournalStorage(WholeAppendJournal(str(path)))
    callback = stale_callback or StaleTrialHandler()
    beat = Heartbeat.from_environ(os.environ)
    # pool_pre_ping: a connection the server closed while a trial trained is replaced, not
    # handed out broken.
    remote = not url.startswith("sqlite")
    engine = {"pool_pre_ping": True} if remote else {"connect_args": {"timeout": 60}}
    try:
        with quiet_optuna():
            return RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=beat.interval_s,
                grace_period=beat.grace_s,
                heartbeat_stale_trial_callback=callback,
            )
    except Exception as exc:  # SQLAlchemy raises many kinds; all mean "cannot use this URL"
        first = (
            clipped(str(exc).strip().splitlines()[0], 200)
            if str(exc).strip()
            else type(exc).__name__
        )
        raise SiameseInputError(f"--storage {url}: cannot open ({first})") from exc


def study_exists(storage: BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def study_names(storage: BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


def exists_on_disk(url: str) -> bool:
    """A home storage that was never created holds no study; opening it would create it."""
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:")).exists()
    file = _sqlite_file(url)
    return file.exists() if file is not None else True


def find_study(name: str, candidates: tuple[str, ...]) -> tuple[optuna.Study, str]:
    """The study of that name in the first storage holding it, and that storage's URL."""
    for url in candidates:
        if not exists_on_disk(url):
            continue
        opened = open_storage(url)
        if study_exists(opened, name):
            return optuna.load_study(study_name=name, storage=opened), url
    raise SiameseInputError(f"--study {name!r}: not found in {', '.join(candidates)}")
