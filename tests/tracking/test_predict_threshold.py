"""predict decides with the threshold a registry model stores (a real MLflow store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from click.testing import CliRunner, Result

from search.cli import cli
from siamese.config import TrainConfig
from siamese.model import THRESHOLD_KEY as THRESHOLD
from siamese.model import build_model
from siamese.scoring import PairScorer
from tests.tracking.registered import digit_png, log_converged_run
from tracking import embedded_target

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def tracker(home: Path) -> MlflowTracker:
    from tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(embedded_target(home))


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_predict_decides_at_the_threshold_the_registry_model_stores(
    home: Path, tmp_path: Path, tracker: MlflowTracker
) -> None:
    left, right = digit_png(tmp_path, 0), digit_png(tmp_path, 1)
    (tmp_path / "pairs.csv").write_text(
        f"left,right,same\n{left.name},{right.name},0\n{left.name},{left.name},1\n"
    )
    torch.manual_seed(0)
    net = build_model(TrainConfig(head="contrastive"))
    # Identical images: distance 0, P(same) = sigmoid(4) = 0.982; decided "same" at 0.5,
    # "different" at the 0.99 this model stores.
    net.set_decision_threshold(0.99)
    run_id = log_converged_run(tracker, PairScorer(net))
    promoted = _invoke("promote", "--run", run_id, "--name", "strict", "--home", str(home))
    assert promoted.exit_code == 0, promoted.output
    model = ["--model", "models:/strict@champion", "--pairs", str(tmp_path / "pairs.csv")]
    as_json = json.loads(_invoke("predict", "--home", str(home), *model, "--json").stdout)
    assert as_json["threshold"] == pytest.approx(0.99)
    identical = as_json["pairs"][1]
    assert identical["p_same"] == pytest.approx(0.982, abs=1e-3)
    assert identical["decision"] == "different" and identical["same"] == 1
    text = _invoke("predict", "--home", str(home), *model).output.splitlines()
    assert text[1].startswith("0.9820  different")
    assert text[-1] == "1 of 2 pairs right at the threshold P(same) >= 0.9900"


def test_a_registry_model_without_a_threshold_decides_at_half_and_says_so(
    home: Path, tmp_path: Path, tracker: MlflowTracker
) -> None:
    left = digit_png(tmp_path, 0)
    net = build_model(TrainConfig(head="contrastive"))
    del net._buffers[THRESHOLD]  # as models logged before the threshold existed
    run_id = log_converged_run(tracker, PairScorer(net))
    result = _invoke(
        "predict", "--home", str(home), "--model", f"runs:/{run_id}/model", str(left), str(left)
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"note: runs:/{run_id}/model stores no decision threshold (logged by an older "
        "version): P(same) >= 0.5 decides"
    ]
    assert result.stdout.splitlines() == [
        f"0.9820  same       {left}  {left}",
        "decided at the threshold P(same) >= 0.5000",
    ]


def test_loading_a_logged_model_leaves_no_copy_behind(
    tmp_path: Path, tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow downloads a model into a temp folder it never removes: every predict left an
    8 MB copy in /tmp. The scorer still scores once its files are gone."""
    import tempfile

    from tracking.models import load_logged_scorer

    net = build_model(TrainConfig(head="contrastive"))
    run_id = log_converged_run(tracker, PairScorer(net))
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    scorer = load_logged_scorer(tracker, f"runs:/{run_id}/model")
    assert list(temp.iterdir()) == []
    same_image_twice = torch.rand(1, 1, 40, 50).expand(1, 2, 40, 50)  # distance 0
    with torch.no_grad():
        p_same = float(scorer(same_image_twice).squeeze())
    assert p_same == pytest.approx(0.982, abs=1e-3)
