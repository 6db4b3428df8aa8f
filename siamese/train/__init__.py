"""Training: the loop, its callbacks, checkpoints and the recorded history.

Names load on first use: `siamese.train.history` (what the diagnosis reads) needs no torch,
so `siamese-lab diagnose` does not pay for importing it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from siamese.lazy import lazy_attributes

_EXPORTS = {
    "Callback": "siamese.train.callbacks",
    "EpochRecord": "siamese.train.history",
    "History": "siamese.train.history",
    "FitResult": "siamese.train.loop",
    "fit": "siamese.train.loop",
    "fit_population": "siamese.train.population",
    "resolve_device": "siamese.train.loop",
    "load_checkpoint": "siamese.train.checkpoint",
    "save_checkpoint": "siamese.train.checkpoint",
}

__all__ = [
    "Callback",
    "EpochRecord",
    "FitResult",
    "History",
    "fit",
    "fit_population",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from siamese.train.callbacks import Callback
    from siamese.train.checkpoint import load_checkpoint, save_checkpoint
    from siamese.train.history import EpochRecord, History
    from siamese.train.loop import FitResult, fit, resolve_device
    from siamese.train.population import fit_population

__getattr__ = lazy_attributes("siamese.train", _EXPORTS, globals())
