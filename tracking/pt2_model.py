"""Logging a scorer as an MLflow model in torch.export ("pt2") format, through MLflow's
global (fluent) API pointed at one store for the moment it takes."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from typing import TYPE_CHECKING

import numpy as np

from siamese.config import IMAGE_HEIGHT, IMAGE_WIDTH
from tracking.local_artifacts import local_artifact_dir
from tracking.pt2_template import keep_template, log_from_template

if TYPE_CHECKING:
    from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

PAIR_SHAPE = (-1, 2, IMAGE_HEIGHT, IMAGE_WIDTH)
_log = logging.getLogger(__name__)


def scorer_signature() -> ModelSignature:
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), PAIR_SHAPE)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]),
    )


@contextmanager
def pointed_at(uri: str, experiment_id: str) -> Iterator[None]:
    """Points MLflow's global (fluent) API at `uri` for a moment: log_model, register_model
    and load_model only know the global URI. Restored afterwards, because MLflow also
    exports it as MLFLOW_TRACKING_URI to every child process."""
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id  # where a logged model lives
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]  # None unsets
        if saved["MLFLOW_EXPERIMENT_ID"] is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = saved["MLFLOW_EXPERIMENT_ID"]


def log_pt2_model(run_id: str, scorer: nn.Module, name: str) -> str:
    """`scorer` logged under `run_id` (MLflow's global API must point at its store: see
    pointed_at); its model URI. pt2: loading it back unpickles no code. From the kept model
    of the same graph where there is one (tracking.pt2_template), else exported and kept."""
    scorer = without_dropout(scorer)
    uri = log_from_template(run_id, scorer, name)
    if uri is None:
        uri = _export(run_id, scorer, name)
    return uri


def without_dropout(scorer: nn.Module) -> nn.Module:
    """An evaluation copy of `scorer` whose dropout layers are identities, which is what they
    compute in evaluation. The exported graph then does not carry their rates, which a
    search draws per trial: one kept graph serves every trial of a head."""
    from torch import nn  # here: commands that only read runs never import torch

    copy = deepcopy(scorer).cpu().eval()
    for name, module in list(copy.named_modules()):
        if isinstance(module, nn.modules.dropout._DropoutNd):
            parent, _, attribute = name.rpartition(".")
            setattr(copy.get_submodule(parent), attribute, nn.Identity())
    return copy


def _export(run_id: str, scorer: nn.Module, name: str) -> str:
    """torch.export through mlflow.pytorch; the model's folder is kept for the next one."""
    import torch

    example = np.random.default_rng(0).random((2, *PAIR_SHAPE[1:]), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = mlflow.pytorch.log_model(
            scorer,
            name=name,
            signature=scorer_signature(),
            input_example=example,
            run_id=run_id,
            serialization_format="pt2",
            # Explicit requirements: inferring them runs the model in a subprocess (~5 s).
            pip_requirements=[f"torch>={torch.__version__.split('+')[0]}", "numpy"],
            # MLflow would load the pt2 file back and score the example (a third of
            # log_model's time). The scorer's architecture is fixed and the load-and-score
            # round trip is covered by the promote/predict tests instead.
            validate_serving_input=False,
        )
    _keep(str(info.model_id), scorer)
    return str(info.model_uri)


def _keep(model_id: str, scorer: nn.Module) -> None:
    """The logged model's folder kept for the next model of its graph (tracking.pt2_template).
    The model is logged already: nothing here may fail its logging."""
    try:
        folder = local_artifact_dir(
            mlflow.MlflowClient().get_logged_model(model_id).artifact_location
        )
        if folder is not None:  # a remote artifact store: nothing is kept
            keep_template(folder, scorer)
    except Exception as exc:
        _log.debug("could not keep the model %s for later ones: %s", model_id, exc)
