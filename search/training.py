"""One training run, as `siamese-lab train` does it: data checks, `fit`, the diagnosis
(computed once), and - when a tracker is given - an MLflow run that ends with a status."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from siamese import Diagnosis, PairData, TrainConfig, diagnose, fit, prepare_data
from siamese.config import with_overrides
from siamese.train import Callback, FitResult, load_checkpoint, resolve_device
from tracking.base import Tracker


@dataclass(frozen=True)
class TrainRequest:
    config: TrainConfig
    checkpoint_dir: Path
    resume: Path | None = None
    run_name: str = ""


@dataclass(frozen=True)
class TrainOutcome:
    result: FitResult
    diagnosis: Diagnosis
    checkpoint_dir: Path
    run_id: str | None = None
    model_uri: str | None = None
    run_url: str | None = None


def new_run_name() -> str:
    return f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def resume_request(path: Path, epochs: int | None, device: str | None) -> TrainRequest:
    """Continue from a checkpoint: its config (only --epochs and --device may change), its
    folder, a new run."""
    saved = TrainConfig.from_dict(load_checkpoint(path)["config"])
    config = with_overrides(saved, epochs=epochs, device=device)
    return TrainRequest(config, path.parent, path, new_run_name())


def run_training(
    request: TrainRequest, tracker: Tracker | None, callbacks: list[Callback]
) -> TrainOutcome:
    config = request.config
    data = prepare_data(config.data)  # every pre-flight check, before any training
    device = str(resolve_device(config.device))
    if tracker is None:
        result = _fit(request, data, callbacks)
        return TrainOutcome(result, diagnose(result.history), request.checkpoint_dir)
    from tracking import TrackingCallback, tracked_run

    with tracked_run(tracker, request.run_name, config, device) as run_id:
        tracking = TrackingCallback(tracker, run_id)
        result = _fit(request, data, [*callbacks, tracking])
    verdict = tracking.verdict or diagnose(result.history)
    url = tracker.run_url(run_id)
    return TrainOutcome(result, verdict, request.checkpoint_dir, run_id, tracking.model_uri, url)


def _fit(request: TrainRequest, data: PairData, callbacks: list[Callback]) -> FitResult:
    return fit(
        request.config,
        data,
        callbacks=callbacks,
        checkpoint_dir=request.checkpoint_dir,
        resume_from=request.resume,
    )
