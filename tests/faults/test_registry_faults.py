"""Against a real MLflow store (issue 9 item 11): `predict` on a run that logged no model
says so instead of MLflow's "Failed to download artifacts", and promoting the champion's
own run again says it already is the champion instead of "does not beat"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from search.cli import cli
from siamese.config import TrainConfig
from siamese.model import build_model
from siamese.scoring import PairScorer
from tests.faults.expect import bad_input
from tests.tracking.registered import log_converged_run
from tracking import FINISHED, embedded_target

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def tracker(home: Path) -> MlflowTracker:
    from tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(embedded_target(home))


@pytest.fixture(scope="module")
def bare_run(tracker: MlflowTracker) -> str:
    """A run that ended without a model, as a failed diagnosis or a trial leaves it."""
    run_id = tracker.start_run("collapsed", {}, {"diagnosis.verdict": "failed"})
    tracker.end_run(run_id, FINISHED)
    return run_id


@pytest.fixture(scope="module")
def converged_run(tracker: MlflowTracker) -> str:
    """A converged run with its logged model, tagged as TrackingCallback tags one."""
    return log_converged_run(tracker, PairScorer(build_model(TrainConfig())))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / "left.png", folder / "right.png"]
    for shade, path in enumerate(paths):
        Image.new("L", (50, 40), 60 * shade).save(path)
    return [str(p) for p in paths]


def _invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--home", str(home)])


@pytest.mark.parametrize("length", [32, 8])
def test_predict_on_a_run_without_a_model_says_the_run_has_none(
    home: Path, bare_run: str, images: list[str], length: int
) -> None:
    model = f"runs:/{bare_run[:length]}/model"
    line = bad_input(_invoke(home, "predict", "--model", model, *images))
    assert f"run {bare_run} has no logged model" in line
    assert "only a converged, completed run logs one" in line
    assert "Failed to download" not in line


def test_predict_on_a_run_with_a_model_still_scores(
    home: Path, converged_run: str, images: list[str]
) -> None:
    result = _invoke(home, "predict", "--model", f"runs:/{converged_run}/model", *images, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["pairs"]) == 1


def test_promoting_the_champion_again_says_it_already_is(
    home: Path, converged_run: str, tracker: MlflowTracker
) -> None:
    first = _invoke(home, "promote", "--run", converged_run, "--name", "again")
    assert first.exit_code == 0 and "version 1 is now @champion" in first.output, first.output
    for force in ([], ["--force"]):
        again = _invoke(home, "promote", "--run", converged_run, "--name", "again", *force)
        assert again.exit_code == 0, again.output
        assert f"run {converged_run} already is again@champion (version 1" in again.output
        assert "does not beat" not in again.output
    versions = tracker.client.search_model_versions("name = 'again'")
    assert [str(v.version) for v in versions] == ["1"]  # no copy was registered
