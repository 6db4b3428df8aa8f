"""Which trials are retried: a death (or a SIGTERM) once, a Ctrl-C each time (search.recovery),
and what a retry starts with."""

from __future__ import annotations

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from search.objective import note_failure
from search.recovery import (
    INTERRUPTED_ATTR,
    OWNER_ATTR,
    RETRY_OF_ATTR,
    recover_dead,
    recover_orphans,
)
from search.report import failure_map
from search.storage import CHECKPOINT_ATTR, RUN_ID_ATTR, StaleTrialHandler
from tracking.run import Terminated


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


def _ends(
    study: optuna.Study, *, interrupted: bool, by: BaseException | None = None
) -> optuna.trial.FrozenTrial:
    """The next trial (the queued retry, if any) runs and is stopped: by Ctrl-C or `by`
    (FAIL, `interrupted`, as the objective notes it), or by its process dying (RUNNING)."""
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    if interrupted:
        note_failure(trial, by or KeyboardInterrupt())
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


def test_a_death_after_a_death_and_a_ctrl_c_between_is_not_retried() -> None:
    """The guard looks back along the whole chain of retries, not one step."""
    study = _study()
    first = _ends(study, interrupted=False)
    recover_dead(study, first, None, "its process is gone")
    _ends(study, interrupted=True)
    assert recover_orphans(study, None)
    third = _ends(study, interrupted=False)
    assert recover_dead(study, third, None, "gone").endswith("not retried (it died as a retry)")


def test_a_sigterm_is_noted_and_retried_once_like_a_death() -> None:
    """A scheduler that stops the same trial again and again does not requeue it forever."""
    study = _study()
    first = _ends(study, interrupted=True, by=Terminated())
    assert first.user_attrs[INTERRUPTED_ATTR] == "SIGTERM"
    assert recover_orphans(study, None)
    again = _ends(study, interrupted=True, by=Terminated())
    assert again.user_attrs[RETRY_OF_ATTR] == first.number
    assert recover_orphans(study, None) == [] and _retries_of(study, again.number) == []
    assert _ends(_study(), interrupted=True).user_attrs[INTERRUPTED_ATTR] is True  # Ctrl-C


def _stale(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """A trial the heartbeat found dead after it had noted a Ctrl-C (killed while stopping)."""
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    for key, value in {OWNER_ATTR: "host:1:2", RUN_ID_ATTR: "abc", CHECKPOINT_ATTR: "/c"}.items():
        trial.set_user_attr(key, value)
    trial.set_user_attr(INTERRUPTED_ATTR, True)
    study.tell(trial, state=TrialState.FAIL)
    return study.trials[trial.number]


def test_the_heartbeats_retry_starts_clean_and_is_not_retried_twice() -> None:
    study = _study()
    dead = _stale(study)
    StaleTrialHandler(None)(study, dead)
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.user_attrs == {CHECKPOINT_ATTR: "/c", RETRY_OF_ATTR: dead.number}
    assert recover_orphans(study, None) == []  # the heartbeat has queued its retry already


def test_a_retry_queued_by_an_older_version_s_heartbeat_counts_too() -> None:
    """Optuna's own retry (every attribute copied, no retry_of) names the trial it repeats
    in its retry_history."""
    study = _study()
    dead = _stale(study)
    RetryHeartbeatStaleTrialCallback(max_retry=3)(study, dead)
    assert recover_orphans(study, None) == []


def test_an_interrupted_trial_is_no_crash_on_the_failure_map() -> None:
    interrupted, crashed = _study(), _study()
    for _ in range(3):
        _ends(interrupted, interrupted=True)
        trial = crashed.ask()
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        crashed.tell(trial, state=TrialState.FAIL)
    assert [r.kind for r in failure_map(interrupted.trials)] == []
    assert "crashed" in {r.kind for r in failure_map(crashed.trials)}


def test_a_running_trial_that_never_recorded_its_process_is_retried_once_old_enough() -> None:
    """Its worker died between `ask` and the owner's write: it counted as running for good
    (the search ended a trial short, and nothing retried it)."""
    from datetime import timedelta

    from search.recovery import ORPHAN_AFTER_S

    study = _study()
    orphan = _ends(study, interrupted=False)  # RUNNING, no owner
    assert OWNER_ATTR not in orphan.user_attrs
    assert recover_orphans(study, None) == []  # just asked: its owner may be on its way
    assert orphan.datetime_start is not None
    later = orphan.datetime_start + timedelta(seconds=ORPHAN_AFTER_S + 1)
    (note,) = recover_orphans(study, None, now=later)
    assert note.startswith(f"trial {orphan.number}: it never recorded a process")
    assert study.trials[orphan.number].state == TrialState.FAIL
    assert _retries_of(study, orphan.number)
    owned = study.ask()  # a live worker's trial, just as old, is left alone
    owned.set_user_attr(OWNER_ATTR, "another-host:1:2")
    assert recover_orphans(study, None, now=later + timedelta(hours=1)) == []
