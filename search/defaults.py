"""Names and defaults the command line shows before anything heavy is imported."""

from __future__ import annotations

from siamese.config import DataConfig, TrainConfig

# The study `search` creates or resumes, and `report` reads, when no --study is given.
DEFAULT_STUDY = "siamese-lab"
SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("median", "hyperband", "none")
# A search trains many models: smaller than `train`'s defaults, so the bundled digits search
# finishes in about a minute on two CPU cores.
# Failing trials stop inside their first epoch once their statistics prove it.
SEARCH_BASE = TrainConfig(
    epochs=3, early_stop=True, data=DataConfig(train_pairs=1024, val_pairs=256)
)
# How often a running trial rewrites its resumable last.pt (search --checkpoint-every), one
# trial at a time: a default-search trial of 2 s then writes none (30-70 ms for each of its
# epochs' 23 MB files), and a hard-killed worker's retry replays at most this much. Ctrl-C
# and errors still write it. A GPU population's default is its own (300 s, K files at once).
TRIAL_CHECKPOINT_EVERY_S = 30.0
# The TrainConfig fields a search suggests; every other field comes from the base config.
SPACE_PARAMS = ("lr", "optimizer", "momentum", "head", "dropout")
