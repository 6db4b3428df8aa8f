"""Which trials are retried: a death once, a Ctrl-C each time (search.recovery)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from search.recovery import INTERRUPTED_ATTR, RETRY_OF_ATTR, recover_dead, recover_orphans


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


def _ends(study: optuna.Study, *, interrupted: bool) -> optuna.trial.FrozenTrial:
    """The next trial (the queued retry, if any) runs and is stopped: by Ctrl-C
    (FAIL, `interrupted`), or by its process dying (left RUNNING)."""
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    if interrupted:
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
    return study.trials[trial.number]


def _retries_of(study: optuna.Study, number: int) -> list[int]:
    waiting = study.get_trials(states=(TrialState.WAITING,))
    return [t.number for t in waiting if t.user_attrs.get(RETRY_OF_ATTR) == number]


def test_a_trial_interrupted_again_is_retried_again() -> None:
    study = _study()
    first = _ends(study, interrupted=True)
    assert recover_orphans(study, None) and _retries_of(study, first.number)
    retry = _ends(study, interrupted=True)  # the retry, stopped by Ctrl-C too
    assert retry.user_attrs[RETRY_OF_ATTR] == first.number
    assert retry.params == first.params
    notes = recover_orphans(study, None)
    assert notes == [
        f"trial {retry.number}: interrupted earlier; retried from its start (it had written no checkpoint yet)"
    ]
    assert _retries_of(study, retry.number)
    assert recover_orphans(study, None) == []  # queued once, not once per resume


def test_a_trial_whose_retry_dies_too_is_not_retried_a_third_time() -> None:
    study = _study()
    first = _ends(study, interrupted=False)
    assert "retried" in recover_dead(study, first, None, "its process is gone")
    retry = _ends(study, interrupted=False)
    note = recover_dead(study, retry, None, "its process is gone")
    assert note.endswith("not retried (it died as a retry)")
    assert _retries_of(study, retry.number) == []


def test_a_retry_of_an_interrupted_trial_that_dies_is_retried() -> None:
    """Its death is the first: the trial it repeats was stopped by Ctrl-C, not killed."""
    study = _study()
    first = _ends(study, interrupted=True)
    recover_orphans(study, None)
    retry = _ends(study, interrupted=False)
    assert retry.user_attrs[RETRY_OF_ATTR] == first.number
    assert "retried from its start" in recover_dead(study, retry, None, "its process is gone")
    assert _retries_of(study, retry.number)
