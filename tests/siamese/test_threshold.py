"""The decision threshold (issue 11, item 6): chosen on validation pairs, stored in the model,
carried by checkpoints and scorers; older checkpoints without one still load."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from siamese import DataConfig, PairData, TrainConfig, fit
from siamese.model import DEFAULT_THRESHOLD, THRESHOLD_KEY, SiameseNet
from siamese.scoring import decision_threshold, read_checkpoint, scorer_from_checkpoint
from siamese.train import load_checkpoint, save_checkpoint
from siamese.train.device_data import DeviceData
from siamese.train.evaluate import evaluate
from siamese.train.threshold import accuracy_at, choose_threshold, held_out_accuracy

# ---------------------------------------------------------------- scores and labels in


def test_separable_scores_get_a_threshold_between_the_classes() -> None:
    scores = np.array([0.05, 0.1, 0.2, 0.3, 0.35])
    labels = np.array([0, 0, 1, 1, 1])
    threshold = choose_threshold(scores, labels)
    assert threshold == pytest.approx(0.15)  # the middle of the gap, not 0.5
    assert accuracy_at(scores, labels, threshold) == 1.0
    assert accuracy_at(scores, labels, 0.5) == 0.4


def test_half_stays_where_it_is_already_best() -> None:
    # A BCE head's probabilities: 0.5 separates them, so it is kept, not moved to 0.45.
    assert choose_threshold(np.array([0.1, 0.4, 0.6, 0.9]), np.array([0, 0, 1, 1])) == 0.5


@pytest.mark.parametrize(
    ("scores", "labels"),
    [
        (np.array([]), np.array([])),
        (np.array([0.2, 0.3]), np.array([1, 1])),  # one class only
        (np.array([0.2, np.nan]), np.array([0, 1])),  # diverged weights
        (np.full(6, 0.509), np.array([0, 1, 0, 1, 0, 1])),  # collapsed: nothing to choose
    ],
)
def test_nothing_to_choose_from_keeps_the_default(scores: np.ndarray, labels: np.ndarray) -> None:
    assert choose_threshold(scores, labels) == DEFAULT_THRESHOLD


def test_the_threshold_decides_as_well_as_the_best_cut_of_all() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        # float32 scores, some tied and some neighbouring, as a model outputs them
        scores = np.round(rng.random(n) * 0.3 + 0.2 * labels, 2).astype(np.float32)
        scores[0] = np.nextafter(scores[1], np.float32(1))
        best = max(accuracy_at(scores, labels, t) for t in [*scores, np.inf])
        threshold = choose_threshold(scores, labels)
        # what the model stores (float32) decides exactly as chosen
        assert accuracy_at(scores, labels, float(np.float32(threshold))) == best


def test_the_held_out_accuracy_is_not_flattered() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 40)
    scores = rng.random(40)  # no signal: a threshold fitted to these pairs looks better
    in_sample = accuracy_at(scores, labels, choose_threshold(scores, labels))
    assert held_out_accuracy(scores, labels) < in_sample


# ---------------------------------------------------------------- a contrastive run


@dataclass(frozen=True)
class Trained:
    net: SiameseNet
    val_acc: float
    checkpoint: Path


def _contrastive(epochs: int) -> TrainConfig:
    data = DataConfig(train_pairs=384, val_pairs=192)
    return TrainConfig(
        head="contrastive", optimizer="adam", lr=1e-3, epochs=epochs, device="cpu", data=data
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_data: PairData) -> Trained:
    folder = tmp_path_factory.mktemp("contrastive")
    result = fit(_contrastive(2), small_data, checkpoint_dir=folder)
    assert result.last_checkpoint is not None
    return Trained(result.model, result.history.records[-1].val_acc, result.last_checkpoint)


def _scores(net: SiameseNet, data: PairData, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, pairs = (data.val, data.val_pairs) if split == "val" else (data.test, data.test_pairs)
    sample = DeviceData.put(images, pairs, torch.device("cpu"))
    # A limit, even of every pair: a full pass would choose the threshold on these pairs.
    return evaluate(net, sample, limit=len(pairs)).probs, pairs.labels


def test_a_contrastive_model_decides_better_at_its_own_threshold(
    trained: Trained, small_data: PairData
) -> None:
    threshold = float(trained.net.decision_threshold)
    assert threshold < 0.45  # its distances do not split at half the margin
    val_scores, val_labels = _scores(trained.net, small_data, "val")
    assert threshold == choose_threshold(val_scores, val_labels)  # chosen on validation
    assert trained.val_acc == pytest.approx(held_out_accuracy(val_scores, val_labels))
    # held-out test pairs, which chose nothing: 0.917 against 0.854 at 0.5 (2026-11-29)
    test_scores, test_labels = _scores(trained.net, small_data, "test")
    assert accuracy_at(test_scores, test_labels, threshold) >= accuracy_at(
        test_scores, test_labels, 0.5
    )


def test_a_sample_pass_decides_at_the_stored_threshold_and_keeps_it(
    trained: Trained, small_data: PairData
) -> None:
    before = float(trained.net.decision_threshold)
    sample = DeviceData.put(small_data.val, small_data.val_pairs, torch.device("cpu"))
    result = evaluate(trained.net, sample, limit=50)
    assert float(trained.net.decision_threshold) == result.threshold == before
    assert result.acc == accuracy_at(result.probs, small_data.val_pairs.labels[:50], before)


def test_checkpoints_and_scorers_carry_the_threshold(trained: Trained) -> None:
    stored = float(trained.net.decision_threshold)
    assert float(load_checkpoint(trained.checkpoint)["model"][THRESHOLD_KEY]) == stored
    assert float(read_checkpoint(trained.checkpoint).net.decision_threshold) == stored
    assert decision_threshold(scorer_from_checkpoint(trained.checkpoint)) == stored


def test_a_checkpoint_from_before_the_threshold_loads_at_half(
    trained: Trained, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payload = load_checkpoint(trained.checkpoint)
    del payload["model"][THRESHOLD_KEY]
    old = tmp_path / "old.pt"
    save_checkpoint(old, payload)
    with caplog.at_level(logging.WARNING):
        scorer = scorer_from_checkpoint(old)
    assert decision_threshold(scorer) == DEFAULT_THRESHOLD
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and str(old) in notes[0] and "no decision threshold" in notes[0]


def test_a_run_resumed_from_such_a_checkpoint_chooses_one_again(
    trained: Trained, tmp_path: Path, small_data: PairData
) -> None:
    payload = load_checkpoint(trained.checkpoint)
    del payload["model"][THRESHOLD_KEY]
    save_checkpoint(tmp_path / "last.pt", payload)
    resumed = fit(_contrastive(3), small_data, resume_from=tmp_path / "last.pt")
    assert float(resumed.model.decision_threshold) != DEFAULT_THRESHOLD
