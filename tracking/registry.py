"""Promotion to the MLflow model registry: aliases (not the deprecated stages), a gate that
refuses failed runs, and a challenger rule so a worse model never takes `champion` by accident.

The gate and the rule only read (the run, the alias's holder): from a `SqliteReader` they
cost no MLflow import; MLflow is imported when a version is registered.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from siamese.errors import SiameseInputError
from siamese.names import check_name
from tracking.base import MODEL_URI_TAG, STOP_REASON_TAG, RunView, Tracker
from tracking.sqlite_reader import SqliteReader

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker

SELECTION_METRIC = "best_val_auc"
BEST_CHECKPOINT = "checkpoints/best.pt"
NO_MODEL = "no logged model; it was trained with tracking off or did not complete"


class PromotionRefused(SiameseInputError):
    """The run may not be promoted; the message says why."""


@dataclass(frozen=True)
class Promotion:
    name: str
    alias: str
    version: str | None  # None when the challenger did not beat the holder
    run_id: str
    metric: float
    holder_version: str | None
    holder_metric: float | None
    promoted: bool
    message: str


@dataclass(frozen=True)
class _Holder:
    version: str
    metric: float
    source_run_id: str | None


def _holder(tracker: Tracker, name: str, alias: str) -> _Holder | None:
    # "latest" is MLflow's reserved alias for the newest version: MLflow's own rule answers.
    if isinstance(tracker, SqliteReader) and alias.lower() != "latest":
        found = tracker.version_by_alias(name, alias)
        if found is None:
            return None  # no such model or alias yet
        tags, version, run_id = found.tags, found.version, found.run_id
    else:
        import mlflow

        try:
            held = _writer(tracker).client.get_model_version_by_alias(name, alias)
        except mlflow.exceptions.MlflowException:
            return None  # no such model or alias yet
        tags, version, run_id = held.tags, str(held.version), held.run_id
    source = tags.get("source_run_id") or run_id
    return _Holder(version, float(tags.get(SELECTION_METRIC, "nan")), source)


def _model_from_checkpoint(tracker: Tracker, run_id: str, run: RunView) -> str:
    """The model of a converged, completed run that has none logged, exported now from the
    best.pt the run keeps. A search exports its best trial's model when it ends: killed
    before that (kill -9, a lost machine), its best trial has the checkpoint but no model."""
    if run.tags.get(STOP_REASON_TAG) != "completed" or BEST_CHECKPOINT not in (
        tracker.list_artifacts(run_id)
    ):
        raise PromotionRefused(f"run {run_id}: {NO_MODEL}")
    writer = _writer(tracker)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = tracker.download_artifact(run_id, BEST_CHECKPOINT, Path(tmp))
        uri = writer.log_checkpoint_model(run_id, checkpoint)
    writer.flush()  # the run's new tag lands before the command says it is promoted
    return uri


def _writer(tracker: Tracker) -> MlflowTracker:
    """The MLflow tracker that registers: a reader's, or the tracker itself."""
    return tracker.writer if isinstance(tracker, SqliteReader) else cast("MlflowTracker", tracker)


def _not_promoted(run_id: str, name: str, alias: str, metric: float, holder: _Holder) -> Promotion:
    if holder.source_run_id == run_id:
        message = (
            f"not promoted: run {run_id} already is {name}@{alias} (version {holder.version}, "
            f"{SELECTION_METRIC} {metric:.4f}); nothing to do"
        )
    else:
        message = (
            f"not promoted: {name}@{alias} is version {holder.version} with {SELECTION_METRIC} "
            f"{holder.metric:.4f}, which this run ({metric:.4f}) does not beat; use --force to "
            "promote anyway"
        )
    return Promotion(
        name, alias, None, run_id, metric, holder.version, holder.metric, False, message
    )


def _lineage_tags(
    run_id: str, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str]
) -> dict[str, str]:
    return {
        "source_run_id": run_id,
        SELECTION_METRIC: str(metrics[SELECTION_METRIC]),
        "val_metrics": json.dumps(
            {k: v for k, v in metrics.items() if k.startswith(("val_", "best_"))}
        ),
        "params": json.dumps(params, sort_keys=True)[:4000],
        "diagnosis": tags.get("diagnosis.label", ""),
    }


def promote(
    tracker: Tracker, run_id: str, name: str, alias: str = "champion", force: bool = False
) -> Promotion:
    """Registers `run_id`'s model as a new version of `name` and points `alias` at it, if
    the run converged and beats the holder (or `force`). `tracker`: an MlflowTracker, or a
    SqliteReader of an embedded store (it reads without MLflow, registers through it)."""
    check_name("--name", name)
    run = tracker.get_run(run_id)
    verdict = run.tags.get("diagnosis.verdict")
    if verdict != "converged":
        label = run.tags.get("diagnosis.label", "no diagnosis")
        raise PromotionRefused(
            f"run {run_id}: diagnosis is {label!r}; only a converged run can be promoted"
        )
    if SELECTION_METRIC not in run.metrics:
        raise PromotionRefused(f"run {run_id}: {NO_MODEL}")
    model_uri = run.tags.get(MODEL_URI_TAG) or _model_from_checkpoint(tracker, run_id, run)
    metric = run.metrics[SELECTION_METRIC]
    holder = _holder(tracker, name, alias)
    # The holder itself is never registered again, --force or not: it would only add a copy.
    if holder is not None and (
        holder.source_run_id == run_id or not (force or metric > holder.metric)
    ):
        return _not_promoted(run_id, name, alias, metric, holder)
    lineage = _lineage_tags(run_id, run.params, run.metrics, run.tags)
    import mlflow

    writer = _writer(tracker)
    # MLflow prints "Successfully registered..." on stderr; the CLI says it in its own words.
    with writer.using_store(), contextlib.redirect_stderr(io.StringIO()):
        version = mlflow.register_model(model_uri, name, tags=lineage)
    writer.client.set_registered_model_alias(name, alias, version.version)
    return Promotion(
        name,
        alias,
        str(version.version),
        run_id,
        metric,
        holder.version if holder else None,
        holder.metric if holder else None,
        True,
        f"promoted: {name} version {version.version} is now @{alias} ({SELECTION_METRIC} {metric:.4f})",
    )
