"""Trials whose process is gone: found, closed and retried from their checkpoint.

A trial records its owner (host, pid and the process's start time, so a reused pid is not
mistaken for it). When the owner is provably gone - a local worker the parent saw die, or a
RUNNING trial on this host whose process no longer exists - the trial is marked FAIL, its
MLflow run KILLED, and a retry with the same parameters and checkpoint folder is queued. A
trial stopped by Ctrl-C or SIGTERM ends FAIL with `interrupted` set (True, or "SIGTERM")
and is retried the same way when the study is resumed (after each Ctrl-C; a death or a
SIGTERM once: see enqueue_retry). Other hosts' trials are left to the database heartbeat.
A RUNNING trial that never recorded an owner (its process died between Optuna's `ask` and
the owner's write, milliseconds apart) is taken for dead once it is `ORPHAN_AFTER_S` old:
it counted as running for good, so a search came out one trial short and nothing retried it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.storage import CHECKPOINT_ATTR, RUN_ID_ATTR
from tracking.base import ERROR_TAG, KILLED, RUN_NAME_TAG, STATE_TAG, Tracker

OWNER_ATTR = "owner"
# A trial records its owner milliseconds after it is asked for; one this old without an
# owner has no process (the grace of the database heartbeat, 120 s, for the same doubt).
ORPHAN_AFTER_S = 120.0
INTERRUPTED_ATTR = "interrupted"
RETRY_OF_ATTR = "retry_of"
# What a retry must not inherit from the trial it repeats.
NOT_INHERITED = (OWNER_ATTR, INTERRUPTED_ATTR, RUN_ID_ATTR, "diagnosis", "verdict")


def _start_ticks(pid: int) -> str:
    """The process's start time since boot (Linux); '' where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of stat, counted after the name


def process_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def owner_pid(token: object) -> int | None:
    """The pid in an owner token of this host, else None."""
    parts = str(token).split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    return int(parts[1])


def owner_is_gone(token: object) -> bool:
    pid = owner_pid(token)
    if pid is None:
        return False  # another host (or no owner recorded): not provable from here
    return process_token(pid) != str(token) or not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def enqueue_retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue `trial` again with its parameters and checkpoint folder, unless it has a retry
    already, or it died and so did a trial it repeats: a trial that kills its worker is
    retried once, not forever. A Ctrl-C is not a death: a trial is retried however often
    it was interrupted. A SIGTERM is one here: a scheduler whose time limit is shorter than
    an epoch would otherwise requeue the same trial forever."""
    trials = study.get_trials(deepcopy=False)
    if _retried(trials, trial) or (_died(trial) and _repeats_a_death(trials, trial)):
        return False
    attrs = retry_attrs(trial)
    study.enqueue_trial(trial.params, user_attrs=attrs)
    return True


def retry_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """The user attributes a retry of `trial` starts with: its checkpoint folder and the
    like, not its owner, run or outcome, and which trial it repeats."""
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in NOT_INHERITED}
    return {**attrs, RETRY_OF_ATTR: trial.number}


def _retried(trials: Iterable[FrozenTrial], trial: FrozenTrial) -> bool:
    """Whether a trial repeats `trial` already: one of ours, or the heartbeat's (Optuna
    keeps the trials it repeats in the system attribute retry_history)."""
    return any(
        t.user_attrs.get(RETRY_OF_ATTR) == trial.number
        or trial.number in t.system_attrs.get("retry_history", ())
        for t in trials
    )


def _died(trial: FrozenTrial) -> bool:
    """Ended by its process dying or by SIGTERM, not by Ctrl-C (`interrupted` is True)."""
    return trial.user_attrs.get(INTERRUPTED_ATTR) is not True


def _repeats_a_death(trials: Iterable[FrozenTrial], trial: FrozenTrial) -> bool:
    """Whether a trial that `trial` repeats (its retry_of, and so on back) died: a trial
    missing from the study counts as one."""
    by_number = {t.number: t for t in trials}
    seen = {trial.number}
    repeated = trial.user_attrs.get(RETRY_OF_ATTR)
    while repeated is not None and repeated not in seen:
        seen.add(repeated)
        original = by_number.get(repeated)
        if original is None or _died(original):
            return True
        repeated = original.user_attrs.get(RETRY_OF_ATTR)
    return False


def _close_run(tracker: Tracker | None, trial: FrozenTrial, why: str) -> None:
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if tracker is None or not run_id:
        return
    name = f"trial-{trial.number} · FAIL · worker died"
    tracker.set_tags(str(run_id), {ERROR_TAG: why, STATE_TAG: "FAIL", RUN_NAME_TAG: name})
    tracker.end_run(str(run_id), KILLED)


def recover_dead(study: optuna.Study, trial: FrozenTrial, tracker: Tracker | None, why: str) -> str:
    """A RUNNING trial whose process is gone: FAIL, run KILLED, retried. One line back."""
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    _close_run(tracker, trial, why)
    retried = enqueue_retry(study, trial)
    then = f"retried {_from_where(trial)}" if retried else "not retried (it died as a retry)"
    return f"trial {trial.number}: {why}; marked failed, its run KILLED, {then}"


def _from_where(trial: FrozenTrial) -> str:
    """What its retry resumes from, as this machine sees it: a trial writes last.pt at most
    every --checkpoint-every seconds, so a short one that died may have none."""
    folder = trial.user_attrs.get(CHECKPOINT_ATTR)
    if folder and (Path(folder) / "last.pt").is_file():
        return "from its checkpoint"
    return "from its start (it had written no checkpoint yet)"


def recover_process(study: optuna.Study, pid: int, tracker: Tracker | None, why: str) -> list[str]:
    """The trials a local worker process was running when it died."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    owned = [t for t in running if owner_pid(t.user_attrs.get(OWNER_ATTR)) == pid]
    return [recover_dead(study, t, tracker, why) for t in owned]


def recover_orphans(
    study: optuna.Study, tracker: Tracker | None, now: datetime | None = None
) -> list[str]:
    """On resume: RUNNING trials of this host whose process is gone, those that never
    recorded a process (`ORPHAN_AFTER_S` after they started, as of `now`), and interrupted
    trials not yet retried."""
    notes = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        token = trial.user_attrs.get(OWNER_ATTR)
        if owner_is_gone(token):
            notes.append(recover_dead(study, trial, tracker, "its process is gone"))
        elif token is None and _older_than(trial, ORPHAN_AFTER_S, now):
            why = "it never recorded a process (its worker died as it started)"
            notes.append(recover_dead(study, trial, tracker, why))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.user_attrs.get(INTERRUPTED_ATTR) and enqueue_retry(study, trial):
            notes.append(f"trial {trial.number}: interrupted earlier; retried {_from_where(trial)}")
    return notes


def _older_than(trial: FrozenTrial, seconds: float, now: datetime | None) -> bool:
    started = trial.datetime_start
    if started is None:
        return False
    current = now or datetime.now(started.tzinfo)
    return current - started > timedelta(seconds=seconds)
