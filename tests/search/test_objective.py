"""The Objective for real: tiny CPU trainings inside in-memory Optuna studies, tracked by the
in-memory tracker. Optuna's trial and the tracker's run must tell the same story."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from search.objective import Objective, PruningCallback, TrialDiverged
from search.space import FloatRange, SearchSpace
from siamese import DataConfig, PairData, TrainConfig
from siamese.train import EpochRecord, History
from tracking import FAILED, FINISHED, InMemoryTracker
from tracking.base import ERROR_TAG, MODEL_URI_TAG, STATE_TAG, RunView

BASE = TrainConfig(
    epochs=2, batch_size=32, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192)
)
# lr reaches 50 so that the diverging trial is inside the space
SPACE = SearchSpace(lr=FloatRange(1e-6, 100.0, log=True), fixed={"dropout": 0.0})
GOOD = {"lr": 1e-3, "optimizer": "adam", "head": "sq"}
DIVERGING = {"lr": 50.0, "optimizer": "sgd", "momentum": 0.0, "head": "sq"}


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return True


@dataclass
class Ran:
    """One trial run through the Objective, with what Optuna and the tracker kept of it."""

    study: optuna.Study
    tracker: InMemoryTracker
    parent_run_id: str

    @property
    def trial(self) -> FrozenTrial:
        return self.study.get_trials()[-1]

    @property
    def run(self) -> RunView:
        return self.tracker.get_run(str(self.trial.user_attrs["mlflow_run_id"]))


def run_trial(
    params: dict[str, object],
    data: PairData,
    root: Path,
    pruner: optuna.pruners.BasePruner | None = None,
    earlier: tuple[FrozenTrial, ...] = (),
    base: TrainConfig = BASE,
) -> Ran:
    """Run one trial with fixed params, after `earlier` trials added as already done."""
    tracker = InMemoryTracker()
    parent = tracker.start_run("study-s", {}, {"optuna.study": "s"})
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for frozen in earlier:
        study.add_trial(frozen)
    study.enqueue_trial(params)
    objective = Objective(base, SPACE, data, root, "s", tracker, parent, device="cpu")
    study.optimize(objective, n_trials=1, catch=(TrialDiverged,))
    return Ran(study, tracker, parent)


def done(value: float, verdict: str) -> FrozenTrial:
    """An earlier COMPLETE trial: only its value and verdict matter to the model rule."""
    diagnosis = "converged" if verdict == "converged" else "stalled"
    return optuna.trial.create_trial(
        value=value, user_attrs={"verdict": verdict, "diagnosis": diagnosis}
    )


@pytest.fixture(scope="module")
def good(small_data: PairData, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    # a failed trial scoring higher does not count; the converged one at 0.5 is beaten
    earlier = (done(0.999, "failed"), done(0.5, "converged"))
    return run_trial(GOOD, small_data, tmp_path_factory.mktemp("good"), earlier=earlier)


def test_a_trial_is_one_run_nested_under_the_study_run(good: Ran) -> None:
    run = good.run
    assert run.tags["mlflow.parentRunId"] == good.parent_run_id
    assert [r.run_id for r in good.tracker.child_runs(good.parent_run_id)] == [run.run_id]
    assert run.name == f"trial-{good.trial.number} · COMPLETE · converged"
    assert run.status == FINISHED
    assert run.tags["optuna.study"] == "s"
    assert run.tags["optuna.trial_number"] == str(good.trial.number)
    assert run.params["lr"] == "0.001" and run.params["head"] == "sq"
    assert run.params["device"] == "cpu" and run.params["data.train_pairs"] == "384"


def test_a_completed_trial_has_state_diagnosis_and_one_point_per_epoch(good: Ran) -> None:
    trial, run = good.trial, good.run
    assert trial.state == TrialState.COMPLETE and run.tags[STATE_TAG] == "COMPLETE"
    assert run.tags["diagnosis.verdict"] == "converged", run.tags.get("diagnosis.summary")
    assert run.tags["diagnosis.label"] == "converged"
    history = good.tracker.metric_history(run.run_id, "val_auc")
    assert [step for step, _ in history] == [1, 2]
    assert trial.value == pytest.approx(max(v for _, v in history))
    assert [s for s, _ in good.tracker.metric_history(run.run_id, "train_loss")] == [1, 2]
    assert trial.intermediate_values == dict(history)


def test_the_trial_records_its_run_and_diagnosis(good: Ran) -> None:
    attrs = good.trial.user_attrs
    assert attrs["mlflow_run_id"] == good.run.run_id
    assert attrs["diagnosis"] == "converged" and attrs["verdict"] == "converged"
    assert Path(attrs["checkpoint_dir"]).name == f"trial-{good.trial.number}"
    assert (Path(attrs["checkpoint_dir"]) / "best.pt").is_file()


def test_a_converged_run_that_beats_the_converged_ones_logs_a_model(good: Ran) -> None:
    run = good.run
    assert run.tags[MODEL_URI_TAG] in good.tracker.models
    artifacts = good.tracker.list_artifacts(run.run_id)
    assert "model/MLmodel" in artifacts and "checkpoints/best.pt" in artifacts
    assert "diagnosis.json" in artifacts and "curves.png" in artifacts


def test_a_converged_run_that_does_not_beat_the_best_converged_logs_no_model(
    small_data: PairData, tmp_path: Path
) -> None:
    ran = run_trial(GOOD, small_data, tmp_path, earlier=(done(1.0, "converged"),))
    run = ran.run
    assert ran.trial.state == TrialState.COMPLETE
    assert run.tags["diagnosis.verdict"] == "converged", (
        "the rule is only tested on a converged run"
    )
    assert MODEL_URI_TAG not in run.tags and ran.tracker.models == {}
    assert not any(a.startswith("model/") for a in ran.tracker.list_artifacts(run.run_id))
    assert "checkpoints/best.pt" in ran.tracker.list_artifacts(run.run_id)


def test_a_diverging_trial_fails_in_optuna_and_in_the_tracker(
    small_data: PairData, tmp_path: Path
) -> None:
    ran = run_trial(DIVERGING, small_data, tmp_path)
    trial, run = ran.trial, ran.run
    assert trial.state == TrialState.FAIL and trial.value is None
    assert "diverged" in str(trial.user_attrs["diagnosis"])
    assert trial.user_attrs["verdict"] == "failed"
    assert run.status == FAILED and run.tags[STATE_TAG] == "FAIL"
    assert run.tags[ERROR_TAG].startswith("TrialDiverged: ") and "NaN/Inf" in run.tags[ERROR_TAG]
    assert "diverged" in run.tags["diagnosis.label"]
    assert "error.txt" in ran.tracker.list_artifacts(run.run_id)
    assert ran.tracker.models == {}


def test_a_pruned_trial_ends_its_run_finished_and_tagged_pruned(
    small_data: PairData, tmp_path: Path
) -> None:
    ran = run_trial(GOOD, small_data, tmp_path, pruner=AlwaysPrune())
    trial, run = ran.trial, ran.run
    assert trial.state == TrialState.PRUNED
    assert run.status == FINISHED and run.tags[STATE_TAG] == "PRUNED"
    assert run.tags["siamese_lab.stop_reason"] == "pruned"
    # pruned after the first epoch: one point, in both
    assert [s for s, _ in ran.tracker.metric_history(run.run_id, "val_auc")] == [1]
    assert list(trial.intermediate_values) == [1]
    assert "diagnosis" in trial.user_attrs and "verdict" in trial.user_attrs
    assert MODEL_URI_TAG not in run.tags and ran.tracker.models == {}


def test_a_trials_curves_carry_the_name_its_run_ends_with(
    small_data: PairData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curves' title is the run's final name (`trial-N · PRUNED · ...`), not the name it
    started with: the outcome is written with the diagnosis, before the curves are drawn."""
    titles: list[str] = []

    def drawn(history: History, path: Path, title: str) -> Path:
        titles.append(title)
        path.write_bytes(b"a picture")
        return path

    monkeypatch.setattr("tracking.plots.plot_curves", drawn)
    ran = run_trial(GOOD, small_data, tmp_path, pruner=AlwaysPrune())
    assert ran.run.name.startswith(f"trial-{ran.trial.number} · PRUNED · ")
    assert titles == [ran.run.name]


def test_a_trial_stopped_in_its_first_epoch_is_pruned_with_its_verdict_and_step(
    small_data: PairData, tmp_path: Path
) -> None:
    seed = {"lr": 1e-6, "optimizer": "sgd", "momentum": 0.9, "head": "relu2"}
    ran = run_trial(seed, small_data, tmp_path, base=replace(BASE, early_stop=True))
    trial, run = ran.trial, ran.run
    early = trial.user_attrs["early_stop"]
    assert trial.state == TrialState.PRUNED and early["epoch"] == 1
    assert early["verdict"] == trial.user_attrs["diagnosis"] == run.tags["diagnosis.label"]
    assert "stalled" in early["kinds"] and 0 < early["fraction"] < 1
    assert run.status == FINISHED and run.tags[STATE_TAG] == "PRUNED"
    assert run.tags["siamese_lab.stop_reason"] == "pruned"
    where = f"stopped early at step {early['step']} of {early['epoch_steps']} in epoch 1"
    assert run.tags["siamese_lab.early_stop"].startswith(where)
    assert [s for s, _ in ran.tracker.metric_history(run.run_id, "val_auc")] == [1]
    assert "checkpoints/best.pt" in ran.tracker.list_artifacts(run.run_id)


def _record(epoch: int, val_auc: float) -> EpochRecord:
    nan = float("nan")
    return EpochRecord(
        epoch=epoch,
        train_loss=0.5,
        val_loss=0.5,
        val_acc=0.5,
        val_auc=val_auc,
        grad_norm={},
        update_ratio=nan,
        dead_unit_fraction=nan,
        head_zero_fraction=nan,
        output_std=nan,
        output_mean=nan,
        seconds=1.0,
        pairs_per_second=1.0,
    )


def test_the_pruning_callback_reports_resumed_epochs_and_skips_non_finite_aucs() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    callback = PruningCallback(trial)
    history = History(config={}, records=[_record(1, 0.6), _record(2, float("nan"))])
    callback.on_fit_start(history)  # a resumed run: the epochs done before the crash
    assert callback.on_epoch_end(_record(3, 0.7), history) is None
    study.tell(trial, 0.7)
    assert study.trials[0].intermediate_values == {1: 0.6, 3: 0.7}
