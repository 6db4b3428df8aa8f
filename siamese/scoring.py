"""Scoring new pairs: one module from a stack of pairs to P(same), as logged to MLflow.

`PairScorer` takes one tensor (N, 2, 40, 50) instead of two, because a logged model
(MLflow pyfunc, torch.export) has exactly one input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from siamese.config import TrainConfig
from siamese.data import read_image_file
from siamese.model import SiameseNet, build_model
from siamese.train.checkpoint import load_checkpoint, load_weights


class PairScorer(nn.Module):
    def __init__(self, net: SiameseNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, pairs: Tensor) -> Tensor:
        out = self.net(pairs[:, 0], pairs[:, 1])
        return self.net.prob_same(out)


def scorer_from_checkpoint(path: Path) -> PairScorer:
    payload = load_checkpoint(path)
    net = build_model(TrainConfig.from_dict(payload["config"]))
    load_weights(net, payload["model"], path)
    return PairScorer(net).eval()


def stack_pairs(pairs: list[tuple[Path, Path]]) -> np.ndarray:
    """Image files -> (N, 2, 40, 50) float32, converted exactly as in training."""
    return np.stack([np.stack([read_image_file(a), read_image_file(b)]) for a, b in pairs])


@torch.no_grad()
def score(scorer: nn.Module, pairs: np.ndarray) -> np.ndarray:
    return scorer(torch.as_tensor(pairs, dtype=torch.float32)).float().cpu().numpy()
