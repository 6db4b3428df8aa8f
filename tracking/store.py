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

DEFAULT_EXPERIMENT = "siamese-lab"
# Seconds and retries for one HTTP call to a tracking server (MLflow: 120 s, 7 retries).
HTTP_TIMEOUT_S = "10"
HTTP_MAX_RETRIES = "1"


class TrackingUnavailable(SiameseInputError):
    """The tracking server could not be reached; the message names the URI."""


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    artifact_root: str | None  # only for the embedded store
    experiment: str = DEFAULT_EXPERIMENT

    @property
    def is_http(self) -> bool:
        return self.uri.startswith(("http://", "https://"))


def embedded_target(home: Path, experiment: str = DEFAULT_EXPERIMENT) -> TrackingTarget:
    home = home.resolve()
    return TrackingTarget(
        f"sqlite:///{home / 'mlflow.db'}", (home / "mlartifacts").as_uri(), experiment
    )


def resolve_target(
    home: Path, tracking_uri: str | None, experiment: str = DEFAULT_EXPERIMENT
) -> TrackingTarget:
    """A given URI (a server, another store), else the embedded store in the home folder.
    The caller resolves flags and environment variables (search.env.LabEnv), once."""
    if tracking_uri:
        return TrackingTarget(tracking_uri, None, experiment)
    return embedded_target(home, experiment)


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
