"""Training: the loop, its callbacks, checkpoints and the recorded history."""

from siamese.train.callbacks import Callback
from siamese.train.checkpoint import load_checkpoint, save_checkpoint
from siamese.train.history import EpochRecord, History
from siamese.train.loop import FitResult, fit, resolve_device

__all__ = [
    "Callback",
    "EpochRecord",
    "FitResult",
    "History",
    "fit",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
]
