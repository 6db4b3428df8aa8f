"""A search exports its best trial's model when it ends. Killed before that (kill -9, a lost
machine), the best trial keeps its checkpoint but has no model: `promote` exports it then,
from the run's best.pt, instead of refusing the run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from siamese import DataConfig, PairData, TrainConfig, fit
from siamese.scoring import score, scorer_from_checkpoint, stack_pairs
from siamese.train import FitResult
from tests.tracking.registered import digit_png
from tracking import FINISHED, TrackingCallback, embedded_target
from tracking.base import MODEL_URI_TAG
from tracking.mlflow_tracker import MlflowTracker
from tracking.models import load_logged_scorer
from tracking.registry import PromotionRefused, promote
from tracking.sqlite_reader import open_reader

CONFIG = TrainConfig(
    head="sq", lr=1e-3, epochs=2, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192)
)


def _trial_killed_before_its_end(home: Path, result: FitResult, stop_reason: str) -> str:
    """A search's trial as a kill -9 leaves it: its records landed, its model (offered to
    the tracker, exported at the search's end) never did."""
    tracker = MlflowTracker(embedded_target(home))
    run_id = tracker.start_run("trial-0", CONFIG.flat(), {})
    callback = TrackingCallback(tracker, run_id, log_model=lambda _history: True)
    assert result.best_checkpoint is not None
    callback.on_checkpoint(result.best_checkpoint, "best", 2)
    callback.on_fit_end(replace(result.history, stop_reason=stop_reason))
    tracker.end_run(run_id, FINISHED)
    tracker._drain()  # the queued writes land; flush() would export the offer: it never runs
    assert MODEL_URI_TAG not in tracker.get_run(run_id).tags
    return run_id


@pytest.fixture(scope="module")
def trained(small_data: PairData, tmp_path_factory: pytest.TempPathFactory) -> FitResult:
    folder = tmp_path_factory.mktemp("trial")
    # As a search keeps it: best.pt, weights only.
    result = fit(CONFIG, small_data, checkpoint_dir=folder, lean_checkpoints=True)
    assert result.history.best is not None and result.best_checkpoint is not None
    return result


def test_promote_exports_the_model_a_killed_search_never_logged(
    trained: FitResult, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    run_id = _trial_killed_before_its_end(home, trained, "completed")
    # The next process, `siamese-lab promote`: it reads the store directly, writes via MLflow.
    target = embedded_target(home)
    writer = MlflowTracker(target)
    reader = open_reader(target, lambda: writer)
    assert reader is not None
    promotion = promote(reader, run_id, "siamese")
    assert promotion.promoted and promotion.version == "1", promotion.message
    uri = writer.get_run(run_id).tags[MODEL_URI_TAG]  # the run now has its model too
    pairs = stack_pairs([(digit_png(tmp_path, 0), digit_png(tmp_path, 5))] * 2)
    assert trained.best_checkpoint is not None
    expected = score(scorer_from_checkpoint(trained.best_checkpoint), pairs)
    for logged in (uri, "models:/siamese@champion"):
        assert score(load_logged_scorer(writer, logged), pairs) == pytest.approx(expected)


def test_a_pruned_trial_still_has_no_model_to_promote(trained: FitResult, tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_id = _trial_killed_before_its_end(home, trained, "pruned")
    writer = MlflowTracker(embedded_target(home))
    with pytest.raises(PromotionRefused, match="no logged model"):
        promote(writer, run_id, "siamese")
