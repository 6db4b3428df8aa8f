"""Create or resume a study and run its trials: in this process, in N local worker
processes, or as one worker of many joining over PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search.objective import Objective
from search.progress import Progress
from search.space import FloatRange, SearchSpace
from search.storage import StaleTrialHandler, load_existing_study, open_storage
from siamese import TrainConfig, prepare_data
from siamese.errors import SiameseInputError
from siamese.train import resolve_device
from tracking import resolve_target
from tracking.base import Tracker

SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("median", "hyperband", "none")
ATTR = "siamese_lab"  # study user attribute holding everything a worker needs


@dataclass(frozen=True)
class StudySetup:
    """What the coordinator stores in the study, so any worker anywhere can join it."""

    base: dict[str, Any]
    space: dict[str, Any]
    sampler: str
    pruner: str
    seed: int
    tracking_uri: str | None
    experiment: str
    parent_run_id: str | None
    target_trials: int | None

    def base_config(self, device: str | None) -> TrainConfig:
        config = TrainConfig.from_dict(self.base)
        return config if device is None else TrainConfig.from_dict({**self.base, "device": device})

    def search_space(self) -> SearchSpace:
        raw = dict(self.space)
        return SearchSpace(
            lr=FloatRange(**raw["lr"]), optimizer=tuple(raw["optimizer"]), momentum=FloatRange(**raw["momentum"]),
            head=tuple(raw["head"]), dropout=FloatRange(**raw["dropout"]), fixed=dict(raw["fixed"]),
        )  # fmt: skip


def make_sampler(name: str, seed: int, worker: int = 0) -> optuna.samplers.BaseSampler:
    seed = seed + 1000 * worker  # parallel workers must not propose the same points
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES proposes the float parameters; optimizer and head fall back to random.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 2))
    if name == "none":
        return optuna.pruners.NopPruner()
    # Judge after the first epoch, once three trials have finished to compare with.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def read_setup(study: optuna.Study) -> StudySetup:
    raw = study.user_attrs.get(ATTR)
    if raw is None:
        raise SiameseInputError(
            f"--study {study.study_name}: was not created by siamese-lab search"
        )
    return StudySetup(**raw)


def write_setup(study: optuna.Study, setup: StudySetup) -> None:
    study.set_user_attr(ATTR, asdict(setup))


@dataclass
class WorkerRun:
    """One process's share of a study."""

    study_name: str
    storage_url: str
    home: Path
    device: str | None
    worker_index: int = 0
    n_trials: int | None = None
    timeout: float | None = None

    def run(self, progress: Progress, tracker: Tracker | None) -> optuna.Study:
        storage = open_storage(self.storage_url, StaleTrialHandler(tracker))
        loaded = load_existing_study(storage, self.study_name, self.storage_url)
        setup = read_setup(loaded)
        study = optuna.load_study(
            study_name=self.study_name, storage=storage,
            sampler=make_sampler(setup.sampler, setup.seed, self.worker_index),
            pruner=make_pruner(setup.pruner, int(setup.base["epochs"])),
        )  # fmt: skip
        base = setup.base_config(self.device)
        data = prepare_data(base.data)
        objective = Objective(
            base=base, space=setup.search_space(), data=data,
            checkpoint_root=self.home / "checkpoints" / self.study_name, study_name=self.study_name,
            tracker=tracker, parent_run_id=setup.parent_run_id, device=str(resolve_device(base.device)),
            progress=progress,
        )  # fmt: skip
        callbacks: list[Any] = [progress]
        if setup.target_trials is not None:
            finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            callbacks.append(optuna.study.MaxTrialsCallback(setup.target_trials, states=finished))
        study.optimize(
            objective, n_trials=self.n_trials, timeout=self.timeout, callbacks=callbacks,
            catch=(Exception,),  # a crashed or diverged trial is recorded; the study goes on
        )  # fmt: skip
        return study


def tracker_for(setup: StudySetup, home: Path, tracking_uri: str | None) -> Tracker:
    from tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(resolve_target(home, tracking_uri or setup.tracking_uri, setup.experiment))


def spawn_workers(
    study_name: str,
    storage_url: str,
    home: Path,
    devices: list[str | None],
    tracking_uri: str | None,
) -> list[subprocess.Popen[bytes]]:
    """N local worker processes (one per device when --devices is given)."""
    processes = []
    for index, device in enumerate(devices):
        command = [sys.executable, "-m", "search.cli", "worker", "--study", study_name, "--storage", storage_url,
                   "--home", str(home), "--worker-index", str(index)]  # fmt: skip
        if device:
            command += ["--device", device]
        if tracking_uri:
            command += ["--tracking-uri", tracking_uri]
        processes.append(subprocess.Popen(command, env={**os.environ}))
    return processes


def wait_for(processes: list[subprocess.Popen[bytes]]) -> None:
    """Wait for the workers; Ctrl-C or SIGTERM here stops them all (their runs end KILLED)."""
    try:
        for process in processes:
            process.wait()
    except KeyboardInterrupt:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        raise
    failed = [p.returncode for p in processes if p.returncode not in (0, None)]
    if failed:
        raise RuntimeError(f"{len(failed)} worker process(es) failed with exit codes {failed}")
