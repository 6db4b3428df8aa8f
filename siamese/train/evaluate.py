"""Validation pass: metrics plus the output statistics the diagnosis reads.

A pass over every validation pair also chooses the model's decision threshold there
(siamese.train.threshold) and stores it in the model, so the checkpoint of each epoch
carries the threshold chosen for its own weights. A pass over a sample leaves it alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from siamese.model import SiameseNet
from siamese.train.device_data import DeviceData
from siamese.train.threshold import accuracy_at, choose_threshold, held_out_accuracy

# Small batches are fastest on a CPU (the conv activations stay in cache); a GPU wants big ones.
CPU_EVAL_BATCH = 64
CUDA_EVAL_BATCH = 4096


@dataclass(frozen=True)
class EvalResult:
    loss: float
    # Decided at the model's threshold. On a full pass, the threshold chosen on half the
    # pairs decides the other half and vice versa (held_out_accuracy): the pairs the
    # accuracy is measured on never chose the threshold that decides them.
    acc: float
    auc: float
    output_std: float
    output_mean: float
    dead_unit_fraction: float
    head_zero_fraction: float
    probs: np.ndarray
    threshold: float  # the model's decision threshold after this pass


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC, or NaN where it is undefined (one class only, or non-finite scores)."""
    if len(np.unique(labels)) < 2 or not np.isfinite(probs).all():
        return math.nan
    from sklearn.metrics import roc_auc_score  # here: importing sklearn takes a second

    return float(roc_auc_score(labels, probs))


@torch.no_grad()
def evaluate(model: SiameseNet, data: DeviceData, limit: int | None = None) -> EvalResult:
    """`limit` evaluates the first pairs only (the pairs are shuffled, so it is a fair sample);
    without it, the pass chooses and stores the model's decision threshold."""
    data = data.first(limit)
    images, left, right, labels = data.images, data.left, data.right, data.labels
    was_training = model.training
    model.eval()
    losses, probs, zero_same, unit_alive = [], [], [], None
    batch = CUDA_EVAL_BATCH if data.device.type == "cuda" else CPU_EVAL_BATCH
    for start in range(0, labels.shape[0], batch):
        sl = slice(start, start + batch)
        emb_a, emb_b = model.embed_pair(images[left[sl]], images[right[sl]])
        out = model.head(emb_a, emb_b)
        losses.append(model.loss(out, labels[sl]) * labels[sl].shape[0])
        probs.append(model.prob_same(out))
        alive = ((emb_a > 0).any(dim=0)) | ((emb_b > 0).any(dim=0))
        unit_alive = alive if unit_alive is None else unit_alive | alive
        zero = model.head.zero_output_mask(out)
        if zero is not None:
            zero_same.append(zero)
    model.train(was_training)
    prob = torch.cat(probs).float().cpu().numpy()
    truth = labels.cpu().numpy()
    n = max(len(truth), 1)
    finite = bool(np.isfinite(prob).all())  # NaN weights: no unit is "> 0", yet none is dead
    if limit is None:
        model.set_decision_threshold(choose_threshold(prob, truth))
    threshold = float(model.decision_threshold)
    acc = held_out_accuracy(prob, truth) if limit is None else accuracy_at(prob, truth, threshold)
    return EvalResult(
        loss=float(torch.stack(losses).sum().cpu()) / n,
        acc=acc,
        auc=roc_auc(truth, prob),
        output_std=float(np.std(prob)) if finite else math.nan,
        output_mean=float(np.mean(prob)) if finite else math.nan,
        dead_unit_fraction=1.0 - float(unit_alive.float().mean())
        if unit_alive is not None and finite
        else math.nan,
        head_zero_fraction=float(torch.cat(zero_same).float().mean()) if zero_same else math.nan,
        probs=prob,
        threshold=threshold,
    )
