"""siamese: the framework-free core of siamese-lab (torch and numpy only).

Data, model, trainer, checkpoints and convergence diagnosis. Tracking (MLflow) and search
(Optuna) plug in through `siamese.train.Callback`; this package never imports them.
"""

from siamese.config import PRESETS, DataConfig, TrainConfig, with_overrides
from siamese.data import PairData, prepare_data
from siamese.diagnose import Diagnosis, Finding, diagnose, render_text
from siamese.errors import CheckpointError, ConfigError, DataError, SiameseInputError
from siamese.train import Callback, EpochRecord, FitResult, History, fit

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Callback",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Diagnosis",
    "EpochRecord",
    "Finding",
    "FitResult",
    "History",
    "PairData",
    "SiameseInputError",
    "TrainConfig",
    "diagnose",
    "fit",
    "prepare_data",
    "render_text",
    "with_overrides",
]
