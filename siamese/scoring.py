"""Scoring new pairs: one module from a stack of pairs to P(same), as logged to MLflow.

`PairScorer` takes one tensor (N, 2, 40, 50) instead of two, because a logged model
(MLflow pyfunc, torch.export) has exactly one input. It outputs P(same); the decision is
P(same) >= the threshold the model stores (`decision_threshold`), which an exported model
keeps as a buffer too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from siamese.config import TrainConfig
from siamese.data import read_image_file
from siamese.errors import CheckpointError, SiameseInputError
from siamese.model import THRESHOLD_KEY, SiameseNet, build_model
from siamese.train.checkpoint import load_checkpoint, load_weights

# Where a scorer keeps its model's threshold: PairScorer's `net`, and a torch.export model
# (which keeps the buffers of the module it was exported from, used in forward or not).
SCORER_THRESHOLD = f"net.{THRESHOLD_KEY}"


class PairScorer(nn.Module):
    def __init__(self, net: SiameseNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, pairs: Tensor) -> Tensor:
        out = self.net(pairs[:, 0], pairs[:, 1])
        return self.net.prob_same(out)


def decision_threshold(scorer: nn.Module) -> float | None:
    """The threshold a scorer's model stores (a PairScorer, or one loaded back from MLflow);
    None for a model logged before models stored one."""
    buffer = dict(scorer.named_buffers()).get(SCORER_THRESHOLD)
    return None if buffer is None else float(buffer)


@dataclass(frozen=True)
class CheckedCheckpoint:
    """A checkpoint read whole: its payload, its config, and the network that config builds
    with the checkpoint's weights loaded into it."""

    payload: dict[str, Any]
    config: TrainConfig
    net: SiameseNet


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def read_checkpoint(path: Path) -> CheckedCheckpoint:
    """A checkpoint checked before it is used (scored or resumed): a siamese-lab file, a
    valid config, and weights that fit the network that config builds. CheckpointError,
    naming the file, for anything else."""
    return check_payload(path, load_checkpoint(path))


def check_payload(path: Path, payload: dict[str, Any]) -> CheckedCheckpoint:
    """A loaded checkpoint's config is valid and its weights fit the network it builds."""
    try:
        config = TrainConfig.from_dict(payload["config"])
    except (SiameseInputError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: its config is not valid ({_one_line(exc)})") from exc
    if not isinstance(payload["model"], dict):
        raise CheckpointError(f"{path}: its weights are not a state dict")
    net = build_model(config)
    load_weights(net, payload["model"], path)
    return CheckedCheckpoint(payload, config, net)


def scorer_from_checkpoint(path: Path) -> PairScorer:
    return PairScorer(read_checkpoint(path).net).eval()


def stack_pairs(pairs: list[tuple[Path, Path]]) -> np.ndarray:
    """Image files -> (N, 2, 40, 50) float32, converted exactly as in training."""
    return np.stack([np.stack([read_image_file(a), read_image_file(b)]) for a, b in pairs])


@torch.no_grad()
def score(scorer: nn.Module, pairs: np.ndarray) -> np.ndarray:
    return scorer(torch.as_tensor(pairs, dtype=torch.float32)).float().cpu().numpy()
