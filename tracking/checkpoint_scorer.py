"""A logged model scored from the checkpoint it was exported from, when that is provably the
same model.

A logged model is a torch.export ("pt2") file. Loading it back through MLflow takes about
4 s on 2 CPU cores (MLflow, then torch.export's deserializer, which imports dynamo), against
a fraction of a second to build the network and load a checkpoint. Every model siamese-lab
logs is exported from its run's best.pt, which the run keeps as `checkpoints/best.pt`. So a
model's scorer is built from that checkpoint (torch.load with weights_only, its digest
checked) when all of this holds:

- the pt2 file MLflow would load holds exactly the checkpoint's parameters and buffers, under
  the same names, byte for byte (read from the archive's weight files, no torch.export);
- the run was logged by this version of siamese-lab, whose network the pt2 graph is;
- the checkpoint stores its decision threshold (an older one: MLflow's path says so its way).

Anything else, or anything unreadable, gives None: MLflow loads the pt2 file, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import siamese
from siamese.errors import CheckpointError
from siamese.model import THRESHOLD_KEY
from siamese.scoring import PairScorer, check_payload
from siamese.train.checkpoint import load_checkpoint
from tracking.base import MODEL_URI_TAG
from tracking.local_artifacts import local_artifact_dir
from tracking.pt2_archive import PT2_FILE, same_tensors

if TYPE_CHECKING:
    from torch import nn

    from tracking.sqlite_reader import SqliteReader

CHECKPOINT_ARTIFACT = "checkpoints/best.pt"
LOGGED_MODEL_NAME = "model"  # as tracking.models names it
VERSION_TAG = "siamese_lab.version"  # set on every tracked run (tracking.run)


def scorer_from_run_checkpoint(reader: SqliteReader, model_uri: str) -> nn.Module | None:
    """The scorer `model_uri` (models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-ID or
    runs:/ID/model) names, built from its run's best.pt; None where that is not shown to be
    the same model. A runs:/ prefix that names no run, or several, is bad input here as it
    is on MLflow's path."""
    found = _model_folder_and_run(reader, model_uri)
    if found is None:
        return None
    folder, run_id = found
    pt2 = folder.joinpath(*PT2_FILE)
    run_dir = reader.artifact_dir(run_id)
    checkpoint = None if run_dir is None else run_dir / CHECKPOINT_ARTIFACT
    if checkpoint is None or not checkpoint.is_file() or not pt2.is_file():
        return None
    if reader.get_run(run_id).tags.get(VERSION_TAG) != siamese.__version__:
        return None
    try:
        payload = load_checkpoint(checkpoint)
        if not isinstance(payload["model"], dict) or THRESHOLD_KEY not in payload["model"]:
            return None
        scorer = PairScorer(check_payload(checkpoint, payload).net).eval()
    except CheckpointError:
        return None  # the logged model may still load: MLflow's path decides
    return scorer if same_tensors(pt2, scorer) else None


def _model_folder_and_run(reader: SqliteReader, model_uri: str) -> tuple[Path, str] | None:
    """The local folder of the model a URI names and the run it was logged from."""
    if model_uri.startswith("runs:/"):
        run_part, _, rest = model_uri.removeprefix("runs:/").partition("/")
        if rest != LOGGED_MODEL_NAME:
            return None
        run_id = reader.resolve_run_id(run_part)
        tag = reader.get_run(run_id).tags.get(MODEL_URI_TAG, "")
        model_id = tag.removeprefix("models:/")
        # MLflow resolves runs:/ID/model among the run's models of that name: one, this one.
        if reader.logged_models_of_run(run_id, LOGGED_MODEL_NAME) != [model_id]:
            return None
        return _logged_model_folder(reader, model_id, run_id, None)
    rest = model_uri.removeprefix("models:/")
    if rest == model_uri:
        return None
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if alias.lower() == "latest":  # MLflow's reserved alias: its own rule picks
            return None
        version = reader.version_by_alias(name, alias)
    elif "/" in rest:
        name, number = rest.rsplit("/", 1)
        version = reader.model_version(name, number) if number.isdigit() else None
    else:
        return _logged_model_folder(reader, rest, None, None)
    if version is None or not version.source.startswith("models:/m-"):
        return None
    model_id = version.source.removeprefix("models:/")
    return _logged_model_folder(reader, model_id, version.run_id, version.storage_location)


def _logged_model_folder(
    reader: SqliteReader, model_id: str, run_id: str | None, storage: str | None
) -> tuple[Path, str] | None:
    logged = reader.logged_model(model_id)
    if logged is None or logged.source_run_id is None:
        return None
    if run_id is not None and run_id != logged.source_run_id:
        return None
    # A registered version is loaded from its own storage location: the file to compare.
    folder = local_artifact_dir(storage or logged.artifact_location)
    return None if folder is None else (folder, logged.source_run_id)
