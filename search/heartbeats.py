"""Heartbeats for trials that run outside `study.optimize` (a population's members).

Optuna beats one trial's heart per `optimize` loop; a population holds K trials at once, and
a shared study's other workers would take each silent one for a dead worker's and retry it.
One thread beats for all of them, at the storage's interval, until the block ends."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage


def hush_experimental_note() -> None:
    """Optuna calls its public `fail_stale_trials` experimental, once per process, on the
    user's terminal; `optimize` makes the same check before every trial without a word."""
    warnings.filterwarnings("ignore", message=".*fail_stale_trials", category=ExperimentalWarning)


hush_experimental_note()


def heartbeat_interval(storage: BaseStorage) -> int | None:
    """Seconds between beats; None where the storage keeps no heartbeat (journal files)."""
    get_interval = getattr(storage, "get_heartbeat_interval", None)
    if not callable(getattr(storage, "record_heartbeat", None)) or get_interval is None:
        return None
    interval: int | None = get_interval()
    return interval


def fail_stale_trials(study: optuna.Study) -> None:
    """What `optimize` does before each trial: other workers' dead trials are failed (and
    retried, by the storage's stale-trial callback)."""
    if heartbeat_interval(study._storage) is not None:  # the check `optimize` makes
        optuna.storages.fail_stale_trials(study)


@contextmanager
def beating(storage: BaseStorage, trial_ids: Sequence[int]) -> Iterator[None]:
    interval = heartbeat_interval(storage)
    if interval is None or not trial_ids:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in trial_ids:
                try:
                    storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
                except Exception as exc:  # a lost connection: the next beat tries again
                    logging.getLogger(__name__).warning("heartbeat of trial %s: %s", trial_id, exc)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="trial-heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
