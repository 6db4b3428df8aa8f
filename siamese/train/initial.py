"""A network as `fit` starts it, without drawing the same initial weights trial after trial.

`fit` seeds torch's CPU generator with the config's seed and builds the network: one seed and
one head always give the same initial weights, and a search builds that network for every
trial (drawing the fc layer's 1.9 M uniform weights alone takes 7-19 ms a trial; a GPU
population draws it for each of its members). The first build of a (seed, head, margin) is
kept, untouched, with the generator's state right after it. Later builds are copies of it
(2-4 ms) with their own dropout, and leave the generator where a build would have left it:
bit for bit what building it again gives.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor

from siamese.config import TrainConfig
from siamese.model import SiameseNet, build_model

# Distinct starts kept at once (8 MB each): a search's seed is fixed and it has four heads.
MAX_KEPT = 8


class _Start(NamedTuple):
    model: SiameseNet  # never handed out: copies of it are
    rng_after: Tensor


_kept: OrderedDict[tuple[object, ...], _Start] = OrderedDict()
_kept_lock = threading.Lock()  # `fit` may run in several threads of one process


def seeded_model(config: TrainConfig) -> SiameseNet:
    """What `torch.default_generator.manual_seed(config.seed)` then `build_model(config)`
    give, on the CPU: the network, and the CPU generator's state after it. Other
    generators (CUDA's) are not touched."""
    key = _start_key(config)
    with _kept_lock:
        kept = _kept.get(key)
        if kept is not None:
            _kept.move_to_end(key)
    if kept is None:
        torch.default_generator.manual_seed(config.seed)
        model = build_model(config)
        _keep(key, _Start(copy.deepcopy(model), torch.get_rng_state()))
        return model
    model = copy.deepcopy(kept.model)
    model.tower.dropout.p = config.dropout  # weightless: the one thing a start leaves open
    torch.set_rng_state(kept.rng_after)
    return model


def _start_key(config: TrainConfig) -> tuple[object, ...]:
    """What the initial values depend on: the seed, the head's layers (its margin too, kept
    to be safe) and the dtype new tensors get. Not dropout: it has no weights."""
    return (config.seed, config.head, config.margin, torch.get_default_dtype())


def _keep(key: tuple[object, ...], start: _Start) -> None:
    with _kept_lock:
        _kept[key] = start
        while len(_kept) > MAX_KEPT:
            _kept.popitem(last=False)


def forget_starts() -> None:
    """Drops the kept starts (tests; a process that builds no more networks)."""
    with _kept_lock:
        _kept.clear()
