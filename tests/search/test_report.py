"""The study report on studies built in memory: the failure map, best vs best converged,
the run `promote --study` picks, and the JSON / Markdown forms."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from search.report import (
    MIN_COUNT,
    MIN_SHARE,
    FailureRegion,
    Region,
    best_converged_run_id,
    best_converged_trial,
    build_report,
    failure_map,
)
from siamese.errors import SiameseInputError

DISTRIBUTIONS: dict[str, BaseDistribution] = {
    "lr": FloatDistribution(1e-6, 1e-1, log=True),
    "optimizer": CategoricalDistribution(["adam", "sgd"]),
    "head": CategoricalDistribution(["relu2", "abs", "sq", "contrastive"]),
}


def trial(
    lr: float = 1e-3,
    head: str = "sq",
    diagnosis: str | None = "converged",
    *,
    optimizer: str = "adam",
    value: float | None = 0.8,
    state: TrialState = TrialState.COMPLETE,
    run_id: str | None = None,
) -> FrozenTrial:
    """A finished trial as the objective leaves it: diagnosis, verdict and MLflow run id in
    its user attributes. `diagnosis=None` is a trial that crashed before any verdict."""
    attrs: dict[str, object] = {}
    if diagnosis is not None:
        attrs["diagnosis"] = diagnosis
        attrs["verdict"] = "converged" if diagnosis == "converged" else "failed"
    if run_id is not None:
        attrs["mlflow_run_id"] = run_id
    return optuna.trial.create_trial(
        params={"lr": lr, "optimizer": optimizer, "head": head},
        distributions=DISTRIBUTIONS,
        value=value if state == TrialState.COMPLETE else None,
        state=state,
        user_attrs=attrs,
    )


def study_of(trials: list[FrozenTrial], name: str = "report-test") -> optuna.Study:
    study = optuna.create_study(direction="maximize", study_name=name)
    for frozen in trials:
        study.add_trial(frozen)
    return study


def texts(regions: list[FailureRegion]) -> list[str]:
    return [str(r) for r in regions]


def lr_regions(regions: list[FailureRegion], kind: str) -> list[str]:
    return [str(r) for r in regions if r.kind == kind and r.region.param == "lr"]


# ---------------------------------------------------------------- the failure map


def test_a_head_that_always_collapses_is_named_with_its_counts() -> None:
    trials = [trial(1e-3, "relu2", "collapsed") for _ in range(3)]
    trials += [trial(1e-3, "sq", "converged") for _ in range(5)]
    found = failure_map(trials)
    assert "head=relu2: 3 of 3 collapsed" in texts(found)
    region = next(r for r in found if r.where == "head=relu2")
    assert region.region == Region("head", "=", "relu2")
    assert (region.kind, region.count, region.total) == ("collapsed", 3, 3)
    # the converged trials fail nothing: no region names them
    assert not any(r.kind == "converged" for r in found)
    assert "head=sq" not in [r.where for r in found]


def test_of_nested_lr_regions_below_a_boundary_only_the_tightest_is_kept() -> None:
    # stalled at 2e-5: inside lr < 1e-4 and lr < 1e-3 (both 4 of 4), and lr < 1e-2 (4 of 9)
    trials = [trial(2e-5, "abs", "stalled") for _ in range(4)]
    trials += [trial(5e-3, "abs", "converged") for _ in range(5)]
    assert lr_regions(failure_map(trials), "stalled") == ["lr < 1e-4: 4 of 4 stalled"]


def test_of_nested_lr_regions_above_a_boundary_only_the_tightest_is_kept() -> None:
    # diverged at 5e-2: inside lr >= 1e-2 and lr >= 1e-3 (both 3 of 3); lr >= 1e-4 holds more
    trials = [trial(5e-2, "sq", "diverged") for _ in range(3)]
    trials += [trial(5e-4, "sq", "converged") for _ in range(5)]
    assert lr_regions(failure_map(trials), "diverged") == ["lr >= 1e-2: 3 of 3 diverged"]


def test_a_surer_wider_lr_region_wins_over_a_less_sure_tighter_one() -> None:
    # lr < 1e-5: 2 of 3 stalled; lr < 1e-4 (and lr < 1e-3): 5 of 6 - the surer one is kept
    trials = [trial(5e-6, "abs", "stalled") for _ in range(2)]
    trials += [trial(5e-6, "abs", "converged")]
    trials += [trial(5e-5, "abs", "stalled") for _ in range(3)]
    trials += [trial(5e-3, "abs", "converged") for _ in range(4)]
    assert lr_regions(failure_map(trials), "stalled") == ["lr < 1e-4: 5 of 6 stalled"]


def test_regions_are_listed_surest_first() -> None:
    trials = [trial(1e-3, "relu2", "collapsed", optimizer="sgd") for _ in range(3)]
    trials += [trial(1e-3, "relu2", "converged", optimizer="adam")]
    trials += [trial(1e-3, "contrastive", None, state=TrialState.FAIL) for _ in range(2)]
    trials += [trial(1e-3, "sq", "converged", optimizer="adam") for _ in range(4)]
    found = failure_map(trials)
    # by share, then by count: 3 of 3 before 2 of 2 before 3 of 4
    assert texts(found) == [
        "optimizer=sgd: 3 of 3 collapsed",
        "head=contrastive: 2 of 2 crashed",
        "head=relu2: 3 of 4 collapsed",
    ]


def test_a_kind_seen_fewer_than_min_count_times_is_not_a_region() -> None:
    trials = [trial(1e-3, "relu2", "collapsed") for _ in range(MIN_COUNT - 1)]
    trials += [trial(1e-3, "sq", "converged") for _ in range(5)]
    assert all(r.kind != "collapsed" for r in failure_map(trials))


@pytest.mark.parametrize("below", [True, False])
def test_a_region_is_reported_only_from_min_share_of_its_trials(below: bool) -> None:
    total = 10
    failing = math.ceil(MIN_SHARE * total) - (1 if below else 0)
    assert failing >= MIN_COUNT
    trials = [trial(1e-3, "abs", "stalled") for _ in range(failing)]
    trials += [trial(1e-3, "abs", "converged") for _ in range(total - failing)]
    found = texts(failure_map(trials))
    if below:
        assert found == []
    else:
        assert f"head=abs: {failing} of {total} stalled" in found


def test_crashed_trials_count_and_a_failed_verdict_names_its_own_kind() -> None:
    # FAIL without a verdict: the trial crashed. FAIL with one (a NaN loss): its diagnosis.
    trials = [trial(1e-3, "contrastive", None, state=TrialState.FAIL) for _ in range(2)]
    trials += [trial(1e-3, "abs", "diverged", state=TrialState.FAIL) for _ in range(2)]
    trials += [trial(1e-3, "sq", "converged") for _ in range(4)]
    found = texts(failure_map(trials))
    assert "head=contrastive: 2 of 2 crashed" in found
    assert "head=abs: 2 of 2 diverged" in found
    assert not any("abs" in t and "crashed" in t for t in found)


def test_a_combined_diagnosis_counts_for_each_of_its_kinds() -> None:
    trials = [trial(1e-3, "relu2", "collapsed+stalled") for _ in range(2)]
    trials += [trial(1e-3, "sq", "converged") for _ in range(3)]
    found = texts(failure_map(trials))
    assert "head=relu2: 2 of 2 collapsed" in found and "head=relu2: 2 of 2 stalled" in found


def test_an_empty_or_healthy_study_has_no_failure_map() -> None:
    assert failure_map([]) == []
    assert failure_map([trial() for _ in range(4)]) == []


# ---------------------------------------------------------------- best and best converged


def _mixed_study() -> optuna.Study:
    return study_of(
        [
            trial(1e-3, "sq", "overfitting", value=0.97, run_id="a" * 32),  # best, but failed
            trial(1e-3, "abs", "converged", value=0.91, run_id="b" * 32),  # best converged
            trial(1e-4, "abs", "converged", value=0.85, run_id="c" * 32),
            trial(1e-3, "sq", "converged", state=TrialState.PRUNED, run_id="d" * 32),
            trial(1e-6, "relu2", "collapsed", value=0.5, run_id="e" * 32),
            trial(1e-6, "relu2", "collapsed", value=0.5, run_id="f" * 32),
            trial(1e-3, "contrastive", None, state=TrialState.FAIL),
        ]
    )


def test_best_is_the_top_value_and_best_converged_the_top_converged_one() -> None:
    study = _mixed_study()
    report = build_report(study)
    assert report.best is not None and report.best_converged is not None
    assert report.best["number"] == 0 and report.best["diagnosis"] == "overfitting"
    assert report.best["value"] == pytest.approx(0.97)
    assert report.best_converged["number"] == 1
    assert report.best_converged["mlflow_run_id"] == "b" * 32
    converged = best_converged_trial(study)
    assert converged is not None and converged.number == 1
    assert best_converged_run_id(study) == "b" * 32


def test_counts_by_state_and_by_diagnosis() -> None:
    report = build_report(_mixed_study())
    assert report.n_trials == 7
    assert report.states == {"COMPLETE": 5, "PRUNED": 1, "FAIL": 1}
    # a trial without a diagnosis is counted by its state
    assert report.diagnoses == {"converged": 3, "collapsed": 2, "overfitting": 1, "fail": 1}


def test_a_pruned_trial_is_never_the_best_converged_even_if_diagnosed_so() -> None:
    study = study_of(
        [
            trial(value=0.7, run_id="1" * 32),
            trial(state=TrialState.PRUNED, run_id="2" * 32),
        ]
    )
    assert best_converged_run_id(study) == "1" * 32


def test_no_converged_trial_means_nothing_to_promote() -> None:
    study = study_of([trial(1e-6, "relu2", "collapsed", value=0.5, run_id="a" * 32)])
    assert best_converged_trial(study) is None
    with pytest.raises(SiameseInputError, match="no converged, tracked trial"):
        best_converged_run_id(study)
    assert build_report(study).best_converged is None


def test_a_converged_trial_that_was_not_tracked_cannot_be_promoted() -> None:
    study = study_of([trial(value=0.9)], name="untracked")
    assert best_converged_trial(study) is not None
    with pytest.raises(SiameseInputError, match="--study untracked"):
        best_converged_run_id(study)


def test_an_empty_study() -> None:
    report = build_report(study_of([], name="empty"))
    assert report.n_trials == 0 and report.best is None and report.best_converged is None
    assert report.failure_map == [] and report.importances == {}
    text = report.markdown()
    assert "0 trials: none" in text and "no region of the space failed consistently" in text


# ---------------------------------------------------------------- JSON and Markdown


def test_to_dict_is_plain_json_with_readable_failure_regions() -> None:
    report = build_report(_mixed_study())
    plain = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert plain["study"] == "report-test" and plain["n_trials"] == 7
    assert plain["best"]["number"] == 0 and plain["best_converged"]["number"] == 1
    assert plain["failure_map"], "the relu2 trials collapse: the map is not empty"
    for entry in plain["failure_map"]:
        assert set(entry) == {"where", "kind", "count", "total", "text"}
        assert (
            entry["text"]
            == f"{entry['where']}: {entry['count']} of {entry['total']} {entry['kind']}"
        )
    assert {"where": "head=relu2", "kind": "collapsed", "count": 2, "total": 2} in [
        {k: e[k] for k in ("where", "kind", "count", "total")} for e in plain["failure_map"]
    ]
    assert all(isinstance(v, float) for v in plain["importances"].values())


def test_markdown_has_every_section() -> None:
    report = build_report(_mixed_study())
    text = report.markdown()
    assert text.startswith("# Study `report-test`\n")
    assert "7 trials: 5 complete, 1 pruned, 1 fail" in text
    assert "**Best trial** #0: val_auc 0.9700 (overfitting)" in text
    assert "**Best converged** #1: val_auc 0.9100" in text
    assert "## Diagnoses" in text and "- converged: 3" in text
    assert "## Failure map" in text and "- head=relu2: 2 of 2 collapsed" in text
    assert "no region of the space failed consistently" not in text
    if report.importances:
        assert "## Parameter importances (val_auc)" in text


def test_markdown_says_when_nothing_failed_consistently() -> None:
    report = build_report(study_of([trial(value=0.8 + i / 100) for i in range(3)]))
    text = report.markdown()
    assert "## Failure map" in text and "- no region of the space failed consistently" in text


def test_markdown_does_not_repeat_the_best_trial_as_best_converged() -> None:
    report = build_report(study_of([trial(value=0.9, run_id="a" * 32), trial(value=0.8)]))
    assert report.best == report.best_converged
    assert "**Best converged**" not in report.markdown()
