"""A small real search on the CPU: Optuna and MLflow must agree on every trial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pytest
from click.testing import CliRunner

from search.cli import cli
from search.env import LabEnv
from search.storage import open_storage
from tracking import embedded_target

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker

# A real search with tracking end to end (~30 s): CI runs it.
pytestmark = pytest.mark.slow

TINY = [
    "--epochs",
    "3",
    "--train-pairs",
    "128",
    "--val-pairs",
    "64",
    "--device",
    "cpu",
    "--pruner",
    "median",
]
GOOD = {"lr": 1e-3, "optimizer": "adam", "head": "abs", "dropout": 0.0}


def invoke(home: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, ["search", "--home", str(home), "--study", "t", *TINY, "--json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def load(home: Path) -> optuna.Study:
    return optuna.load_study(study_name="t", storage=open_storage(LabEnv(home).study_storage_url()))


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    home = tmp_path_factory.mktemp("home")
    invoke(home, "--trials", "0")  # creates the study, runs nothing
    study = load(home)
    for _ in range(3):
        study.enqueue_trial(GOOD)  # three good trials, so the median pruner has a reference
    study.enqueue_trial(
        {"lr": 50.0, "optimizer": "sgd", "momentum": 0.0, "head": "sq", "dropout": 0.0}
    )
    study.enqueue_trial(
        {"lr": 1e-6, "optimizer": "sgd", "momentum": 0.9, "head": "relu2", "dropout": 0.0}
    )
    return home, invoke(home, "--trials", "5")


def _tracker(home: Path) -> MlflowTracker:
    from tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(embedded_target(home))


def test_every_trial_is_one_nested_run(searched: tuple[Path, dict[str, Any]]) -> None:
    home, summary = searched
    study, tracker = load(home), _tracker(home)
    trials = study.get_trials()
    assert len(trials) == 5
    children = {r.run_id: r for r in tracker.child_runs(summary["parent_run_id"])}
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == set(children)
    for trial in trials:
        run = children[trial.user_attrs["mlflow_run_id"]]
        # the name ends with the outcome: the runs table tells them apart at a glance
        assert run.name == (
            f"trial-{trial.number} · {trial.state.name} · {trial.user_attrs['diagnosis']}"
            if "diagnosis" in trial.user_attrs
            else f"trial-{trial.number} · FAIL · error"
        ), run.name
        assert run.tags["optuna.state"] == trial.state.name
        assert run.tags["optuna.study"] == "t"
        assert run.status != "RUNNING"


def test_states_and_statuses(searched: tuple[Path, dict[str, Any]]) -> None:
    home, _ = searched
    study, tracker = load(home), _tracker(home)
    by_number = {t.number: t for t in study.get_trials()}
    diverged = by_number[3]
    assert (
        diverged.state == optuna.trial.TrialState.FAIL
        and diverged.user_attrs["diagnosis"] == "diverged"
    )
    assert tracker.get_run(diverged.user_attrs["mlflow_run_id"]).status == "FAILED"
    seed_like = by_number[4]
    assert seed_like.state == optuna.trial.TrialState.PRUNED
    # stopped by the default search's early stop, in its first epoch, as stalled
    assert seed_like.user_attrs["early_stop"]["epoch"] == 1
    assert "stalled" in seed_like.user_attrs["early_stop"]["kinds"]
    pruned_run = tracker.get_run(seed_like.user_attrs["mlflow_run_id"])
    assert pruned_run.status == "FINISHED" and pruned_run.tags["optuna.state"] == "PRUNED"
    # the pruned trial's curve stops where it stopped: one MLflow point per reported epoch
    steps = [s for s, _ in tracker.metric_history(pruned_run.run_id, "val_auc")]
    assert steps == sorted(seed_like.intermediate_values) and len(steps) < 3
    good = by_number[0]
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert good.value is not None and good.value > 0.6
    assert len(tracker.metric_history(good.user_attrs["mlflow_run_id"], "val_auc")) == 3


def test_parent_run_carries_the_report(
    searched: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    home, summary = searched
    tracker = _tracker(home)
    parent = tracker.get_run(summary["parent_run_id"])
    assert parent.status == "FINISHED" and parent.params["sampler"] == "tpe"
    assert parent.params["space.lr"].startswith("log-uniform [1e-06")
    artifacts = tracker.list_artifacts(parent.run_id)
    assert "report.md" in artifacts and "figures/optimization_history.png" in artifacts
    assert parent.tags["mlflow.note.content"].startswith("# Study `t`")  # its overview page
    report = summary["report"]
    assert report["states"] == {"COMPLETE": 3, "FAIL": 1, "PRUNED": 1}
    assert report["best"]["number"] in (0, 1, 2)


def test_report_command_and_promote_study(searched: tuple[Path, dict[str, Any]]) -> None:
    home, _ = searched
    result = CliRunner().invoke(cli, ["report", "--study", "t", "--home", str(home)])
    assert (
        result.exit_code == 0 and "Failure map" in result.output and "Best trial" in result.output
    )
    promoted = CliRunner().invoke(cli, ["promote", "--study", "t", "--home", str(home), "--json"])
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.stdout)["promoted"]


def test_resume_adds_trials_to_the_same_study(searched: tuple[Path, dict[str, Any]]) -> None:
    home, first = searched
    again = invoke(home, "--trials", "1")
    assert again["parent_run_id"] == first["parent_run_id"]
    assert len(load(home).get_trials()) == 6
    assert len(_tracker(home).child_runs(first["parent_run_id"])) == 6


def test_failure_map_names_the_failing_regions() -> None:
    from search.report import failure_map

    def trial(number: int, lr: float, head: str, label: str) -> optuna.trial.FrozenTrial:
        verdict = "converged" if label == "converged" else "failed"
        return optuna.trial.create_trial(
            params={"lr": lr, "head": head},
            distributions={
                "lr": optuna.distributions.FloatDistribution(1e-6, 1e-1, log=True),
                "head": optuna.distributions.CategoricalDistribution(["relu2", "sq"]),
            },
            value=0.5,
            user_attrs={"diagnosis": label, "verdict": verdict},
        )

    trials = [trial(i, 2e-6, "sq", "stalled") for i in range(4)]
    trials += [trial(i, 1e-3, "relu2", "collapsed") for i in range(3)]
    trials += [trial(i, 1e-3, "sq", "converged") for i in range(5)]
    text = [str(r) for r in failure_map(trials)]
    assert "head=relu2: 3 of 3 collapsed" in text
    assert "lr < 1e-5: 4 of 4 stalled" in text


def test_report_reads_the_study_search_makes_by_default(tmp_path: Path) -> None:
    """`search` without --study makes `siamese-lab`; `report` without one read nothing
    (it required --study)."""
    tiny = ["--train-pairs", "64", "--val-pairs", "32", "--trials", "0", "--no-track"]
    made = CliRunner().invoke(cli, ["--home", str(tmp_path), "search", *tiny])
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(cli, ["report", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Study `siamese-lab`")
