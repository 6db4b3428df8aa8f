"""The SQLite reader reads what MLflow reads, from the same store: runs (params, tags, latest
metrics with NaN and infinities, a renamed run), artifacts, run-id prefixes, the errors for
unknown runs, registry aliases and versions; it writes through MLflow; and it stands aside
(None) wherever it would have to guess."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from siamese.config import TrainConfig
from siamese.errors import SiameseInputError
from siamese.model import build_model
from siamese.scoring import PairScorer
from tests.tracking.registered import log_converged_run
from tracking import FINISHED, RunView, TrackingUnavailable, embedded_target
from tracking.registry import SELECTION_METRIC, promote
from tracking.sqlite_reader import SqliteReader, open_reader
from tracking.store import TrackingTarget

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> TrackingTarget:
    return embedded_target(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def tracker(target: TrackingTarget) -> MlflowTracker:
    from tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(target)


@pytest.fixture(scope="module")
def reader(target: TrackingTarget, tracker: MlflowTracker) -> SqliteReader:
    found = open_reader(target, lambda: tracker)
    assert found is not None
    return found


def _plain(run: RunView) -> RunView:
    """NaN as a string: NaN != NaN would fail any comparison of two equal runs."""
    metrics = {k: "nan" if math.isnan(v) else v for k, v in run.metrics.items()}
    return RunView(
        run.run_id,
        run.name,
        run.status,
        run.params,
        run.tags,
        metrics,  # type: ignore[arg-type]
        run.experiment_id,
    )


def test_a_run_reads_back_as_mlflow_reads_it(tracker: MlflowTracker, reader: SqliteReader) -> None:
    run_id = tracker.start_run("r1", {"lr": 0.001, "target": None}, {"k": "v"})
    odd = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "val_auc": 0.7}
    tracker.log_metrics(run_id, odd, step=1)
    tracker.log_metrics(run_id, {"val_auc": 0.8}, step=2)
    tracker.rename_run(run_id, "r1 · COMPLETE · converged")
    tracker.end_run(run_id, FINISHED)
    tracker.flush()
    mine = reader.get_run(run_id)
    assert _plain(mine) == _plain(tracker.get_run(run_id))
    assert mine.name == "r1 · COMPLETE · converged" and mine.status == FINISHED
    assert mine.metrics["val_auc"] == 0.8 and math.isnan(mine.metrics["nan"])
    assert mine.params == {"lr": "0.001", "target": "None"} and mine.tags["k"] == "v"


def test_artifacts_are_listed_and_read_as_mlflow_does(
    tracker: MlflowTracker, reader: SqliteReader, tmp_path: Path
) -> None:
    run_id = tracker.start_run("r", {}, {})
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    tracker.log_artifact(run_id, checkpoint, "checkpoints")
    tracker.log_text(run_id, '{"verdict": "converged"}', "diagnosis.json")
    assert reader.list_artifacts(run_id) == tracker.list_artifacts(run_id)
    assert reader.list_artifacts(run_id) == ["checkpoints/best.pt", "diagnosis.json"]
    read = reader.download_artifact(run_id, "diagnosis.json", tmp_path / "mine")
    assert read.read_text() == '{"verdict": "converged"}'
    assert reader.download_artifact(run_id, "checkpoints/best.pt", tmp_path / "mine").read_bytes()
    bare = tracker.start_run("bare", {}, {})
    assert reader.list_artifacts(bare) == tracker.list_artifacts(bare) == []


def test_prefixes_and_unknown_runs_are_answered_in_mlflows_words(
    tracker: MlflowTracker, reader: SqliteReader
) -> None:
    run_id = tracker.start_run("r", {}, {})
    assert reader.resolve_run_id(run_id[:8].upper()) == run_id
    assert reader.run_ids_starting_with(run_id[:7]) == tracker.run_ids_starting_with(run_id[:7])
    for given in ("0" * 32, "f" * 31):
        with pytest.raises((SiameseInputError, TrackingUnavailable)) as theirs:
            tracker.get_run(tracker.resolve_run_id(given))
        with pytest.raises((SiameseInputError, TrackingUnavailable)) as mine:
            reader.get_run(reader.resolve_run_id(given))
        assert str(mine.value) == str(theirs.value) and type(mine.value) is type(theirs.value)


def test_the_registry_reads_back_and_promote_registers_through_mlflow(
    tracker: MlflowTracker, reader: SqliteReader
) -> None:
    run_id = log_converged_run(tracker, PairScorer(build_model(TrainConfig())))
    tracker.flush()  # its metrics are queued; the reader sees what has landed
    assert reader.version_by_alias("reader", "champion") is None
    first = promote(reader, run_id, "reader")  # reads from SQLite, registers with MLflow
    assert first.promoted and first.version == "1"
    held = reader.version_by_alias("reader", "champion")
    theirs = tracker.client.get_model_version_by_alias("reader", "champion")
    assert held is not None and held.version == str(theirs.version) == "1"
    assert held.run_id == theirs.run_id == run_id and held.source == theirs.source
    assert held.tags == theirs.tags and held.tags[SELECTION_METRIC] == "0.9"
    again = promote(reader, run_id, "reader")
    assert not again.promoted and f"run {run_id} already is reader@champion" in again.message
    assert reader.model_version("reader", "2") is None
    model_id = held.source.removeprefix("models:/")
    logged = reader.logged_model(model_id)
    assert logged is not None and logged.source_run_id == run_id and logged.name == "model"
    assert reader.logged_models_of_run(run_id, "model") == [model_id]


def test_writes_go_through_mlflow_and_reads_see_them(reader: SqliteReader) -> None:
    run_id = reader.start_run("written", {"a": 1}, {"t": "x"})
    reader.log_metrics(run_id, {"m": 0.5}, step=1)  # queued by MLflow's writer thread
    run = reader.get_run(run_id)
    assert run.name == "written" and run.params == {"a": "1"} and run.metrics == {"m": 0.5}


def test_it_stands_aside_where_it_would_guess(
    tmp_path: Path, target: TrackingTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never() -> MlflowTracker:
        raise AssertionError("nothing to write")

    assert open_reader(TrackingTarget("http://127.0.0.1:5000", None), never) is None
    assert open_reader(embedded_target(tmp_path / "none"), never) is None  # MLflow creates it
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE runs (run_uuid TEXT)")  # a schema it does not know
    assert open_reader(TrackingTarget(f"sqlite:///{other}", None), never) is None
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team")
    assert open_reader(target, never) is None
