"""Progress lines count the whole study, so several workers or a resumed study agree."""

import io

import optuna
from rich.console import Console

from search.progress import Progress


def _finish(study: optuna.Study, value: float | None, diagnosis: str) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    trial.set_user_attr("diagnosis", diagnosis)
    if value is None:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, value)
    return study.trials[trial.number]


def test_counts_come_from_the_study_not_from_this_process() -> None:
    study = optuna.create_study(direction="maximize")
    _finish(study, 0.9, "converged")  # finished by "another worker" or an earlier session
    _finish(study, None, "collapsed")
    out = io.StringIO()
    progress = Progress(Console(file=out, width=200), total=4)
    progress(study, _finish(study, 0.7, "collapsed"))
    first, second = out.getvalue().splitlines()
    assert first.startswith("trial   2 [3/4] COMPLETE")
    assert "best 0.9000 (#0)" in second and "complete 2 pruned 1 failed 0" in second
    assert "collapsed 2, converged 1" in second


def test_a_trial_that_crashed_before_its_diagnosis_says_crashed() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    out = io.StringIO()
    Progress(Console(file=out, width=200), total=1)(study, study.trials[0])
    first, second = out.getvalue().splitlines()
    assert "FAIL" in first and "crashed" in first
    assert second.endswith("| crashed 1") and "- 1" not in second


def test_an_interrupted_trial_says_interrupted_not_crashed() -> None:
    """Ctrl-C is no crash: the trial is retried when the study is resumed."""
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    out = io.StringIO()
    Progress(Console(file=out, width=200), total=1)(study, study.trials[0])
    first, second = out.getvalue().splitlines()
    assert "FAIL" in first and "interrupted" in first and "crashed" not in first
    assert second.endswith("| interrupted 1")


def test_a_trial_stopped_in_its_first_epoch_says_where() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.set_user_attr("diagnosis", "collapsed+stalled")
    trial.set_user_attr("early_stop", {"epoch": 1, "step": 8, "epoch_steps": 32, "fraction": 0.25})
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    out = io.StringIO()
    Progress(Console(file=out, width=200), total=1)(study, study.trials[0])
    first = out.getvalue().splitlines()[0]
    assert "PRUNED" in first and first.endswith("(stopped at 25% of epoch 1)")


def test_a_retry_past_the_target_says_so_and_the_count_never_passes_the_total() -> None:
    study = optuna.create_study(direction="maximize")
    _finish(study, 0.9, "converged")
    dead = study.ask()
    study.tell(dead, state=optuna.trial.TrialState.FAIL)  # its worker died
    retry = study.ask()
    retry.set_user_attr("retry_of", dead.number)
    retry.set_user_attr("diagnosis", "converged")
    study.tell(retry, 0.8)
    out = io.StringIO()
    Progress(Console(file=out, width=200), total=2)(study, study.trials[retry.number])
    first = out.getvalue().splitlines()[0]
    assert first.startswith("trial   2 [3/3] COMPLETE") and first.endswith("(retry of trial 1)")
