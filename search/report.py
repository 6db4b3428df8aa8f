"""The study report: best trial, counts by diagnosis, the failure map, importances, figures.

The failure map answers "where in the space does training break, and how": for each
parameter value (or learning-rate region) it counts the trials of each failure kind,
e.g. "head=relu2: 9 of 9 collapsed", "lr < 1e-05: 12 of 14 stalled".
"""

from __future__ import annotations

import collections
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

# A region is reported when most of its trials fail the same way, and more than once.
MIN_SHARE = 0.6
MIN_COUNT = 2
LR_BOUNDARIES = (1e-5, 1e-4, 1e-3, 1e-2)


@dataclass
class FailureRegion:
    where: str
    kind: str
    count: int
    total: int

    def __str__(self) -> str:
        return f"{self.where}: {self.count} of {self.total} {self.kind}"


@dataclass
class StudyReport:
    study: str
    n_trials: int
    states: dict[str, int]
    diagnoses: dict[str, int]
    best: dict[str, Any] | None
    best_converged: dict[str, Any] | None
    failure_map: list[FailureRegion] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study, "n_trials": self.n_trials, "states": self.states, "diagnoses": self.diagnoses,
            "best": self.best, "best_converged": self.best_converged,
            "failure_map": [{**r.__dict__, "text": str(r)} for r in self.failure_map],
            "importances": self.importances,
        }  # fmt: skip

    def markdown(self) -> str:
        lines = [
            f"# Study `{self.study}`",
            "",
            f"{self.n_trials} trials: " + _counts(self.states),
            "",
        ]
        if self.best:
            lines += [f"**Best trial** #{self.best['number']}: val_auc {self.best['value']:.4f} "
                      f"({self.best['diagnosis']}), params {self.best['params']}", ""]  # fmt: skip
        if self.best_converged and self.best_converged is not self.best:
            lines += [f"**Best converged** #{self.best_converged['number']}: val_auc "
                      f"{self.best_converged['value']:.4f}", ""]  # fmt: skip
        lines += ["## Diagnoses", "", *[f"- {k}: {v}" for k, v in self.diagnoses.items()], ""]
        lines += ["## Failure map", ""]
        lines += [f"- {r}" for r in self.failure_map] or [
            "- no region of the space failed consistently"
        ]
        if self.importances:
            lines += ["", "## Parameter importances (val_auc)", ""]
            lines += [f"- {k}: {v:.3f}" for k, v in self.importances.items()]
        return "\n".join(lines) + "\n"


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{v} {k.lower()}" for k, v in counter.items()) or "none"


def _failure_kinds(trial: FrozenTrial) -> list[str]:
    verdict = trial.user_attrs.get("verdict")
    label = str(trial.user_attrs.get("diagnosis", ""))
    if verdict == "failed":
        return label.split("+")
    if trial.state == TrialState.FAIL:
        return ["crashed"]
    return []


def _regions(trials: list[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    """Named groups of trials: one per categorical value, two per learning-rate boundary."""
    groups: dict[str, list[FrozenTrial]] = collections.defaultdict(list)
    for trial in trials:
        for name, value in trial.params.items():
            if isinstance(value, str):
                groups[f"{name}={value}"].append(trial)
        lr = trial.params.get("lr")
        if isinstance(lr, float):
            for boundary in LR_BOUNDARIES:
                power = f"1e{round(math.log10(boundary))}"
                region = f"lr < {power}" if lr < boundary else f"lr >= {power}"
                groups[region].append(trial)
    return groups


def failure_map(trials: list[FrozenTrial]) -> list[FailureRegion]:
    """For each failure kind, the regions where most trials fail that way, surest first.
    Of the nested learning-rate regions ("lr < 1e-2" holds "lr < 1e-3") only the one with the
    highest share is kept for each kind and direction."""
    found: list[FailureRegion] = []
    for where, members in _regions(trials).items():
        kinds = collections.Counter(k for t in members for k in _failure_kinds(t))
        for kind, count in kinds.items():
            if count >= MIN_COUNT and count / len(members) >= MIN_SHARE:
                found.append(FailureRegion(where, kind, count, len(members)))
    ranked = sorted(
        found, key=lambda r: (-r.count / r.total, -r.count, _tightness(r.where), r.where)
    )
    kept: list[FailureRegion] = []
    for region in ranked:
        family = _lr_family(region.where)
        if family and any(k.kind == region.kind and _lr_family(k.where) == family for k in kept):
            continue
        kept.append(region)
    return kept


def _lr_family(where: str) -> str | None:
    if not where.startswith("lr"):
        return None
    return "lr >=" if ">=" in where else "lr <"


def _tightness(where: str) -> float:
    """Among equally sure lr regions, the one with the boundary nearest to its trials first:
    the smallest bound of "lr < b", the largest of "lr >= b"."""
    if not where.startswith("lr"):
        return 0.0
    bound = float(where.split()[-1])
    return -bound if ">=" in where else bound


def _trial_summary(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number, "value": trial.value, "params": trial.params,
        "diagnosis": trial.user_attrs.get("diagnosis"), "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
    }  # fmt: skip


def best_converged_trial(study: optuna.Study) -> FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("verdict") == "converged" and t.value is not None]  # fmt: skip
    return max(done, key=lambda t: t.value or -math.inf) if done else None


def _importances(study: optuna.Study) -> dict[str, float]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 3:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError):  # e.g. a single distinct parameter value
        return {}


def build_report(study: optuna.Study) -> StudyReport:
    trials = study.get_trials(deepcopy=False)
    finished = [
        t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    ]
    states = collections.Counter(t.state.name for t in trials)
    diagnoses = collections.Counter(
        str(t.user_attrs.get("diagnosis", t.state.name.lower())) for t in finished
    )
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: t.value or -math.inf) if complete else None
    converged = best_converged_trial(study)
    return StudyReport(
        study.study_name, len(trials), dict(states), dict(diagnoses.most_common()),
        _trial_summary(best) if best else None, _trial_summary(converged) if converged else None,
        failure_map(finished), _importances(study),
    )  # fmt: skip


def save_figures(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's own figures (matplotlib backend), each skipped when the study is too small."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    figures = {
        "optimization_history.png": optuna_plots.plot_optimization_history,
        "intermediate_values.png": optuna_plots.plot_intermediate_values,
        "parallel_coordinate.png": optuna_plots.plot_parallel_coordinate,
        "param_importances.png": optuna_plots.plot_param_importances,
    }
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, plot in figures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes: Any = plot(study)
            figure: Any = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.savefig(folder / name, dpi=80, bbox_inches="tight")
            plt.close(figure)
            written.append(folder / name)
        except (ValueError, RuntimeError, ZeroDivisionError):
            plt.close("all")  # not enough completed trials for this figure yet
    return written
