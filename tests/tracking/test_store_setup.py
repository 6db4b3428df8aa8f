"""The embedded store is created once and safely, even by several processes at once."""

import subprocess
import sys
from pathlib import Path

import pytest

STARTER = """
import sys
from pathlib import Path
from tracking import embedded_target
from tracking.mlflow_tracker import MlflowTracker
tracker = MlflowTracker(embedded_target(Path(sys.argv[1])))
run_id = tracker.start_run(f"proc-{sys.argv[2]}", {}, {})
tracker.end_run(run_id, "FINISHED")
"""


@pytest.mark.slow
def test_processes_starting_at_once_share_one_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(home), str(i)], stderr=subprocess.PIPE, text=True
        )
        for i in range(3)
    ]
    errors = [p.communicate(timeout=180)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], errors
    from tracking import embedded_target
    from tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(embedded_target(home))
    names = sorted(r.info.run_name for r in tracker.client.search_runs([tracker.experiment_id]))
    assert names == ["proc-0", "proc-1", "proc-2"]
    assert len(tracker.client.search_experiments()) == 2  # Default + siamese-lab, created once


def test_the_experiment_opens_on_its_runs_in_mlflow_3(tmp_path: Path) -> None:
    import mlflow

    from tracking.experiment import EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT
    from tracking.mlflow_tracker import MlflowTracker
    from tracking.store import embedded_target

    fresh = MlflowTracker(embedded_target(tmp_path / "a"))
    experiment = fresh.client.get_experiment(fresh.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_DEVELOPMENT
    older = embedded_target(tmp_path / "b")  # an experiment made before the tag existed
    (tmp_path / "b").mkdir()
    client = mlflow.MlflowClient(older.uri)
    made = client.create_experiment(older.experiment, older.artifact_root)
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(made).tags
    MlflowTracker(older)
    assert client.get_experiment(made).tags[EXPERIMENT_KIND_TAG] == MODEL_DEVELOPMENT
