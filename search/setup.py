"""What a study stores about itself so that any worker anywhere can join it: the base
config, the space, the sampler and pruner, the MLflow target and parent run, the target
number of trials. Samplers and pruners are made from it here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.space import FloatRange, SearchSpace
from siamese.config import TrainConfig
from siamese.errors import SiameseInputError

ATTR = "siamese_lab"  # the study user attribute holding the setup


@dataclass(frozen=True)
class StudySetup:
    base: dict[str, Any]
    space: dict[str, Any]
    sampler: str
    pruner: str
    seed: int
    # The MLflow store the study's runs go to (None: the home folder's embedded store).
    tracking_uri: str | None
    experiment: str
    parent_run_id: str | None
    target_trials: int | None

    def base_config(self, device: str | None) -> TrainConfig:
        raw = dict(self.base) if device is None else {**self.base, "device": device}
        return TrainConfig.from_dict(raw)

    def search_space(self) -> SearchSpace:
        raw = self.space
        return SearchSpace(
            lr=FloatRange(**raw["lr"]),
            optimizer=tuple(raw["optimizer"]),
            momentum=FloatRange(**raw["momentum"]),
            head=tuple(raw["head"]),
            dropout=FloatRange(**raw["dropout"]),
            fixed=dict(raw["fixed"]),
        )


def _sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES proposes the float parameters; optimizer and head fall back to random.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    # constant_liar: trials still running count as bad results, so trials asked while
    # others run (a population's members, other workers') spread out instead of repeating
    # one proposal. With one trial at a time there is none running: it changes nothing.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, constant_liar=True)


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler whose randomness comes from (study seed, trial number), not from the
    process: the storage hands out each trial number once, so two workers, or a study
    resumed with the same seed, never draw the same random proposal; and a study re-run
    with its seed draws the same ones. The inner sampler is made anew for each trial: the
    samplers used here keep no state between trials that the study does not hold."""

    def __init__(self, name: str, seed: int) -> None:
        self.name, self.seed = name, seed
        self._inner = _sampler(name, seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = _sampler(self.name, self.seed * 1_000_003 + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._inner.after_trial(study, trial, state, values)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    return TrialSeededSampler(name, seed)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 2))
    if name == "none":
        return optuna.pruners.NopPruner()
    # Judge after the first epoch, once three trials have finished to compare with.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def _parse(name: str, raw: object) -> StudySetup:
    if not isinstance(raw, dict):
        raise SiameseInputError(f"--study {name}: was not created by siamese-lab search")
    return StudySetup(**raw)


def read_setup(study: optuna.Study) -> StudySetup:
    return _parse(study.study_name, study.user_attrs.get(ATTR))


def stored_setup(storage: BaseStorage, name: str) -> StudySetup | None:
    """The study's setup; None for a study that does not exist yet, or that a search
    created but never finished setting up (no setup and no trial: it starts as new)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    raw = storage.get_study_user_attrs(study_id).get(ATTR)
    if raw is None and not storage.get_all_trials(study_id, deepcopy=False):
        return None
    return _parse(name, raw)


def read_stored_setup(storage: BaseStorage, name: str, url: str) -> StudySetup:
    """The setup of a study that must exist (a worker joins it), straight from the storage."""
    setup = stored_setup(storage, name)
    if setup is None:
        from search.storage import study_names

        raise SiameseInputError(
            f"--study {name!r}: no such study set up in {url}; found "
            f"{study_names(storage) or 'none'}"
        )
    return setup


def write_setup(study: optuna.Study, setup: StudySetup) -> None:
    study.set_user_attr(ATTR, asdict(setup))
