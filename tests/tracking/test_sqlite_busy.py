"""A write the SQLite store refuses as locked is tried again (tracking.sqlite_busy): many
`--jobs` workers on one embedded store lost records to "database is locked"."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import mlflow
import pytest
import sqlalchemy
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from tracking import embedded_target
from tracking.mlflow_tracker import MlflowTracker
from tracking.sqlite_busy import BACKOFF_S, MLFLOW_DB_LOGGER, is_locked, retried


def refusal() -> MlflowException:
    """What MLflow raises for SQLite's refusal: its exception over SQLAlchemy's over sqlite3's."""
    driver = sqlite3.OperationalError("database is locked")
    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO metrics ...", {}, driver)
    error = MlflowException(message=str(wrapped), error_code=TEMPORARILY_UNAVAILABLE)
    error.__cause__ = wrapped
    return error


class Flaky:
    """Refuses `times` calls as locked, then does `then`."""

    def __init__(self, times: int, then: object = None, error: Exception | None = None) -> None:
        self.calls, self.times, self.then, self.error = 0, times, then, error or refusal()

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return self.then(*args, **kwargs) if callable(self.then) else self.then


def test_a_refused_write_is_tried_again_until_it_lands() -> None:
    waits: list[float] = []
    flaky = Flaky(3, then="written")
    assert retried(flaky, sleep=waits.append) == "written"
    assert flaky.calls == 4 and waits == list(BACKOFF_S[:3])


def test_other_errors_and_a_lock_that_never_clears_are_raised() -> None:
    other = Flaky(1, error=MlflowException("RESOURCE_DOES_NOT_EXIST: no run"))
    with pytest.raises(MlflowException, match="no run"):
        retried(other, sleep=lambda _: None)
    assert other.calls == 1
    stuck = Flaky(100)
    with pytest.raises(MlflowException, match="database is locked"):
        retried(stuck, sleep=lambda _: None)
    assert stuck.calls == len(BACKOFF_S) + 1


def test_the_refusal_is_recognised_through_the_exception_chain() -> None:
    assert is_locked(refusal()) and is_locked(sqlite3.OperationalError("database is locked"))
    try:
        raise RuntimeError("wrapped") from refusal()
    except RuntimeError as chained:
        assert is_locked(chained)
    assert not is_locked(MlflowException("database disk image is malformed"))


def test_a_tracker_loses_no_record_to_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = MlflowTracker(embedded_target(tmp_path / "home"))
    monkeypatch.setattr("tracking.sqlite_busy.BACKOFF_S", (0.01, 0.01, 0.01))
    client = tracker.client
    monkeypatch.setattr(client, "create_run", Flaky(2, then=client.create_run))
    monkeypatch.setattr(client, "log_batch", Flaky(2, then=client.log_batch))
    run_id = tracker.start_run("r", {"lr": 0.1}, {})
    tracker.log_metrics(run_id, {"train_loss": 0.5}, step=1)
    tracker.flush()
    stored = mlflow.MlflowClient(tracker.uri).get_run(run_id)
    assert stored.data.params == {"lr": "0.1"}
    assert tracker.metric_history(run_id, "train_loss") == [(1, 0.5)]
    # MLflow's own traceback for a refusal is not printed (the write is tried again).
    logger = logging.getLogger(MLFLOW_DB_LOGGER)
    with caplog.at_level(logging.ERROR, logger=MLFLOW_DB_LOGGER):
        for error in (refusal(), MlflowException("database disk image is malformed")):
            try:
                raise error
            except MlflowException:
                logger.exception("SQLAlchemy database error. The following exception is caught.")
    assert [str(r.exc_info[1]) for r in caplog.records if r.exc_info] == [
        "database disk image is malformed"
    ]
