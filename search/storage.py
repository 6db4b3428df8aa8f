"""Where a study lives: Optuna's own storages, chosen for how many processes write to it.

- one process: SQLite in the home folder (the default);
- several processes on one machine (--jobs N): a JournalStorage file, because SQLite is not
  safe for parallel writers;
- several machines: PostgreSQL (or any RDB URL) with pool_pre_ping, a heartbeat, and stale
  trials (a worker that died) retried with the same parameters.
"""

from __future__ import annotations

import logging
import os
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

from siamese.errors import SiameseInputError

# A worker that has not beaten its heart for GRACE seconds is dead; its trial is retried.
HEARTBEAT_S = int(os.environ.get("SIAMESE_LAB_HEARTBEAT_S", "30"))
GRACE_S = int(os.environ.get("SIAMESE_LAB_GRACE_S", str(4 * HEARTBEAT_S)))
MAX_RETRY = 3


class StaleTrialHandler:
    """Runs when a worker stopped beating its heart: closes the dead trial's MLflow run (so
    nothing stays RUNNING) and queues a retry with the same parameters. The retry inherits
    the trial's user attributes, its checkpoint folder among them, and resumes from there."""

    def __init__(self, tracker: Any = None) -> None:
        self.tracker = tracker
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if self.tracker is not None and run_id:
            try:
                self.tracker.set_tags(run_id, {"siamese_lab.error": "worker died (no heartbeat); trial retried",
                                               "optuna.state": "FAIL"})  # fmt: skip
                self.tracker.end_run(run_id, "FAILED")
            except Exception as exc:  # the retry matters more than the bookkeeping
                logging.getLogger(__name__).warning("could not close run %s: %s", run_id, exc)
        self.retry(study, trial)


def default_storage_url(home: Path, jobs: int) -> str:
    if jobs > 1:
        return f"journal:{home.resolve() / 'optuna-journal.log'}"
    return f"sqlite:///{home.resolve() / 'optuna.db'}"


def open_storage(url: str, stale_callback: StaleTrialHandler | None = None) -> BaseStorage:
    """`journal:PATH`, or an SQLAlchemy URL (sqlite:///..., postgresql://...)."""
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise SiameseInputError(
            f"--storage {url!r}: expected journal:PATH, sqlite:///PATH or postgresql://..."
        )
    callback = stale_callback or StaleTrialHandler()
    remote = not url.startswith("sqlite")
    try:
        return RDBStorage(
            url,
            # pool_pre_ping: a connection the server closed while a trial trained is replaced,
            # not handed out broken.
            engine_kwargs={"pool_pre_ping": True} if remote else {"connect_args": {"timeout": 60}},
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=callback,
        )
    except Exception as exc:  # SQLAlchemy raises many kinds; all mean "cannot use this URL"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise SiameseInputError(f"--storage {url}: cannot open ({first})") from exc


def study_exists(storage: BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def load_existing_study(storage: BaseStorage, name: str, url: str) -> optuna.Study:
    if not study_exists(storage, name):
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise SiameseInputError(
            f"--study {name!r}: no such study in {url}; found {names or 'none'}"
        )
    return optuna.load_study(study_name=name, storage=storage)
