"""Running a study's trials: in this process, in N local worker processes (multiprocessing,
spawn), or as one worker of many joining over a shared storage. Every way ends in the same
function, `run_trials`, with the study opened once in the process that runs it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from search.heartbeats import fail_stale_trials
from search.objective import Objective
from search.population import Budget, room_left, run_populations
from search.progress import Progress
from search.setup import StudySetup, make_pruner, make_sampler, read_stored_setup
from search.storage import StaleTrialHandler, exists_on_disk, open_storage
from siamese import DataConfig, PairData, prepare_data
from siamese.errors import SiameseInputError
from siamese.interrupts import interrupts_remembered, raise_if_interrupted
from siamese.names import check_name
from siamese.train import gpu, resolve_device
from tracking.base import Tracker

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# The data this process prepared last: `search` checks a new study's data before the study
# exists, and its trials then train on the same pairs.
_prepared: dict[DataConfig, PairData] = {}
# Members per population on a GPU when --population is not given. Not yet measured on one:
# `bench/gpu_check.sh` prints pairs/s at K = 1, 8, 32 and 128 to choose it from.
GPU_POPULATION = 32


@dataclass(frozen=True)
class WorkerSpec:
    """One worker's share of a study: everything a fresh process needs (it is pickled)."""

    study_name: str
    storage_url: str
    home: Path
    device: str | None = None
    worker_index: int = 0
    n_trials: int | None = None
    timeout: float | None = None
    tracking_uri: str | None = None
    track: bool = True
    # Trials trained at once (search --population); None: the device's default.
    population: int | None = None
    # How often a running trial rewrites its last.pt (--checkpoint-every); None: the default.
    checkpoint_every_s: float | None = None
    # No progress lines (search --json: its standard output is the one JSON object).
    quiet: bool = False


def run_trials(
    study: optuna.Study,
    setup: StudySetup,
    spec: WorkerSpec,
    progress: Progress,
    tracker: Tracker | None,
) -> None:
    """Optimize `study` (already opened with its sampler and pruner) until the study's target,
    this worker's --trials or --timeout. A crashed or diverged trial is recorded; it goes on."""
    base = setup.base_config(spec.device)
    progress.total = setup.target_trials
    objective = Objective(
        base=base,
        space=setup.search_space(),
        data=prepared_data(base.data),
        checkpoint_root=spec.home / "checkpoints" / spec.study_name,
        study_name=spec.study_name,
        tracker=tracker,
        parent_run_id=setup.parent_run_id,
        device=str(resolve_device(base.device)),
        progress=progress,
        checkpoint_every_s=spec.checkpoint_every_s,
    )
    size = spec.population or default_population(objective.device)
    budget = worker_budget(setup, spec)
    try:
        with interrupts_remembered():
            if size > 1:
                run_populations(study, objective, size, budget, progress)
            else:
                _optimize(study, objective, budget, progress)
    finally:
        if tracker is not None:  # the last trials' deferred records land before we return
            tracker.flush()


def default_population(device: str) -> int:
    """One trial at a time on the CPU, where a population gains nothing (its members run
    one after another); on a GPU, enough members to fill the chip."""
    return GPU_POPULATION if device.startswith("cuda") else 1


def worker_budget(setup: StudySetup, spec: WorkerSpec) -> Budget:
    """`worker --trials N` runs N trials whatever the study's target (a study made with
    `search --trials 0` is joined by workers that each bring theirs); without it, a worker
    runs until the study's target."""
    target = setup.target_trials if spec.n_trials is None else None
    return Budget(target, spec.n_trials, spec.timeout)


def _optimize(
    study: optuna.Study, objective: Objective, budget: Budget, progress: Progress
) -> None:
    """One trial at a time while the budget has room. Asked trial by trial, not by one
    `optimize` with Optuna's MaxTrialsCallback: that counts finished trials only, so each
    of N workers started one more while the others' last trials ran (`--jobs 8 --trials 24`
    ran 31), and nothing stopped a worker's first trial past the target."""
    # A Ctrl-C that landed in a finalizer and was dropped stops the search after the trial.
    callbacks: list[Any] = [progress, lambda _study, _trial: raise_if_interrupted()]
    started, asked = time.monotonic(), 0
    while budget.timeout is None or time.monotonic() - started < budget.timeout:
        fail_stale_trials(study)  # a dead worker's trial counts as running until then
        if objective.disk_full or not _may_ask(study, budget, asked):
            return
        asked += 1
        study.optimize(objective, n_trials=1, callbacks=callbacks, catch=(Exception,))


def _may_ask(study: optuna.Study, budget: Budget, asked: int) -> bool:
    """Room in the budget, or a queued trial: a dead worker's retry runs past the study's
    target (its failed original counts toward it), as long as this worker's own count allows."""
    if room_left(study, budget, 1, asked) > 0:
        return True
    own_room = budget.n_trials is None or asked < budget.n_trials
    return own_room and bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def open_for_worker(
    storage: optuna.storages.BaseStorage, setup: StudySetup, name: str
) -> optuna.Study:
    """The study with its sampler (seeded per trial) and its pruner."""
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(setup.sampler, setup.seed),
        pruner=make_pruner(setup.pruner, int(setup.base["epochs"])),
    )


def join_study(
    spec: WorkerSpec,
    console: Console,
    make_tracker: Callable[[str | None, str | None], Tracker | None],
    on_joined: Callable[[], None] = lambda: None,
) -> None:
    """A worker that starts from the storage alone: `siamese-lab worker`, or a local child.
    `make_tracker` gets the MLflow URI and experiment the study recorded; `on_joined` runs once the study
    and its MLflow store are found (before that, a mistake is the one line printed)."""
    check_name("--study", spec.study_name)  # it names a folder under the home
    check_storage_file_exists(spec.storage_url)
    # Its GPU (--devices, --device) is the process's current device before anything touches
    # CUDA: no context on GPU 0 beside it, and every capture on the right device.
    gpu.make_current(spec.device)
    stale = StaleTrialHandler()
    storage = open_storage(spec.storage_url, stale)
    setup = read_stored_setup(storage, spec.study_name, spec.storage_url)
    if spec.track and setup.parent_run_id is not None:
        check_parent_store(spec, setup.tracking_uri, setup.parent_run_id)
    tracker = stale.tracker = make_tracker(setup.tracking_uri, setup.experiment)
    if tracker is not None and setup.parent_run_id is not None:
        check_parent_run(tracker, spec.study_name, setup.parent_run_id)
    study = open_for_worker(storage, setup, spec.study_name)
    on_joined()
    run_trials(study, setup, spec, Progress(console, None), tracker)  # it sets the total


def check_storage_file_exists(url: str) -> None:
    """A worker joins a study that exists: a journal or SQLite file that does not is a
    mistyped path, not a new storage to make (and leave behind, empty)."""
    if exists_on_disk(url):
        return
    kind = "journal" if url.startswith("journal:") else "SQLite"
    raise SiameseInputError(
        f"--storage {url}: no such {kind} file; expected the storage of a study that "
        "`siamese-lab search` created"
    )


def check_parent_run(tracker: Tracker, study_name: str, parent: str) -> None:
    """A worker on another machine, left on its own embedded store, would log its trials
    under a parent run that is not there, where nobody looks for them."""
    try:
        tracker.get_run(parent)
    except SiameseInputError as exc:
        raise _parent_not_found(study_name, parent, tracker.uri) from exc


def check_parent_store(spec: WorkerSpec, recorded_uri: str | None, parent: str) -> None:
    """The same, said before an embedded store is made for it: a store that is not there
    holds no parent run, and making one would leave it behind."""
    from search.env import LabEnv
    from tracking.fresh_store import sqlite_path

    target = LabEnv(spec.home, spec.tracking_uri).tracking_target(recorded_uri)
    store = sqlite_path(target.uri)
    if store is not None and not store.is_file():
        raise _parent_not_found(spec.study_name, parent, target.uri)


def _parent_not_found(study_name: str, parent: str, uri: str) -> SiameseInputError:
    return SiameseInputError(
        f"study {study_name!r} logs its trials under MLflow run {parent}, which this process "
        f"cannot find in {uri}; point it at the study's MLflow server (--tracking-uri "
        "or MLFLOW_TRACKING_URI), or add --no-track"
    )


def prepared_data(config: DataConfig) -> PairData:
    """prepare_data, once per process for the config it was last asked for."""
    if config not in _prepared:
        _prepared.clear()
        _prepared[config] = prepare_data(config)
    return _prepared[config]


def child_main(spec: WorkerSpec) -> None:
    """A local worker process: the same `join_study` as on another machine."""
    from search.env import LabEnv
    from search.parent_watch import stop_when_the_parent_dies
    from search.reader_gone import reader_may_leave
    from tracking.drawing_notes import hush_matplotlib_notes

    stop_when_the_parent_dies()
    hush_matplotlib_notes()  # from this process's main thread, as the command line does

    def make_tracker(recorded_uri: str | None, experiment: str | None) -> Tracker | None:
        env = LabEnv(spec.home, spec.tracking_uri)
        return env.tracker(recorded_uri, experiment) if spec.track else None

    try:
        with reader_may_leave():  # `search --jobs N | head` trains on in every worker
            join_study(spec, Console(soft_wrap=True, quiet=spec.quiet), make_tracker)
    except KeyboardInterrupt:  # stopped by the parent: its run already ended KILLED
        sys.exit(130)
    except SiameseInputError as exc:
        print(f"worker {spec.worker_index}: error: {exc}", file=sys.stderr)
        sys.exit(2)
