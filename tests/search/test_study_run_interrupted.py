"""A Ctrl-C before the first trial (while the study is announced) ends the study's MLflow run
KILLED: it stayed RUNNING, since the code that ends it was entered only once trials ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from search.cli import cli
from tracking.base import KILLED, KIND_TAG, STUDY_KIND
from tracking.mlflow_tracker import MlflowTracker
from tracking.store import embedded_target

TINY = ["--epochs", "1", "--train-pairs", "64", "--val-pairs", "32", "--device", "cpu"]


def test_ctrl_c_while_the_study_is_announced_ends_its_run_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("search.cli.search._announce", interrupted)
    home = tmp_path / "home"
    result = CliRunner().invoke(cli, ["search", "--home", str(home), "--trials", "1", *TINY])
    assert result.exit_code != 0
    tracker = MlflowTracker(embedded_target(home))
    runs = tracker.client.search_runs([tracker.experiment_id])
    (study,) = [r for r in runs if r.data.tags.get(KIND_TAG) == STUDY_KIND]
    assert study.info.status == KILLED
    assert len(runs) == 1  # no trial had started
