"""The line a recovered trial gets says what its retry resumes from: its checkpoint, or its
start when it died before writing one (a trial writes last.pt at most every 30 s)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.recovery import recover_dead
from search.storage import CHECKPOINT_ATTR


@pytest.mark.parametrize(
    ("has_last_pt", "said"),
    [(True, "retried from its checkpoint"), (False, "retried from its start")],
)
def test_the_note_says_what_the_retry_resumes_from(
    tmp_path: Path, has_last_pt: bool, said: str
) -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1)})
    trial.set_user_attr(CHECKPOINT_ATTR, str(tmp_path))
    if has_last_pt:
        (tmp_path / "last.pt").write_bytes(b"PK")
    (frozen,) = study.get_trials(deepcopy=False)
    note = recover_dead(study, frozen, None, "its process is gone")
    assert note.startswith(f"trial 0: its process is gone; marked failed, its run KILLED, {said}")
    (retry,) = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    assert retry.system_attrs["fixed_params"] == frozen.params  # the same parameters again
