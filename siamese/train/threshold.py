"""The decision threshold: where P(same) says "same", chosen on validation pairs.

P(same) >= 0.5 is the right decision only where the score is a calibrated probability. The
contrastive head's score is a logistic centred at half the margin, which the learned
distances need not respect: its best decision can sit far from 0.5. So a run chooses the
threshold that classifies its validation pairs best, stores it in the model (a buffer of
`SiameseNet`: checkpoints and exported models carry it) and decides with it everywhere.

Plain numpy on (scores, labels), so any trainer (one model, or a population member by
member) calibrates the same way.
"""

from __future__ import annotations

import math

import numpy as np

from siamese.model import DEFAULT_THRESHOLD


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold t for "same iff score >= t" that classifies the most pairs right.

    All thresholds between two neighbouring scores decide alike; of the best such intervals
    the one nearest 0.5 wins (a BCE head's 0.5 stays where it already is best), and inside it
    0.5 itself if it lies there, else the interval's midpoint (the widest margin either side).
    0.5 where there is nothing to choose from: no pairs, one class only, non-finite scores.
    """
    # float32, as the model stores it: the value returned decides exactly as chosen.
    scores = np.asarray(scores, dtype=np.float32).ravel()
    same = np.asarray(labels).ravel() > 0.5
    if len(scores) == 0 or same.all() or not same.any() or not np.isfinite(scores).all():
        return DEFAULT_THRESHOLD
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_same = scores[order], same[order]
    # Cut k: the k lowest scores are "different", the rest "same". Right at cut k: the
    # negatives below it plus the positives from it on.
    negatives_below = np.concatenate([[0], np.cumsum(~sorted_same)])
    positives_from = same.sum() - np.concatenate([[0], np.cumsum(sorted_same)])
    right = negatives_below + positives_from
    # Only cuts between distinct scores (and at both ends) are thresholds.
    valid = np.ones(len(scores) + 1, dtype=bool)
    valid[1:-1] = sorted_scores[1:] > sorted_scores[:-1]
    best_cuts = np.flatnonzero(valid & (right == right[valid].max()))
    # Cut k stands for the thresholds in (low, high]: above the k-th score, up to the next.
    padded = np.concatenate([[-np.inf], sorted_scores, [np.inf]])
    low, high = padded[best_cuts], padded[best_cuts + 1]
    distance = np.maximum(np.maximum(low - DEFAULT_THRESHOLD, DEFAULT_THRESHOLD - high), 0.0)
    pick = int(np.argmin(distance))
    lo, hi = float(low[pick]), float(high[pick])
    if lo < DEFAULT_THRESHOLD <= hi:
        return DEFAULT_THRESHOLD
    if math.isinf(lo):
        return hi  # every pair "same": the lowest score itself still is
    above_lo = float(np.nextafter(np.float32(lo), np.float32(np.inf)))
    if math.isinf(hi):
        return above_lo  # every pair "different"
    middle = float(np.float32((lo + hi) / 2))
    return middle if middle > lo else above_lo  # neighbouring float32 scores: no middle


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Share of pairs decided right by "same iff score >= threshold"; NaN for no pairs."""
    scores, same = np.asarray(scores).ravel(), np.asarray(labels).ravel() > 0.5
    return float(((scores >= threshold) == same).mean()) if len(scores) else math.nan


def held_out_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy at a threshold the pairs scored did not choose: two folds (even and odd
    pairs), each decided at the threshold chosen on the other, pooled.

    A threshold chosen on the very pairs it is measured on flatters the accuracy (a little
    with one parameter and hundreds of pairs, more with few); this number does not."""
    scores, labels = np.asarray(scores).ravel(), np.asarray(labels).ravel()
    if len(scores) < 2:
        return accuracy_at(scores, labels, choose_threshold(scores, labels))
    folds = (slice(0, None, 2), slice(1, None, 2))
    right = 0.0
    for measured, chosen in (folds, folds[::-1]):
        threshold = choose_threshold(scores[chosen], labels[chosen])
        right += accuracy_at(scores[measured], labels[measured], threshold) * len(scores[measured])
    return right / len(scores)
