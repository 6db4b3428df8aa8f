"""Writes that a SQLite store refused as locked, tried again.

Many processes on one embedded store (`search --jobs N` with N well above the cores) meet
SQLite's "database is locked": MLflow waits 20 s for a lock (busy_timeout), but a
transaction that read first and then writes gets the refusal at once when another holds the
lock (SQLite will not wait there: it could deadlock). MLflow then prints the traceback,
rolls the transaction back and raises; a record the tracker gave up on was lost (2 trials'
records at `--jobs 20`). A refused transaction changed nothing, so it is tried again, a few
times over some seconds, and MLflow's traceback for it is not printed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")

LOCKED = "database is locked"
# Seconds between tries: about 6 s in all, on top of each try's own wait for the lock.
BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
# Where MLflow logs the refused transaction with its traceback (mlflow.store.db.utils).
MLFLOW_DB_LOGGER = "mlflow.store.db.utils"


def is_locked(exc: BaseException) -> bool:
    """Whether `exc` (MLflow's, or the driver's under it) is SQLite's lock refusal."""
    seen: BaseException | None = exc
    while seen is not None:
        if LOCKED in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def retried(call: Callable[[], _T], sleep: Callable[[float], None] = time.sleep) -> _T:
    """`call()`, tried again after each lock refusal while BACKOFF_S lasts."""
    for delay in BACKOFF_S:
        try:
            return call()
        except Exception as exc:
            if not is_locked(exc):
                raise
        sleep(delay)
    return call()


class _RetriedRefusals(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not is_locked(error)


def quiet_retried_refusals() -> None:
    """MLflow's traceback for a lock refusal is not printed: the write is tried again (and
    one that still fails is said in one line by the caller)."""
    logger = logging.getLogger(MLFLOW_DB_LOGGER)
    if not any(isinstance(f, _RetriedRefusals) for f in logger.filters):
        logger.addFilter(_RetriedRefusals())
