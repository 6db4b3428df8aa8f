"""Loading a scorer for `predict`: from the registry, a run, a logged model, or a checkpoint."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from siamese.errors import SiameseInputError, clipped
from siamese.scoring import scorer_from_checkpoint
from tracking.base import MODEL_URI_TAG

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker

LOGGED_MODEL_NAME = "model"  # TrackingCallback logs the scorer under this name
LOGGED_MODEL_ID_PREFIX = "m-"  # MLflow 3's logged-model ids: models:/m-...


def checked_model_reference(model: str) -> str:
    """`--model` as `predict` loads it: a `file://` URI becomes its path (it was taken for a
    relative path and reported missing), and a registered model named without a version or
    an alias is refused (MLflow took the name for a logged model's id: "Logged model with ID
    'siamese' not found")."""
    if model.startswith("file:"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(model)
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise SiameseInputError(
                f"--model {model}: expected a local checkpoint as file:///ABSOLUTE/PATH.pt "
                "(or the path itself)"
            )
        return unquote(parsed.path)
    if model == "models:/":
        raise SiameseInputError(
            f"--model {model}: expected models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-ID"
        )
    rest = model.removeprefix("models:/")
    a_bare_name = not any(mark in rest for mark in "@/")
    if rest != model and a_bare_name and not rest.startswith(LOGGED_MODEL_ID_PREFIX):
        raise SiameseInputError(
            f"--model {model}: a registered model needs a version or an alias, "
            f"e.g. models:/{rest}/1 or models:/{rest}@champion"
        )
    return model


def load_scorer(model: str) -> nn.Module:
    """`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/m-ID`, `runs:/ID/model`, or a
    checkpoint file (.pt) written by `train`."""
    path = Path(model)
    if path.suffix == ".pt" or path.is_file():
        return scorer_from_checkpoint(path)
    if not model.startswith(("models:/", "runs:/")):
        raise SiameseInputError(
            f"--model {model!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model "
            "or a checkpoint .pt file"
        )
    import mlflow

    try:
        # Into a folder of our own: MLflow's default is a temp folder it never removes (a
        # copy of the model left in /tmp by every predict). The model is in memory after.
        with tempfile.TemporaryDirectory(prefix="siamese-lab-model-") as local:
            loaded = mlflow.pytorch.load_model(model, dst_path=local, map_location="cpu")
    except mlflow.exceptions.MlflowException as exc:
        raise SiameseInputError(
            f"--model {model}: {clipped(str(exc).splitlines()[0], 200)}"
        ) from exc
    if not isinstance(loaded, nn.Module):
        raise SiameseInputError(f"--model {model}: not a PyTorch model ({type(loaded).__name__})")
    # A torch.export ("pt2") model is already in inference form and refuses .eval().
    return loaded


def load_logged_scorer(tracker: MlflowTracker, model: str) -> nn.Module:
    """A `models:/...` or `runs:/RUN/model` scorer from the tracker's store. The run may be
    named by any unique prefix of its id; a run that logged no model is named as such
    before MLflow is asked for its artifacts."""
    if model.startswith("runs:/"):
        run_part, _, rest = model.removeprefix("runs:/").partition("/")
        run_id = tracker.resolve_run_id(run_part)
        model = f"runs:/{run_id}/{rest}"
        if rest == LOGGED_MODEL_NAME and MODEL_URI_TAG not in tracker.get_run(run_id).tags:
            raise SiameseInputError(
                f"--model {model}: run {run_id} has no logged model (only a converged, "
                "completed run logs one: train it again, or give its checkpoint .pt)"
            )
    with tracker.using_store():
        return load_scorer(model)
