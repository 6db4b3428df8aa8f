"""Scorers of every head, seeded: the same network with other weights, or another network."""

from __future__ import annotations

import numpy as np
import torch

from siamese.model import SiameseNet
from siamese.scoring import PairScorer

PAIRS = torch.from_numpy(np.random.default_rng(1).random((9, 2, 40, 50), dtype=np.float32))


def scorer_of(head: str, seed: int, dropout: float = 0.1, margin: float = 1.0) -> PairScorer:
    """A scorer whose weights, normalisation and threshold follow `seed`."""
    torch.manual_seed(seed)
    net = SiameseNet(head, dropout, margin)
    net.set_normalization(0.2 + seed / 100, 0.3)
    net.set_decision_threshold(0.4 + seed / 100)
    return PairScorer(net).eval()
