"""The study report: best trial, counts by diagnosis, the failure map, importances, figures.

The failure map answers "where in the space does training break, and how": for each
parameter value (or learning-rate region) it counts the trials of each failure kind,
e.g. "head=relu2: 9 of 9 collapsed", "lr < 1e-05: 12 of 14 stalled".
"""

from __future__ import annotations

import collections
import math
import sys
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.recovery import INTERRUPTED_ATTR
from search.storage import RUN_ID_ATTR
from siamese.errors import SiameseInputError

# A region is reported when most of its trials fail the same way, and more than once.
MIN_SHARE = 0.6
MIN_COUNT = 2
LR_BOUNDARIES = (1e-5, 1e-4, 1e-3, 1e-2)


@dataclass(frozen=True)
class Region:
    """A part of the space: `head = relu2`, or `lr < 1e-4` / `lr >= 1e-4`."""

    param: str
    op: str  # "=", "<" or ">="
    value: str | float

    def __str__(self) -> str:
        if isinstance(self.value, float):
            return f"{self.param} {self.op} 1e{round(math.log10(self.value))}"
        return f"{self.param}={self.value}"


@dataclass
class FailureRegion:
    region: Region
    kind: str
    count: int
    total: int

    @property
    def where(self) -> str:
        return str(self.region)

    def __str__(self) -> str:
        return f"{self.where}: {self.count} of {self.total} {self.kind}"

    def to_dict(self) -> dict[str, Any]:
        counts = {"kind": self.kind, "count": self.count, "total": self.total}
        return {"where": self.where, **counts, "text": str(self)}


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
        plain = asdict(self)
        plain["failure_map"] = [r.to_dict() for r in self.failure_map]
        return plain

    def markdown(self) -> str:
        lines = [
            f"# Study `{self.study}`",
            "",
            f"{self.n_trials} trials: " + _counts(self.states),
            "",
        ]
        if self.best:
            best = self.best
            lines += [
                f"**Best trial** #{best['number']}: val_auc {best['value']:.4f} "
                f"({best['diagnosis']}), params {best['params']}",
                "",
            ]
        best_number = self.best["number"] if self.best else None
        if self.best_converged and self.best_converged["number"] != best_number:
            converged = self.best_converged
            lines += [
                f"**Best converged** #{converged['number']}: val_auc {converged['value']:.4f}",
                "",
            ]
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
    if trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED_ATTR):
        return ["crashed"]  # (an interrupted trial says nothing about its parameters)
    return []


def _regions(trials: list[FrozenTrial]) -> dict[Region, list[FrozenTrial]]:
    """Groups of trials: one per categorical value, two per learning-rate boundary."""
    groups: dict[Region, list[FrozenTrial]] = collections.defaultdict(list)
    for trial in trials:
        for name, value in trial.params.items():
            if isinstance(value, str):
                groups[Region(name, "=", value)].append(trial)
        lr = trial.params.get("lr")
        if isinstance(lr, float):
            for boundary in LR_BOUNDARIES:
                groups[Region("lr", "<" if lr < boundary else ">=", boundary)].append(trial)
    return groups


def failure_map(trials: list[FrozenTrial]) -> list[FailureRegion]:
    """For each failure kind, the regions where most trials fail that way, surest first.
    Of the nested learning-rate regions ("lr < 1e-2" holds "lr < 1e-3") only the one with the
    highest share is kept for each kind and direction."""
    found: list[FailureRegion] = []
    for region, members in _regions(trials).items():
        kinds = collections.Counter(k for t in members for k in _failure_kinds(t))
        for kind, count in kinds.items():
            if count >= MIN_COUNT and count / len(members) >= MIN_SHARE:
                found.append(FailureRegion(region, kind, count, len(members)))
    ranked = sorted(
        found, key=lambda r: (-r.count / r.total, -r.count, _tightness(r.region), r.where)
    )
    kept: list[FailureRegion] = []
    for found_region in ranked:
        family = _lr_family(found_region.region)
        same = (k for k in kept if k.kind == found_region.kind)
        if family and any(_lr_family(k.region) == family for k in same):
            continue
        kept.append(found_region)
    return kept


def _lr_family(region: Region) -> str | None:
    """Nested learning-rate regions of one direction form a family."""
    return region.op if isinstance(region.value, float) else None


def _tightness(region: Region) -> float:
    """Among equally sure lr regions, the one with the boundary nearest to its trials first:
    the smallest bound of "lr < b", the largest of "lr >= b"."""
    if not isinstance(region.value, float):
        return 0.0
    return -region.value if region.op == ">=" else region.value


def _trial_summary(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "value": trial.value,
        "params": trial.params,
        "diagnosis": trial.user_attrs.get("diagnosis"),
        RUN_ID_ATTR: trial.user_attrs.get(RUN_ID_ATTR),
    }


def best_converged_trial(study: optuna.Study) -> FrozenTrial | None:
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("verdict") == "converged" and t.value is not None
    ]
    return max(done, key=lambda t: t.value or -math.inf) if done else None


def best_converged_run_id(study: optuna.Study) -> str:
    """The MLflow run of the study's best converged trial: what `promote --study` registers."""
    best = best_converged_trial(study)
    if best is None or RUN_ID_ATTR not in best.user_attrs:
        raise SiameseInputError(
            f"--study {study.study_name}: no converged, tracked trial to promote"
        )
    return str(best.user_attrs[RUN_ID_ATTR])


def _importance_module() -> Any:
    """optuna.importance, without importing scikit-learn where nothing has yet.

    The report's importances are PED-ANOVA's (Optuna 5's default; numpy alone). Importing
    the package also imports its fANOVA and MDI evaluators, which import scikit-learn's
    random forest when it is installed: 0.7-1 s, most of `report` and the last second of a
    search. Optuna makes those imports optional (skipped when scikit-learn is missing), so
    while the package loads scikit-learn looks missing, and it is put back at once: whatever
    imports it later gets it as usual. Only fANOVA and MDI, which this process never uses,
    then say that scikit-learn is missing."""
    if "sklearn" in sys.modules or "optuna.importance" in sys.modules:
        import optuna.importance

        return optuna.importance
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # `import sklearn` fails
    try:
        import optuna.importance
    finally:
        if "sklearn" in sys.modules and sys.modules["sklearn"] is None:
            del sys.modules["sklearn"]
    return optuna.importance


def _evaluator() -> Any:
    """PED-ANOVA, named: Optuna 4's default was fANOVA."""
    return _importance_module().PedAnovaImportanceEvaluator()


def _importances(study: optuna.Study) -> dict[str, float]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 3:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = _importance_module().get_param_importances(study, evaluator=_evaluator())
            return {k: float(v) for k, v in found.items()}
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
        study=study.study_name,
        n_trials=len(trials),
        states=dict(states),
        diagnoses=dict(diagnoses.most_common()),
        best=_trial_summary(best) if best else None,
        best_converged=_trial_summary(converged) if converged else None,
        failure_map=failure_map(finished),
        importances=_importances(study),
    )


def save_figures(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's own figures (matplotlib backend), each skipped when the study is too small."""
    optuna_plots = _import_plotting()

    figures = {
        "optimization_history.png": optuna_plots.plot_optimization_history,
        "intermediate_values.png": optuna_plots.plot_intermediate_values,
        "parallel_coordinate.png": optuna_plots.plot_parallel_coordinate,
        "param_importances.png": partial(
            optuna_plots.plot_param_importances, evaluator=_evaluator()
        ),
    }
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    # A small study lacks what some figures need; Optuna says so at WARNING, once a figure.
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        for name, plot in figures.items():
            if _save_figure(plot, study, folder / name):
                written.append(folder / name)
    finally:
        optuna.logging.set_verbosity(level)
    return written


def _import_plotting() -> Any:
    """Imported whole or not at all: Ctrl-C in the middle of importing matplotlib leaves it
    half made (a later import fails with KeyError: 'Collection:kwdoc'), so it waits."""
    from siamese.files import signals_deferred

    with signals_deferred():
        _importance_module()  # before Optuna's figures import it with scikit-learn
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.backends.backend_agg
        import matplotlib.pyplot
        from optuna.visualization import matplotlib as optuna_plots
    return optuna_plots


def _save_figure(plot: Any, study: optuna.Study, path: Path) -> bool:
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes: Any = plot(study)
        figure: Any = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(figure)
        return True
    except (ValueError, RuntimeError, ZeroDivisionError):
        plt.close("all")  # not enough completed trials for this figure yet
        return False
