"""`predict` builds a logged model from its run's best.pt only when that is provably the same
model, and then scores exactly as the pt2 model MLflow loads; anything else goes to MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

import siamese
from siamese.config import TrainConfig
from siamese.model import THRESHOLD_KEY, SiameseNet, build_model
from siamese.scoring import PairScorer, decision_threshold, score, stack_pairs
from siamese.train.checkpoint import save_checkpoint
from tests.tracking.registered import digit_png, log_converged_run
from tracking import embedded_target
from tracking.checkpoint_scorer import VERSION_TAG, scorer_from_run_checkpoint
from tracking.local_artifacts import local_artifact_dir
from tracking.models import load_logged_scorer
from tracking.pt2_archive import same_tensors
from tracking.registry import promote
from tracking.sqlite_reader import SqliteReader, open_reader

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker

PAIRS = np.random.default_rng(0).random((6, 2, 40, 50), dtype=np.float32)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def tracker(home: Path) -> MlflowTracker:
    from tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(embedded_target(home))


@pytest.fixture(scope="module")
def reader(home: Path, tracker: MlflowTracker) -> SqliteReader:
    found = open_reader(embedded_target(home), lambda: tracker)
    assert found is not None
    return found


def _net(seed: int, threshold: float = 0.7) -> SiameseNet:
    torch.manual_seed(seed)
    net = build_model(TrainConfig(head="contrastive"))
    net.set_decision_threshold(threshold)
    return net


def _run(
    tracker: MlflowTracker,
    folder: Path,
    weights: dict[str, Any],
    exported: SiameseNet,
    version: str = siamese.__version__,
) -> str:
    """A converged run as TrackingCallback leaves one: `exported` logged as its pt2 model,
    `weights` as its checkpoints/best.pt, the siamese-lab version as a tag."""
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(head="contrastive").to_dict()
    payload = {"model": weights, "optimizer": {}, "epoch": 1, "config": config}
    save_checkpoint(folder / "best.pt", {**payload, "history": {}, "rng": {}})
    run_id = log_converged_run(tracker, PairScorer(exported).eval())
    tracker.log_artifact(run_id, folder / "best.pt", "checkpoints")
    tracker.set_tags(run_id, {VERSION_TAG: version})
    tracker.flush()
    return run_id


@pytest.fixture(scope="module")
def good_run(tracker: MlflowTracker, reader: SqliteReader, home: Path) -> str:
    net = _net(0)
    run_id = _run(tracker, home / "good", net.state_dict(), net)
    assert promote(reader, run_id, "ck").promoted
    return run_id


def test_the_checkpoint_scores_exactly_as_the_logged_model(
    tracker: MlflowTracker, reader: SqliteReader, good_run: str
) -> None:
    model_id = tracker.get_run(good_run).tags["siamese_lab.model_uri"].removeprefix("models:/")
    for uri in (
        "models:/ck@champion",
        "models:/ck/1",
        f"models:/{model_id}",
        f"runs:/{good_run}/model",
        f"runs:/{good_run[:8]}/model",
    ):
        fast = scorer_from_run_checkpoint(reader, uri)
        assert fast is not None, uri
        logged = load_logged_scorer(tracker, uri)
        np.testing.assert_allclose(score(fast, PAIRS), score(logged, PAIRS), rtol=0, atol=1e-6)
        assert decision_threshold(fast) == decision_threshold(logged) == pytest.approx(0.7)


def test_other_uris_are_left_to_mlflow(reader: SqliteReader, good_run: str) -> None:
    for uri in ("models:/ck@other", "models:/ck/2", "models:/ck/latest", "models:/ck@latest"):
        assert scorer_from_run_checkpoint(reader, uri) is None, uri
    assert scorer_from_run_checkpoint(reader, f"runs:/{good_run}/checkpoints") is None


def test_a_model_that_is_not_its_checkpoint_is_loaded_by_mlflow(
    tracker: MlflowTracker, reader: SqliteReader, home: Path, tmp_path: Path
) -> None:
    # Same names and shapes, other values: the weights' bytes tell them apart.
    run_id = _run(tracker, home / "other", _net(0).state_dict(), exported=_net(1))
    assert scorer_from_run_checkpoint(reader, f"runs:/{run_id}/model") is None
    # ...and predict (a fresh process: it reads the store directly) then scores with the
    # logged model, not with the checkpoint.
    left, right = digit_png(tmp_path, 0), digit_png(tmp_path, 5)
    model = ["--model", f"runs:/{run_id}/model"]
    command = [sys.executable, "-m", "search.cli", "predict", "--home", str(home), *model]
    done = subprocess.run(
        [*command, "--json", str(left), str(right)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert done.returncode == 0, done.stderr
    logged = load_logged_scorer(tracker, f"runs:/{run_id}/model")
    expected = score(logged, stack_pairs([(left, right)]))
    assert json.loads(done.stdout)["pairs"][0]["p_same"] == pytest.approx(float(expected[0]))
    checkpoint = score(PairScorer(_net(0)).eval(), stack_pairs([(left, right)]))
    assert float(expected[0]) != pytest.approx(float(checkpoint[0]))  # the two differ


def test_a_run_of_another_version_or_an_older_checkpoint_is_loaded_by_mlflow(
    tracker: MlflowTracker, reader: SqliteReader, home: Path
) -> None:
    net = _net(2)
    older_version = _run(tracker, home / "v", net.state_dict(), net, version="0.1.0")
    assert scorer_from_run_checkpoint(reader, f"runs:/{older_version}/model") is None
    no_threshold = {k: v for k, v in net.state_dict().items() if k != THRESHOLD_KEY}
    older_file = _run(tracker, home / "t", no_threshold, net)
    assert scorer_from_run_checkpoint(reader, f"runs:/{older_file}/model") is None


def test_an_unreadable_checkpoint_is_loaded_by_mlflow(
    tracker: MlflowTracker, reader: SqliteReader, home: Path
) -> None:
    net = _net(3)
    run_id = _run(tracker, home / "bad", net.state_dict(), net)
    artifact = reader.artifact_dir(run_id)
    assert artifact is not None
    checkpoint = artifact / "checkpoints" / "best.pt"
    data = bytearray(checkpoint.read_bytes())
    checkpoint.unlink()  # a hard link to the run's file: replace it, do not write through it
    checkpoint.write_bytes(bytes(data[: len(data) // 2]))
    assert scorer_from_run_checkpoint(reader, f"runs:/{run_id}/model") is None


def test_same_tensors_compares_every_tensor(good_run: str, reader: SqliteReader) -> None:
    held = reader.version_by_alias("ck", "champion")
    assert held is not None and held.storage_location is not None
    folder = local_artifact_dir(held.storage_location)
    assert folder is not None
    pt2 = folder / "data" / "model.pt2"
    scorer = PairScorer(_net(0)).eval()
    assert same_tensors(pt2, scorer)
    with torch.no_grad():
        scorer.net.pixel_mean += 1e-6  # a buffer: not a parameter, still part of the model
    assert not same_tensors(pt2, scorer)
    assert not same_tensors(pt2.parent / "missing.pt2", scorer)
