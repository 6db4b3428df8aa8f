"""The embedded MLflow store read without importing MLflow, for the commands that only read.

`diagnose`, `promote` and `predict` read a run, its artifacts and an alias or two. Through
MLflow that costs about 2 s before the first row (importing MLflow, SQLAlchemy and alembic,
and opening the store checks its schema); SQLite itself answers in milliseconds. This reads
the same rows MLflow's SQLAlchemy store reads for those calls, from the home folder's
SQLite file and its local artifact folders, and nothing else: a server, another kind of
database, an MLflow workspace, or a schema this module does not know is read by MLflow
(`open_reader` returns None, or the call goes to the MLflow tracker). Every write goes to
that tracker too, made on first need, so a reader is a whole `Tracker`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tracking.base import RunView, Tracker
from tracking.local_artifacts import local_artifact_dir
from tracking.store import TrackingTarget, TrackingUnavailable

if TYPE_CHECKING:
    from torch import nn

    from tracking.mlflow_tracker import MlflowTracker

SQLITE_PREFIX = "sqlite:///"
# MLflow's registry keeps a deleted version as a row in this stage until it is purged.
DELETED_STAGE = "Deleted_Internal"
# MLflow's single-tenant workspace: every row of a store without workspaces has it.
DEFAULT_WORKSPACE = "default"
# Every column read below: a store whose schema lacks one is left to MLflow.
_SCHEMA = (
    "SELECT run_uuid, name, status, artifact_uri, experiment_id FROM runs",
    "SELECT key, value, run_uuid FROM tags",
    "SELECT key, value, run_uuid FROM params",
    "SELECT key, value, is_nan, run_uuid FROM latest_metrics",
    "SELECT name, alias, version, workspace FROM registered_model_aliases",
    "SELECT name, version, source, run_id, storage_location, current_stage, workspace"
    " FROM model_versions",
    "SELECT key, value, name, version, workspace FROM model_version_tags",
    "SELECT model_id, name, artifact_location, source_run_id, lifecycle_stage FROM logged_models",
)


@dataclass(frozen=True)
class VersionView:
    """A registered model version, as `promote` and `predict` read it."""

    name: str
    version: str
    source: str  # models:/m-ID for a version registered from a logged model
    run_id: str | None
    storage_location: str | None
    tags: dict[str, str]


@dataclass(frozen=True)
class LoggedModelView:
    model_id: str
    name: str
    artifact_location: str
    source_run_id: str | None


def open_reader(
    target: TrackingTarget, open_tracker: Callable[[], MlflowTracker]
) -> SqliteReader | None:
    """A reader of `target` when it is an existing SQLite store with the schema read here;
    else None (the caller uses MLflow). `open_tracker` makes the MLflow tracker that writes."""
    if not target.uri.startswith(SQLITE_PREFIX) or os.environ.get("MLFLOW_WORKSPACE"):
        return None
    path = Path(target.uri.removeprefix(SQLITE_PREFIX))
    if not path.is_file():
        return None  # MLflow creates the store; a reader never does
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=60)
        for query in _SCHEMA:
            db.execute(f"{query} LIMIT 0")
    except sqlite3.Error:
        return None
    return SqliteReader(target, db, open_tracker)


class SqliteReader(Tracker):
    """Reads runs, artifacts and the registry from SQLite; writes through MLflow."""

    def __init__(
        self,
        target: TrackingTarget,
        db: sqlite3.Connection,
        open_tracker: Callable[[], MlflowTracker],
    ) -> None:
        self.target, self.uri, self._db = target, target.uri, db
        self._open_tracker = open_tracker
        self._writer: MlflowTracker | None = None

    @property
    def writer(self) -> MlflowTracker:
        """The MLflow tracker of the same store (imports MLflow the first time)."""
        if self._writer is None:
            self._writer = self._open_tracker()
        return self._writer

    def _rows(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        if self._writer is not None:
            self._writer.flush()  # reads see this process's own writes, as MlflowTracker's do
        return self._db.execute(query, args).fetchall()

    # -- reads --------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunView:
        found = self._rows(
            "SELECT name, status, experiment_id FROM runs WHERE run_uuid = ?", run_id
        )
        if not found:
            raise TrackingUnavailable(f"run {run_id!r}: not found in {self.uri}")
        name, status, experiment_id = found[0]
        tags = self._pairs("SELECT key, value FROM tags WHERE run_uuid = ?", run_id)
        params = self._pairs("SELECT key, value FROM params WHERE run_uuid = ?", run_id)
        rows = self._rows(
            "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", run_id
        )
        # As MLflow stores them: NaN as 0 with is_nan set, infinities as +-1.8e308.
        metrics = {str(k): float("nan") if nan else float(v) for k, v, nan in rows}
        # As MLflow's SqlRun: an empty name column falls back to the run-name tag.
        shown = str(name or tags.get("mlflow.runName") or "")
        return RunView(run_id, shown, str(status), params, tags, metrics, str(experiment_id))

    def _pairs(self, query: str, run_id: str) -> dict[str, str]:
        return {str(k): "" if v is None else str(v) for k, v in self._rows(query, run_id)}

    def artifact_dir(self, run_id: str) -> Path | None:
        """The run's artifact folder when it is on this machine's disk, else None."""
        found = self._rows("SELECT artifact_uri FROM runs WHERE run_uuid = ?", run_id)
        return local_artifact_dir(str(found[0][0])) if found and found[0][0] else None

    def list_artifacts(self, run_id: str) -> list[str]:
        root = self.artifact_dir(run_id)
        if root is None:  # an unknown run, or artifacts elsewhere: MLflow says which
            return self.writer.list_artifacts(run_id)
        if not root.is_dir():
            return []
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def download_artifact(self, run_id: str, path: str, dest: Path) -> Path:
        root = self.artifact_dir(run_id)
        source = None if root is None or ".." in Path(path).parts else root / path
        if source is None or not source.is_file():
            return self.writer.download_artifact(run_id, path, dest)  # MLflow's own errors
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def run_ids_starting_with(self, prefix: str, limit: int = 10) -> list[str]:
        # prefix: lower-case hex digits only (Tracker.resolve_run_id checks it), so LIKE is safe
        rows = self._rows(
            "SELECT run_uuid FROM runs WHERE run_uuid LIKE ? ORDER BY run_uuid LIMIT ?",
            f"{prefix}%",
            limit,
        )
        return [str(row[0]) for row in rows]

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return self.writer.metric_history(run_id, key)

    def child_runs(self, parent_run_id: str) -> list[RunView]:
        return self.writer.child_runs(parent_run_id)

    # -- the registry -------------------------------------------------------------------

    def version_by_alias(self, name: str, alias: str) -> VersionView | None:
        """The version `name@alias` points at; None when there is no such model or alias."""
        found = self._rows(
            "SELECT version FROM registered_model_aliases"
            " WHERE name = ? AND alias = ? AND workspace = ?",
            name,
            alias,
            DEFAULT_WORKSPACE,
        )
        return self.model_version(name, str(found[0][0])) if found else None

    def model_version(self, name: str, version: str) -> VersionView | None:
        found = self._rows(
            "SELECT source, run_id, storage_location FROM model_versions"
            " WHERE name = ? AND version = ? AND workspace = ? AND current_stage != ?",
            name,
            version,
            DEFAULT_WORKSPACE,
            DELETED_STAGE,
        )
        if not found:
            return None
        source, run_id, storage = found[0]
        tags = self._rows(
            "SELECT key, value FROM model_version_tags"
            " WHERE name = ? AND version = ? AND workspace = ?",
            name,
            version,
            DEFAULT_WORKSPACE,
        )
        return VersionView(
            name,
            version,
            str(source or ""),
            None if run_id is None else str(run_id),
            None if storage is None else str(storage),
            {str(k): "" if v is None else str(v) for k, v in tags},
        )

    def logged_model(self, model_id: str) -> LoggedModelView | None:
        found = self._rows(
            "SELECT name, artifact_location, source_run_id FROM logged_models"
            " WHERE model_id = ? AND IFNULL(lifecycle_stage, '') != 'deleted'",
            model_id,
        )
        if not found:
            return None
        name, location, run_id = found[0]
        return LoggedModelView(
            model_id, str(name), str(location), None if run_id is None else str(run_id)
        )

    def logged_models_of_run(self, run_id: str, name: str) -> list[str]:
        rows = self._rows(
            "SELECT model_id FROM logged_models WHERE source_run_id = ? AND name = ?"
            " AND IFNULL(lifecycle_stage, '') != 'deleted'",
            run_id,
            name,
        )
        return [str(row[0]) for row in rows]

    # -- writes, through MLflow -----------------------------------------------------------

    def start_run(
        self,
        name: str,
        params: dict[str, object],
        tags: dict[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        return self.writer.start_run(name, params, tags, parent_run_id)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self.writer.log_metrics(run_id, metrics, step)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.writer.set_tags(run_id, tags)

    def log_artifact(self, run_id: str, local_path: Path, artifact_dir: str | None = None) -> None:
        self.writer.log_artifact(run_id, local_path, artifact_dir)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.writer.log_text(run_id, text, artifact_file)

    def log_model(self, run_id: str, scorer: nn.Module, name: str = "model") -> str:
        return self.writer.log_model(run_id, scorer, name)

    def reopen_run(self, run_id: str) -> None:
        self.writer.reopen_run(run_id)

    def end_run(self, run_id: str, status: str) -> None:
        self.writer.end_run(run_id, status)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def run_url(self, run_id: str) -> str | None:
        return None  # an embedded store has no UI address
