"""The MLflow experiment a tracker writes to: found or made, and kept in its home."""

from __future__ import annotations

import warnings
from pathlib import Path

from siamese.errors import SiameseInputError, clipped
from tracking.fresh_store import sqlite_path
from tracking.store import TrackingTarget, TrackingUnavailable

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mlflow

# MLflow 3 opens an experiment on its GenAI overview unless this tag says the experiment is
# model development; then it opens on the runs, which is where trials are.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
# The experiment MLflow makes in every new store (id 0).
MLFLOW_DEFAULT = "Default"


def experiment_id(client: mlflow.MlflowClient, target: TrackingTarget) -> str:
    """The id of `target.experiment`, made (opening on its runs) when it does not exist."""
    try:
        found = client.get_experiment_by_name(target.experiment)
        if found is None:
            kind = {EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT}
            return str(client.create_experiment(target.experiment, target.artifact_root, tags=kind))
        check_artifacts_in_home(target, found.artifact_location)
        if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older version
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
        return str(found.experiment_id)
    except mlflow.exceptions.MlflowException as exc:
        if target.is_http:
            raise TrackingUnavailable(
                f"--tracking-uri/MLFLOW_TRACKING_URI {target.uri}: the MLflow server did not answer "
                f"({clipped(str(exc).splitlines()[0], 160)}); start it, fix the URI, or use --no-track"
            ) from exc
        raise


def refuse_default_in_a_new_store(target: TrackingTarget) -> None:
    """MLflow makes its Default experiment when it first opens a store, with its artifacts
    under the directory that process runs in: refused (check_artifacts_in_home) once the
    store exists, so said now for a store not made yet, which the refusal would leave
    behind."""
    store = sqlite_path(target.uri)
    if target.experiment != MLFLOW_DEFAULT or store is None or store.exists():
        return
    check_artifacts_in_home(target, str(Path.cwd() / "mlruns" / "0"))  # as MLflow names it


def check_artifacts_in_home(target: TrackingTarget, location: str) -> None:
    """The embedded store keeps every artifact in its home. MLflow's own Default
    experiment, made when the store is first opened, keeps them under the directory
    that process ran in (./mlruns): 30 MB of checkpoints and models a run would write
    there, outside the home, so it is refused (as is a home moved since)."""
    root = target.artifact_root
    if target.embedded and root is not None and not location.startswith(root):
        raise SiameseInputError(
            f"--experiment {target.experiment}: its artifacts go to {location}, "
            f"outside the home folder's {root}; choose another experiment name"
        )
