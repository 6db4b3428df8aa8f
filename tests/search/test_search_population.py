"""`search --population 4` on the CPU: trials asked four at a time, trained together, each
its own Optuna trial and MLflow run with curves, checkpoint and diagnosis, matching `fit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from search.setup import read_setup
from search.space import suggest_config
from siamese import fit, prepare_data
from tests.search.test_search_e2e import GOOD, _tracker, invoke, load

pytestmark = pytest.mark.slow  # a real tracked search (~1 min on 2 cores)

# Two members of one group (same head and optimizer), a member in a group of its own, and
# one that diverges at once: four trials of one batch. The fifth is the sampler's own.
ENQUEUED = (
    GOOD,
    {**GOOD, "lr": 3e-3},
    {"lr": 1e-3, "optimizer": "sgd", "momentum": 0.9, "head": "sq", "dropout": 0.0},
    {"lr": 50.0, "optimizer": "sgd", "momentum": 0.0, "head": "sq", "dropout": 0.0},
)

FP32 = ("--precision", "fp32")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    home = tmp_path_factory.mktemp("home")
    # float32: members then end where fit ends within 5e-3 (bf16 rounds the member's and
    # fit's kernels apart by more; tests/siamese/test_population.py holds bf16 near fit).
    invoke(home, "--trials", "0", *FP32)  # creates the study, runs nothing
    study = load(home)
    for params in ENQUEUED:
        study.enqueue_trial(params)
    return home, invoke(home, "--trials", "5", "--population", "4", *FP32)


def _trials(home: Path) -> dict[int, FrozenTrial]:
    return {t.number: t for t in load(home).get_trials()}


def test_trials_are_asked_and_trained_four_at_a_time(searched: tuple[Path, Any]) -> None:
    trials = _trials(searched[0])
    assert sorted(trials) == [0, 1, 2, 3, 4]
    batch = [trials[n] for n in range(4)]
    # every member of the batch started before any of them ended: one population
    assert max(_start(t) for t in batch) < min(_end(t) for t in batch)
    # the fifth was asked once the batch was told, in a batch of its own
    assert _start(trials[4]) > max(_end(t) for t in batch)
    states = [trials[n].state for n in range(4)]
    assert states[:2] == [TrialState.COMPLETE] * 2 and states[3] == TrialState.FAIL
    assert states[2] in (TrialState.COMPLETE, TrialState.PRUNED)  # slow SGD: early stop may
    assert trials[3].user_attrs["diagnosis"] == "diverged"


def test_every_member_is_its_own_run_with_curves_checkpoint_and_diagnosis(
    searched: tuple[Path, dict[str, Any]],
) -> None:
    home, summary = searched
    tracker, trials = _tracker(home), _trials(home)
    children = {r.run_id: r for r in tracker.child_runs(summary["parent_run_id"])}
    assert {t.user_attrs["mlflow_run_id"] for t in trials.values()} == set(children)
    for trial in trials.values():
        run = children[trial.user_attrs["mlflow_run_id"]]
        label = trial.user_attrs["diagnosis"]
        assert run.name == f"trial-{trial.number} · {trial.state.name} · {label}"
        assert run.tags["optuna.state"] == trial.state.name and run.tags["diagnosis.label"] == label
        artifacts = tracker.list_artifacts(run.run_id)
        assert {"diagnosis.json", "curves.png"} <= set(artifacts), artifacts
        # best.pt; last.pt for the trial that diverged in its first epoch (it has no best)
        assert any(a in artifacts for a in ("checkpoints/best.pt", "checkpoints/last.pt"))
        epochs = [step for step, _ in tracker.metric_history(run.run_id, "val_auc")]
        assert epochs == sorted(trial.intermediate_values) or trial.state == TrialState.FAIL
    assert children[trials[0].user_attrs["mlflow_run_id"]].status == "FINISHED"
    assert children[trials[3].user_attrs["mlflow_run_id"]].status == "FAILED"


@pytest.mark.parametrize("number", [0, 1, 2])
def test_a_member_ends_where_fit_ends(searched: tuple[Path, Any], number: int) -> None:
    """The member's curve (from MLflow) is the curve `fit` draws for the same config."""
    home = searched[0]
    study, trial = load(home), _trials(home)[number]
    setup = read_setup(study)
    fixed = optuna.trial.FixedTrial(trial.params, number=trial.number)
    config = suggest_config(fixed, setup.base_config(None), setup.search_space())
    alone = fit(config, prepare_data(config.data)).history
    tracker = _tracker(home)
    run_id = trial.user_attrs["mlflow_run_id"]
    for name in ("val_auc", "train_loss"):
        member = [value for _, value in tracker.metric_history(run_id, name)]
        expected = [getattr(record, name) for record in alone.records]
        assert member == pytest.approx(expected, abs=5e-3), name


def _start(trial: FrozenTrial) -> float:
    assert trial.datetime_start is not None
    return trial.datetime_start.timestamp()


def _end(trial: FrozenTrial) -> float:
    assert trial.datetime_complete is not None
    return trial.datetime_complete.timestamp()
