"""Loading a scorer for `predict`: from the registry, a run, a logged model, or a checkpoint."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from siamese.errors import SiameseInputError
from siamese.scoring import scorer_from_checkpoint


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
        loaded = mlflow.pytorch.load_model(model, map_location="cpu")
    except mlflow.exceptions.MlflowException as exc:
        raise SiameseInputError(f"--model {model}: {str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(loaded, nn.Module):
        raise SiameseInputError(f"--model {model}: not a PyTorch model ({type(loaded).__name__})")
    # A torch.export ("pt2") model is already in inference form and refuses .eval().
    return loaded
