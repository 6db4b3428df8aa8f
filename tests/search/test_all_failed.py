"""A search whose every trial failed says why, naming only what exists."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.objective import ERROR_ATTR
from search.storage import RUN_ID_ATTR
from search.study import _fail_if_nothing_worked
from siamese.errors import JobFailed


def _study_of(*user_attrs: dict[str, str]) -> optuna.Study:
    study = optuna.create_study()
    for attrs in user_attrs:
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs))
    return study


@pytest.mark.parametrize(
    ("attrs", "said"),
    [
        ({ERROR_ATTR: "DiskFullError: no space left"}, "trial 0: DiskFullError: no space left"),
        ({RUN_ID_ATTR: "abc123"}, "no error recorded on the trial; see its MLflow run abc123"),
        ({}, "no error recorded on the trial, and it had no MLflow run yet"),
    ],
)
def test_the_first_failed_trial_says_why_or_where_to_look(attrs: dict[str, str], said: str) -> None:
    with pytest.raises(JobFailed, match="all 2 trial\\(s\\) of this search failed") as failed:
        _fail_if_nothing_worked(_study_of(attrs, {}), done_before=set())
    assert said in str(failed.value)
    if RUN_ID_ATTR not in attrs:
        assert "MLflow run " not in str(failed.value).replace("no MLflow run yet", "")


def test_one_trial_that_did_not_crash_is_enough() -> None:
    study = _study_of({})
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.9))
    _fail_if_nothing_worked(study, done_before=set())  # no error: something worked
