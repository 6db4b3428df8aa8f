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
from torch import Tensor

from siamese.model import SiameseNet
from siamese.train.device_data import DeviceData
from siamese.train.threshold import accuracy_at, choose_threshold, held_out_accuracy

# Images per tower pass. Small batches are fastest on a CPU (the conv activations stay in
# cache); a GPU wants big ones.
CPU_EVAL_BATCH = 128
CUDA_EVAL_BATCH = 8192


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
    """ROC AUC, or NaN where it is undefined (one class only, or non-finite scores).

    The area under the ROC curve is the chance that a positive pair scores above a negative
    one, ties counting half: the Mann-Whitney statistic from average ranks, which is what
    scikit-learn's roc_auc_score computes (tests/siamese/test_evaluate.py holds the two
    equal). Here, not there: importing scikit-learn took a second of every training
    process's first validation pass."""
    classes = np.unique(labels)
    if len(classes) < 2 or not np.isfinite(probs).all():
        return math.nan
    scores = np.asarray(probs, dtype=np.float64).reshape(-1)
    positive = np.asarray(labels).reshape(-1) == classes[-1]  # the greater label, as sklearn
    order = np.argsort(scores, kind="stable")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based, ties averaged
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class TowerMemo:
    """The embeddings one tower gave some images, kept for a later pass with an equal tower
    on equal images. Every run of a search starts from the same tower: its weights come
    from the seed, drawn before the head's, so whatever the head, the initial pass of each
    run after the first needs the head alone. Equal means equal, element by element: the
    tower's weights, the model's normalisation and the images."""

    def __init__(self) -> None:
        self._entry: tuple[list[Tensor], Tensor] | None = None  # (key, embeddings), one

    @staticmethod
    def _key(model: SiameseNet, images: Tensor) -> list[Tensor]:
        return [images, model.pixel_mean, model.pixel_std, *model.tower.state_dict().values()]

    def get(self, model: SiameseNet, images: Tensor) -> Tensor | None:
        entry = self._entry
        if entry is None:
            return None
        kept, embeddings = entry
        key = self._key(model, images)
        same = len(key) == len(kept) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
            for a, b in zip(key, kept, strict=False)
        )
        return embeddings if same else None

    def put(self, model: SiameseNet, images: Tensor, embeddings: Tensor) -> None:
        self._entry = ([t.detach().clone() for t in self._key(model, images)], embeddings)


# The initial pass of each run (siamese.train.loop): the runs of a process share it.
INITIAL_TOWER = TowerMemo()


def _pair_embeddings(
    model: SiameseNet, data: DeviceData, batch: int, memo: TowerMemo | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The left and right embeddings of every pair, and which units any shown image uses.

    Each image the pairs show goes through the tower once: validation pairs reuse their
    images (512 digit pairs show 269 images, not 1024), and in eval mode an image's
    embedding does not depend on the pair it is in (no dropout, no batch statistics)."""
    n = data.labels.shape[0]
    shown, where = torch.unique(torch.cat([data.left, data.right]), return_inverse=True)
    images = data.images[shown]
    emb = memo.get(model, images) if memo is not None else None
    if emb is None:
        chunks = [
            model.embed_pair(part, part[:0])[0]  # the model's own normalisation
            for part in images.split(batch)
        ]
        emb = torch.cat(chunks)
        if memo is not None:
            memo.put(model, images, emb)
    return emb[where[:n]], emb[where[n:]], (emb > 0).any(dim=0)


@torch.no_grad()
def evaluate(
    model: SiameseNet, data: DeviceData, limit: int | None = None, memo: TowerMemo | None = None
) -> EvalResult:
    """`limit` evaluates the first pairs only (the pairs are shuffled, so it is a fair sample);
    without it, the pass chooses and stores the model's decision threshold. `memo` reuses
    the embeddings of an equal tower on equal images (and keeps these for the next pass)."""
    data = data.first(limit)
    labels = data.labels
    was_training = model.training
    model.eval()
    batch = CUDA_EVAL_BATCH if data.device.type == "cuda" else CPU_EVAL_BATCH
    emb_a, emb_b, unit_alive = _pair_embeddings(model, data, batch, memo)
    out = model.head(emb_a, emb_b)
    loss = model.loss(out, labels)
    zero = model.head.zero_output_mask(out)
    head_zero = float(zero.float().mean()) if zero is not None and zero.numel() else math.nan
    model.train(was_training)
    prob = model.prob_same(out).float().cpu().numpy()
    truth = labels.cpu().numpy()
    finite = bool(np.isfinite(prob).all())  # NaN weights: no unit is "> 0", yet none is dead
    if limit is None:
        model.set_decision_threshold(choose_threshold(prob, truth))
    threshold = float(model.decision_threshold)
    acc = held_out_accuracy(prob, truth) if limit is None else accuracy_at(prob, truth, threshold)
    return EvalResult(
        loss=float(loss.cpu()),
        acc=acc,
        auc=roc_auc(truth, prob),
        output_std=float(np.std(prob)) if finite else math.nan,
        output_mean=float(np.mean(prob)) if finite else math.nan,
        dead_unit_fraction=1.0 - float(unit_alive.float().mean()) if finite else math.nan,
        head_zero_fraction=head_zero,
        probs=prob,
        threshold=threshold,
    )
