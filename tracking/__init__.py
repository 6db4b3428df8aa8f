"""tracking: everything siamese-lab sends to MLflow (runs, curves, checkpoints, verdicts,
the registry). Imports siamese for types and the callback protocol; never optuna.

Names load on first use (PEP 562), so `tracking.store` is cheap to import: a command's
`--help` does not pay for torch or MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from siamese.lazy import lazy_attributes

_EXPORTS = {
    "FAILED": "tracking.base",
    "FINISHED": "tracking.base",
    "KILLED": "tracking.base",
    "RunView": "tracking.base",
    "Tracker": "tracking.base",
    "TrackingCallback": "tracking.callback",
    "InMemoryTracker": "tracking.memory",
    "final_status": "tracking.run",
    "tracked_run": "tracking.run",
    "TrackingTarget": "tracking.store",
    "TrackingUnavailable": "tracking.store",
    "embedded_target": "tracking.store",
    "resolve_target": "tracking.store",
}

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

if TYPE_CHECKING:
    from tracking.base import FAILED, FINISHED, KILLED, RunView, Tracker
    from tracking.callback import TrackingCallback
    from tracking.memory import InMemoryTracker
    from tracking.run import final_status, tracked_run
    from tracking.store import TrackingTarget, TrackingUnavailable, embedded_target, resolve_target


__getattr__ = lazy_attributes("tracking", _EXPORTS, globals())
