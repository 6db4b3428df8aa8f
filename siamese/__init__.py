"""siamese: the framework-free core of siamese-lab (torch and numpy only).

Data, model, trainer, checkpoints and convergence diagnosis. Tracking (MLflow) and search
(Optuna) plug in through `siamese.train.Callback`; this package never imports them.

The names below load on first use (PEP 562): `import siamese.errors` or `siamese.config`
costs milliseconds, so a command's `--help` or its bad-input check never pays for torch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from siamese.lazy import lazy_attributes

__version__ = "0.2.0"
# When this process first imported the package: a source file changed later may not be the
# code it runs (an exported model's graph is keyed on the files: tracking.pt2_fingerprint).
IMPORTED_AT_NS = time.time_ns()

# public name -> the submodule that defines it
_EXPORTS = {
    "PRESETS": "siamese.config",
    "DataConfig": "siamese.config",
    "TrainConfig": "siamese.config",
    "with_overrides": "siamese.config",
    "CheckpointError": "siamese.errors",
    "ConfigError": "siamese.errors",
    "DataError": "siamese.errors",
    "SiameseInputError": "siamese.errors",
    "PairData": "siamese.data",
    "prepare_data": "siamese.data",
    "Diagnosis": "siamese.diagnosis",
    "Finding": "siamese.diagnosis",
    "diagnose": "siamese.diagnosis",
    "render_text": "siamese.diagnosis",
    "Callback": "siamese.train",
    "EpochRecord": "siamese.train",
    "FitResult": "siamese.train",
    "History": "siamese.train",
    "fit": "siamese.train",
}

__all__ = [  # the keys of _EXPORTS, written out so that linters and type checkers see them
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

if TYPE_CHECKING:
    from siamese.config import PRESETS, DataConfig, TrainConfig, with_overrides
    from siamese.data import PairData, prepare_data
    from siamese.diagnosis import Diagnosis, Finding, diagnose, render_text
    from siamese.errors import CheckpointError, ConfigError, DataError, SiameseInputError
    from siamese.train import Callback, EpochRecord, FitResult, History, fit


__getattr__ = lazy_attributes("siamese", _EXPORTS, globals())
