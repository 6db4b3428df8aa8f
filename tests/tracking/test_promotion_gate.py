"""The promotion gate decides from the run alone, before any registry call: an in-memory run
is enough to test what it refuses (tests/tracking/test_tracked_cli.py promotes for real)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest

from siamese.errors import SiameseInputError
from tracking import FINISHED, InMemoryTracker
from tracking.base import MODEL_URI_TAG
from tracking.registry import SELECTION_METRIC, PromotionRefused, promote

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker


def _run(tracker: InMemoryTracker, tags: dict[str, str], best: float | None = None) -> str:
    run_id = tracker.start_run("r", {}, tags)
    if best is not None:
        tracker.log_metrics(run_id, {SELECTION_METRIC: best}, step=1)
    tracker.end_run(run_id, FINISHED)
    return run_id


def _promote(tracker: InMemoryTracker, run_id: str) -> None:
    # promote() takes the MLflow tracker for the registry; the gate only reads the run
    promote(cast("MlflowTracker", tracker), run_id, "m")


@pytest.mark.parametrize(
    "tags",
    [
        {"diagnosis.verdict": "failed", "diagnosis.label": "collapsed+stalled"},
        {"diagnosis.verdict": "incomplete", "diagnosis.label": "incomplete"},
    ],
)
def test_a_run_that_did_not_converge_is_refused_with_its_diagnosis(tags: dict[str, str]) -> None:
    tracker = InMemoryTracker()
    run_id = _run(tracker, {**tags, MODEL_URI_TAG: "models:/m-1"}, best=0.9)
    with pytest.raises(PromotionRefused, match="only a converged run can be promoted") as refused:
        _promote(tracker, run_id)
    assert run_id in str(refused.value) and repr(tags["diagnosis.label"]) in str(refused.value)
    assert isinstance(refused.value, SiameseInputError)  # the CLI's bad input: exit 2


def test_a_run_without_a_diagnosis_is_refused() -> None:
    tracker = InMemoryTracker()
    run_id = _run(tracker, {})
    with pytest.raises(PromotionRefused, match="'no diagnosis'"):
        _promote(tracker, run_id)


def test_a_converged_run_without_a_logged_model_is_refused() -> None:
    tracker = InMemoryTracker()
    run_id = _run(tracker, {"diagnosis.verdict": "converged"}, best=0.9)
    with pytest.raises(PromotionRefused, match="no logged model"):
        _promote(tracker, run_id)
    no_metric = _run(tracker, {"diagnosis.verdict": "converged", MODEL_URI_TAG: "models:/m-1"})
    with pytest.raises(PromotionRefused, match="no logged model"):
        _promote(tracker, no_metric)
