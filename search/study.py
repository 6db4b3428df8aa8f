"""The search facade: `run_search(request, tracker)` creates or resumes a study, runs its
trials (in this process or in local worker processes) and returns the study's report.

Everything the `search` command does lives here, so that a notebook, a test or another
program runs a search the same way the command line does.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from search.objective import ERROR_ATTR, VERDICT
from search.progress import Progress
from search.recovery import recover_orphans, recover_process
from search.report import StudyReport, build_report, save_figures
from search.resume_check import check_unchanged
from search.setup import StudySetup, make_pruner, make_sampler, stored_setup, write_setup
from search.space import SPACE_PARAMS, SearchSpace, contains_original
from search.storage import (
    RUN_ID_ATTR,
    StaleTrialHandler,
    check_storage_url,
    exists_on_disk,
    open_storage,
    study_exists,
)
from search.supervisor import run_local_workers
from search.workers import (
    FINISHED_STATES,
    WorkerSpec,
    check_parent_run,
    prepared_data,
    run_trials,
)
from siamese.config import SEED_PRESET, TrainConfig
from siamese.errors import JobFailed, SiameseInputError
from siamese.files import signals_deferred
from siamese.names import check_name
from tracking.base import KIND_TAG, STUDY_KIND, Tracker


@dataclass(frozen=True)
class SearchRequest:
    study_name: str
    base: TrainConfig
    space: SearchSpace
    storage_url: str
    home: Path
    trials: int = 12
    sampler: str = "tpe"
    pruner: str = "median"
    timeout: float | None = None
    # One entry per worker: None = this process's device; several = local worker processes.
    devices: tuple[str | None, ...] = (None,)
    baseline: bool = True
    # The MLflow store the user named (None: the home folder's); recorded in the study.
    tracking_uri: str | None = None
    experiment: str = "siamese-lab"
    population: int | None = None  # trials trained at once per worker (None: per device)
    # The study-shaping flags the user typed: parameter name -> flag (checked on a resume).
    typed: dict[str, str] = field(default_factory=dict)
    checkpoint_every_s: float | None = None  # a running trial's last.pt (None: the default)


@dataclass(frozen=True)
class OpenedStudy:
    """What `run_search` tells its caller before the first trial starts."""

    name: str
    storage_url: str
    existed: bool
    setup: StudySetup
    workers: int
    trials: int
    tracking_uri: str | None  # where the runs go (None: not tracked)
    notes: tuple[str, ...] = ()  # trials recovered on the way in


@dataclass(frozen=True)
class SearchResult:
    study_name: str
    storage_url: str
    existed: bool
    parent_run_id: str | None
    tracking_uri: str | None  # where the runs went (None: not tracked)
    report: StudyReport
    setup: StudySetup = field(repr=False)
    notes: tuple[str, ...] = ()  # dead workers and their recovered trials: one line each


RUN_NOTE_TAG = "mlflow.note.content"
RUN_NOTE_LIMIT = 8000  # MLflow's limit for a tag value

# Makes the tracker for a study from the MLflow URI the study recorded (None: the user's or
# the home folder's store); returns None when the search is not tracked.
# (the MLflow URI and experiment a study recorded) -> its tracker, or None (--no-track)
TrackerFactory = Callable[[str | None, str | None], Tracker | None]


def run_search(
    request: SearchRequest,
    make_tracker: TrackerFactory,
    progress: Progress,
    on_open: Callable[[OpenedStudy], None] = lambda _: None,
) -> SearchResult:
    """Create or resume the study, run `request.trials` more trials, report. A resumed
    study keeps its stored space, base config and MLflow store, and first recovers the
    trials a dead or interrupted process left."""
    check_name("--study", request.study_name)  # it names a folder under the home
    _check_storage(request)
    session = _open_study(request, make_tracker)
    study, setup, tracker = session.study, session.setup, session.tracker
    tracking_uri = tracker.uri if tracker is not None else None
    workers, trials = len(request.devices), request.trials
    opened = OpenedStudy(
        study.study_name,
        request.storage_url,
        session.existed,
        setup,
        workers,
        trials,
        tracking_uri,
        tuple(session.notes),
    )
    parent = setup.parent_run_id
    if tracker is None or parent is None:
        on_open(opened)
        done_before = _finished(study)
        notes = _run_workers(request, study, setup, progress, tracker)
        report = build_report(study)
    else:
        from tracking import final_status

        with final_status(tracker, parent):
            on_open(opened)  # a Ctrl-C from here on ends the study's run KILLED
            done_before = _finished(study)
            try:
                notes = _run_workers(request, study, setup, progress, tracker)
            finally:
                report = build_report(study)
                _finish_parent(tracker, parent, study, report)
        tracker.flush()  # every deferred record has landed when the search returns
    _fail_if_nothing_worked(study, done_before)
    return SearchResult(
        study.study_name,
        request.storage_url,
        session.existed,
        parent,
        tracking_uri,
        report,
        setup,
        tuple(notes),  # the ones found on the way in went to on_open
    )


@dataclass
class _Session:
    study: optuna.Study
    setup: StudySetup
    tracker: Tracker | None
    existed: bool
    notes: list[str]


def _open_study(request: SearchRequest, make_tracker: TrackerFactory) -> _Session:
    """The study, created or resumed, with its setup written: the MLflow store is reached
    before anything is created, so a store that fails leaves no half-made study."""
    stale = StaleTrialHandler()
    # A home's journal (or SQLite file) that is not there yet holds no study: it is made
    # once the data and the MLflow store are known good, so a refusal leaves no empty one.
    storage = (
        open_storage(request.storage_url, stale) if exists_on_disk(request.storage_url) else None
    )
    stored = None if storage is None else stored_setup(storage, request.study_name)
    if stored is not None:
        check_unchanged(request.study_name, stored, _new_setup(request), request.typed)
    else:
        # Bad data is bad input before the study exists: a study stored with it could
        # neither run nor be resumed with other data.
        prepared_data(request.base.data)
    setup = stored or _new_setup(request)
    tracker = stale.tracker = make_tracker(setup.tracking_uri, setup.experiment)
    exists = storage is not None and study_exists(storage, request.study_name)
    storage = storage or open_storage(request.storage_url, stale)
    study = _load_or_create(storage, request.study_name, setup, exists)
    notes = recover_orphans(study, tracker) if stored else []
    # Ctrl-C is held from the study's run being made (or reopened) until the setup names
    # it: a resume then finds that run and ends it, rather than leaving it RUNNING unnamed.
    with signals_deferred():
        parent = _parent_run(tracker, study, setup)
        if request.baseline and request.trials > 0 and not study.trials:
            _enqueue_baseline(study, request.space)
        target = _started(study) + request.trials  # queued (WAITING) trials are part of it
        setup = replace(setup, parent_run_id=parent, target_trials=target)
        write_setup(study, setup)
    return _Session(study, setup, tracker, stored is not None, notes)


def _load_or_create(
    storage: BaseStorage, name: str, setup: StudySetup, exists: bool
) -> optuna.Study:
    """Loaded when it exists: create_study(load_if_exists=True) appends a creation record
    to a journal on every resume (and on a resume refused after it)."""
    sampler = make_sampler(setup.sampler, setup.seed)
    pruner = make_pruner(setup.pruner, int(setup.base["epochs"]))
    if exists:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,  # another process may create it meanwhile
        sampler=sampler,
        pruner=pruner,
    )


def _finished(study: optuna.Study) -> set[int]:
    return {t.number for t in study.get_trials(deepcopy=False, states=FINISHED_STATES)}


def _fail_if_nothing_worked(study: optuna.Study, done_before: set[int]) -> None:
    """A search whose every trial failed (a full disk, a broken data folder) is no success."""
    finished = study.get_trials(deepcopy=False, states=FINISHED_STATES)
    ran = [t for t in finished if t.number not in done_before]
    crashed = [
        t for t in ran if t.state == optuna.trial.TrialState.FAIL and VERDICT not in t.user_attrs
    ]
    # A diverged trial failed with a diagnosis: that is a result, like any verdict.
    if ran and len(crashed) == len(ran):
        first = ran[0]
        raise JobFailed(
            f"all {len(ran)} trial(s) of this search failed; trial {first.number}: "
            f"{_why_failed(first)}"
        )


def _why_failed(trial: optuna.trial.FrozenTrial) -> str:
    """The error a failed trial recorded; else where to look (its run, if it has one)."""
    if ERROR_ATTR in trial.user_attrs:
        return str(trial.user_attrs[ERROR_ATTR])
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if run_id:
        return f"no error recorded on the trial; see its MLflow run {run_id}"
    return "no error recorded on the trial, and it had no MLflow run yet; see the output above"


def _check_storage(request: SearchRequest) -> None:
    check_storage_url(request.storage_url)
    jobs = len(request.devices)
    if jobs > 1 and request.storage_url.startswith("sqlite"):
        raise SiameseInputError(
            f"--storage {request.storage_url}: SQLite is not safe for {jobs} parallel writers; "
            "use journal:PATH or postgresql://..."
        )


def _new_setup(request: SearchRequest) -> StudySetup:
    return StudySetup(
        base=request.base.to_dict(),
        space=asdict(request.space),
        sampler=request.sampler,
        pruner=request.pruner,
        seed=request.base.seed,
        tracking_uri=request.tracking_uri,
        experiment=request.experiment,
        parent_run_id=None,
        target_trials=None,
    )


def _parent_run(tracker: Tracker | None, study: optuna.Study, setup: StudySetup) -> str | None:
    """The study's MLflow run, which every trial's run nests under; reopened on a resume."""
    if tracker is None:
        return setup.parent_run_id
    if setup.parent_run_id is not None:
        check_parent_run(tracker, study.study_name, setup.parent_run_id)
        tracker.reopen_run(setup.parent_run_id)
        return setup.parent_run_id
    space = setup.search_space()
    base = setup.base_config(None).flat()
    params: dict[str, object] = {"sampler": setup.sampler, "pruner": setup.pruner}
    params["seed"] = setup.seed
    params.update({f"space.{k}": v for k, v in space.describe().items()})
    params.update({f"base.{k}": v for k, v in base.items() if k not in SPACE_PARAMS})
    tags = {"optuna.study": study.study_name, KIND_TAG: STUDY_KIND}
    return tracker.start_run(study.study_name, params, tags)


def _enqueue_baseline(study: optuna.Study, space: SearchSpace) -> None:
    """Trial 0 of a new study is the original failing network, when the space holds it: a
    known failure for the report to place on its map."""
    original = {k: v for k, v in SEED_PRESET.items() if k in SPACE_PARAMS}
    if contains_original(space, original):
        note = {"baseline": "the original network (--preset seed)"}
        study.enqueue_trial(original, user_attrs=note)


def _started(study: optuna.Study) -> int:
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return len(study.trials) - len(waiting)


def _run_workers(
    request: SearchRequest,
    study: optuna.Study,
    setup: StudySetup,
    progress: Progress,
    tracker: Tracker | None,
) -> list[str]:
    if setup.target_trials is not None and _started(study) >= setup.target_trials:
        return []  # --trials 0: create or update the study only
    specs = [
        WorkerSpec(
            study.study_name,
            request.storage_url,
            request.home,
            device,
            index,
            timeout=request.timeout,
            tracking_uri=request.tracking_uri,
            track=tracker is not None,
            population=request.population,
            checkpoint_every_s=request.checkpoint_every_s,
            quiet=progress.console.quiet,
        )
        for index, device in enumerate(request.devices)
    ]
    if len(specs) > 1:

        def on_death(pid: int, why: str) -> list[str]:
            return recover_process(study, pid, tracker, why)

        return run_local_workers(specs, on_death)
    run_trials(study, setup, specs[0], progress, tracker)
    return []


def _finish_parent(tracker: Tracker, run_id: str, study: optuna.Study, report: StudyReport) -> None:
    tracker.release_writer()  # no trial is set up any more: the writer catches up meanwhile
    tracker.log_text(run_id, report.markdown(), "report.md")
    tracker.log_text(run_id, json.dumps(report.to_dict(), indent=2, default=str), "report.json")
    with tempfile.TemporaryDirectory() as tmp:
        for figure in save_figures(study, Path(tmp)):
            tracker.log_artifact(run_id, figure, "figures")
    if report.best:
        best = {"best_val_auc": float(report.best["value"])}
        tracker.log_metrics(run_id, best, step=report.n_trials)
    counts = ", ".join(f"{k}: {v}" for k, v in report.diagnoses.items())
    # The run's description, which MLflow renders as markdown on the run's overview page.
    note = report.markdown()[:RUN_NOTE_LIMIT]
    tracker.set_tags(run_id, {"diagnosis.counts": counts[:4000], RUN_NOTE_TAG: note})
