"""tracking: everything siamese-lab sends to MLflow (runs, curves, checkpoints, verdicts,
the registry). Imports siamese for types and the callback protocol; never optuna."""

from tracking.base import FAILED, FINISHED, KILLED, RunView, Tracker
from tracking.callback import TrackingCallback
from tracking.memory import InMemoryTracker
from tracking.run import final_status, tracked_run
from tracking.store import TrackingTarget, TrackingUnavailable, embedded_target, resolve_target

__all__ = [
    "FAILED",
    "FINISHED",
    "KILLED",
    "InMemoryTracker",
    "RunView",
    "Tracker",
    "TrackingCallback",
    "TrackingTarget",
    "TrackingUnavailable",
    "embedded_target",
    "final_status",
    "resolve_target",
    "tracked_run",
]
