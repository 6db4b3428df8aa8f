"""Registry fixtures shared by the tracking and fault tests: a converged run with a logged
model, and digit images to score."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from siamese.scoring import PairScorer
from tracking import FINISHED
from tracking.base import MODEL_URI_TAG
from tracking.registry import SELECTION_METRIC

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker


def log_converged_run(tracker: MlflowTracker, scorer: PairScorer) -> str:
    """A converged run with `scorer` logged (pt2), tagged as TrackingCallback tags one."""
    run_id = tracker.start_run("converged", {}, {})
    uri = tracker.log_model(run_id, scorer)
    tracker.set_tags(
        run_id,
        {"diagnosis.verdict": "converged", "diagnosis.label": "converged", MODEL_URI_TAG: uri},
    )
    tracker.log_metrics(run_id, {SELECTION_METRIC: 0.9}, step=1)
    tracker.end_run(run_id, FINISHED)
    tracker.flush()  # metrics and the end go through a writer thread; other readers follow
    return run_id


def digit_png(folder: Path, index: int) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = folder / f"{index}_{digits.target[index]}.png"
    Image.fromarray((digits.images[index] * 15).astype(np.uint8)).save(path)
    return path
