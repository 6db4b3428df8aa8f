"""Where tracking goes: the embedded SQLite store in the home folder, or a server.

MLflow creates its SQLite schema on first contact and that setup races when several
processes start at once (a search with --jobs 4 on a fresh home), so the first contact is
serialised with a file lock. HTTP servers get bounded retries: MLflow's defaults can block
one call for minutes when a server is down.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from siamese.errors import SiameseInputError
from tracking.fresh_store import sqlite_path

DEFAULT_EXPERIMENT = "siamese-lab"
# Seconds and retries for one HTTP call to a tracking server (MLflow: 120 s, 7 retries).
HTTP_TIMEOUT_S = "10"
HTTP_MAX_RETRIES = "1"


class TrackingUnavailable(SiameseInputError):
    """The tracking server could not be reached; the message names the URI."""


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    # Where new experiments keep their artifacts: the home's folder for the embedded store,
    # one beside the database for another SQLite file; None: the server's own.
    artifact_root: str | None
    experiment: str = DEFAULT_EXPERIMENT
    embedded: bool = False  # the home's own store: every artifact in the home

    @property
    def is_http(self) -> bool:
        return self.uri.startswith(("http://", "https://"))


def embedded_target(home: Path, experiment: str = DEFAULT_EXPERIMENT) -> TrackingTarget:
    home = home.resolve()
    return TrackingTarget(
        f"sqlite:///{home / 'mlflow.db'}", (home / "mlartifacts").as_uri(), experiment, True
    )


def resolve_target(
    home: Path, tracking_uri: str | None, experiment: str = DEFAULT_EXPERIMENT
) -> TrackingTarget:
    """A given URI (a server, another store), else the embedded store in the home folder.
    The caller resolves flags and environment variables (search.env.LabEnv), once."""
    if tracking_uri:
        check_tracking_uri(tracking_uri)
        return TrackingTarget(tracking_uri, _beside_database(tracking_uri), experiment)
    return embedded_target(home, experiment)


def _beside_database(uri: str) -> str | None:
    """`mlartifacts` beside a `sqlite:///PATH` store's file: MLflow's default, ./mlruns under
    whatever folder a process runs in, scattered a shared store's checkpoints over the
    folders its commands ran from. None for a server (its own root) or another database."""
    store = sqlite_path(uri)
    return None if store is None else (store.resolve().parent / "mlartifacts").as_uri()


# What MLflow can track to besides a server (http, https): its SQLAlchemy stores, Databricks.
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
OTHER_SCHEMES = ("http", "https", "databricks", "databricks-uc")
EXPECTED_URI = (
    "expected http(s)://HOST:PORT of an MLflow server, sqlite:///PATH of a file, "
    "or a database URL (postgresql://..., mysql://...)"
)


def check_tracking_uri(uri: str) -> None:
    """A URI MLflow cannot keep runs at is one line, before anything is made or trained:
    an unknown scheme and MLflow 3's file store (`file:`, in maintenance) ended in MLflow's
    traceback, and an in-memory SQLite store in tracebacks after the whole training (its
    tables gone with the first connection), with its artifacts in ./mlruns."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    where = f"--tracking-uri/MLFLOW_TRACKING_URI {uri}"
    if scheme == "file" or (scheme == "" and uri):
        raise SiameseInputError(
            f"{where}: MLflow's file store is in maintenance mode and not supported; {EXPECTED_URI}"
        )
    if scheme not in DATABASE_SCHEMES + OTHER_SCHEMES:
        raise SiameseInputError(f"{where}: not a tracking URI MLflow knows; {EXPECTED_URI}")
    database = uri.split(":", 1)[1].split("?", 1)[0].lstrip("/")
    if scheme == "sqlite" and database in ("", ":memory:"):
        raise SiameseInputError(
            f"{where}: an in-memory store keeps nothing once the process ends; {EXPECTED_URI}"
        )


def check_store_folder(uri: str) -> None:
    """The user's sqlite:///PATH store is a file in an existing folder: a typo is said, not
    made (SQLAlchemy makes the file, MLflow made the folder). Not for a URI a study recorded:
    its folder may be on another machine, which the worker's own check says better."""
    store = sqlite_path(uri)
    if store is None:
        return
    where = f"--tracking-uri/MLFLOW_TRACKING_URI {uri}"
    if store.is_dir():  # SQLite's "unable to open" traceback otherwise
        raise SiameseInputError(f"{where}: {store} is a folder; expected the path of a file")
    if not store.parent.is_dir():
        raise SiameseInputError(
            f"{where}: no folder {store.parent} to hold it; expected an existing folder"
        )


def bound_http_retries() -> None:
    """Applies before MLflow's first request; the user's own settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_MAX_RETRIES)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


@contextmanager
def store_lock(target: TrackingTarget) -> Iterator[None]:
    """An exclusive lock next to an embedded SQLite store; nothing for servers."""
    if not target.uri.startswith("sqlite:///"):
        yield
        return
    db_path = Path(target.uri.removeprefix("sqlite:///"))
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with open(db_path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
