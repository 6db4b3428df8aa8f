"""`siamese-lab search` (the main job), `worker` and `report`."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import optuna
from rich.console import Console

from search.cli_common import (
    data_options,
    home_dir,
    home_option,
    print_json,
    tracking_options,
    train_options,
)
from search.progress import Progress
from search.report import StudyReport, build_report, save_figures
from search.runner import (
    PRUNERS,
    SAMPLERS,
    StudySetup,
    WorkerRun,
    read_setup,
    spawn_workers,
    tracker_for,
    wait_for,
    write_setup,
)
from search.space import SearchSpace, load_space
from search.storage import default_storage_url, load_existing_study, open_storage, study_exists
from siamese.config import SEED_PRESET
from siamese.errors import SiameseInputError
from tracking.base import Tracker

SPACE_PARAMS = ("lr", "optimizer", "momentum", "head", "dropout")
# A search trains many models: smaller defaults than `train`, so the bundled digits search
# finishes in a few minutes on two CPU cores.
SEARCH_DEFAULTS = {"epochs": 3, "train_pairs": 1024, "val_pairs": 256}

optuna.logging.set_verbosity(optuna.logging.WARNING)
# The heartbeat is "experimental" in Optuna 5 but is what makes dead workers' trials retry.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _base_and_space(flags: dict[str, Any], space_file: Path | None) -> tuple[Any, Any]:
    from search.cli_train import build_config

    fixed = {k: flags.pop(k) for k in SPACE_PARAMS if flags.get(k) is not None}
    for key in SPACE_PARAMS:
        flags.pop(key, None)
    for key, value in SEARCH_DEFAULTS.items():
        flags[key] = value if flags.get(key) is None else flags[key]
    return build_config(None, {**flags, **dict.fromkeys(SPACE_PARAMS)}), load_space(
        space_file, fixed
    )


def _devices(devices: str | None, jobs: int) -> list[str | None]:
    if devices:
        return [f"cuda:{d.strip()}" for d in devices.split(",") if d.strip()]
    return [None] * jobs


def _open_study(
    ctx: click.Context, name: str, storage_url: str, jobs: int
) -> tuple[Any, optuna.Study, bool]:
    if jobs > 1 and storage_url.startswith("sqlite"):
        raise SiameseInputError(f"--storage {storage_url}: SQLite is not safe for --jobs {jobs} writers; "
                                "use journal:PATH or postgresql://...")  # fmt: skip
    storage = open_storage(storage_url)
    existed = study_exists(storage, name)
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True
    )
    return storage, study, existed


def _enqueue_baseline(study: optuna.Study, space: SearchSpace) -> None:
    """Trial 0 of a new study is the original failing network (DESIGN.md), when the space
    holds it: a known failure for the report to place on its map."""
    original = {k: v for k, v in SEED_PRESET.items() if k in SPACE_PARAMS}
    inside = (
        space.lr.low <= original["lr"] <= space.lr.high
        and original["optimizer"] in space.optimizer
        and original["head"] in space.head
        and space.momentum.low <= original["momentum"] <= space.momentum.high
        and space.dropout.low <= original["dropout"] <= space.dropout.high
        and not space.fixed
    )
    if inside:
        study.enqueue_trial(
            original, user_attrs={"baseline": "the original network (--preset seed)"}
        )


def _started(study: optuna.Study) -> int:
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return len(study.trials) - len(waiting)


def _shared_storage(storage_url: str) -> bool:
    """Storage other machines can reach: a database server, not a local file."""
    return not storage_url.startswith(("sqlite:", "journal:"))


def check_parent_run(tracker: Tracker, study_name: str, parent: str) -> None:
    """A worker on another machine, left on its own embedded store, would log its trials
    under a parent run that is not there, where nobody looks for them."""
    try:
        tracker.get_run(parent)
    except SiameseInputError as exc:
        raise SiameseInputError(
            f"study {study_name!r} logs its trials under MLflow run {parent}, which this process "
            f"cannot find in {tracker.uri}; point it at the study's MLflow server (--tracking-uri "
            "or MLFLOW_TRACKING_URI), or add --no-track"
        ) from exc


def _start_parent(tracker: Tracker, study: optuna.Study, setup: StudySetup, space: Any) -> str:
    params = {"sampler": setup.sampler, "pruner": setup.pruner, "seed": setup.seed,
              **{f"space.{k}": v for k, v in space.describe().items()},
              **{f"base.{k}": v for k, v in setup.base_config(None).flat().items() if k not in SPACE_PARAMS}}  # fmt: skip
    tags = {"optuna.study": study.study_name, "siamese_lab.kind": "study"}
    return tracker.start_run(study.study_name, params, tags)


def _finish_parent(tracker: Tracker, run_id: str, study: optuna.Study, report: StudyReport) -> None:
    tracker.log_text(run_id, report.markdown(), "report.md")
    import json

    tracker.log_text(run_id, json.dumps(report.to_dict(), indent=2, default=str), "report.json")
    with tempfile.TemporaryDirectory() as tmp:
        for figure in save_figures(study, Path(tmp)):
            tracker.log_artifact(run_id, figure, "figures")
    if report.best:
        tracker.log_metrics(
            run_id, {"best_val_auc": float(report.best["value"])}, step=report.n_trials
        )
    tracker.set_tags(
        run_id,
        {"diagnosis.counts": ", ".join(f"{k}: {v}" for k, v in report.diagnoses.items())[:4000]},
    )


@click.command()
@click.option(
    "--study",
    "study_name",
    default="siamese-lab",
    show_default=True,
    help="name; the same name resumes it",
)
@click.option(
    "--trials", type=click.IntRange(min=0), default=12, show_default=True,
    help="trials to add to the study (with several workers a target: running ones finish)",
)  # fmt: skip
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True),
    help="stop starting trials after this many seconds",
)  # fmt: skip
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(PRUNERS), default="median", show_default=True)
@click.option(
    "--space",
    "space_file",
    type=click.Path(path_type=Path),
    help="TOML file narrowing/fixing the space",
)
@click.option(
    "--storage",
    help="journal:PATH, sqlite:///PATH or postgresql://... (default: in the home folder)",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="worker processes on this machine",
)
@click.option("--devices", help="one worker per GPU, e.g. 0,1,2,3")
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="make trial 0 of a new study the original failing network",
)
@train_options
@data_options
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-track", is_flag=True, help="do not log to MLflow")
@tracking_options
@home_option
@click.pass_context
def search(ctx: click.Context, study_name: str, trials: int, timeout: float | None, sampler: str, pruner: str,
           space_file: Path | None, storage: str | None, jobs: int, devices: str | None, baseline: bool, as_json: bool,
           no_track: bool, tracking_uri: str | None, experiment: str, **flags: Any) -> None:  # fmt: skip
    """Create or resume a study and run its trials; every trial is logged to MLflow."""
    home = home_dir(ctx)
    base, space = _base_and_space(flags, space_file)
    workers = _devices(devices, max(jobs, 1))
    storage_url = storage or default_storage_url(home, len(workers))
    _storage, study, existed = _open_study(ctx, study_name, storage_url, len(workers))
    setup = StudySetup(base.to_dict(), asdict(space), sampler, pruner, base.seed,
                       tracking_uri, experiment, None, None)  # fmt: skip
    if existed and study.user_attrs.get("siamese_lab"):
        setup = read_setup(study)
    tracker = None if no_track else tracker_for(setup, home, tracking_uri)
    parent = setup.parent_run_id
    if tracker is not None:
        if parent is None:
            parent = _start_parent(tracker, study, setup, space)
        else:
            check_parent_run(tracker, study_name, parent)
            tracker.reopen_run(parent)
    if not existed and baseline and trials > 0:
        _enqueue_baseline(study, space)
    target = _started(study) + trials  # queued (WAITING) trials are part of the new ones
    setup = StudySetup(**{**setup.__dict__, "parent_run_id": parent, "target_trials": target})
    write_setup(study, setup)
    console = Console(stderr=as_json, quiet=as_json, soft_wrap=True)
    console.print(f"study {study_name!r} ({'resumed, with its stored space and base config' if existed else 'new'}) in {storage_url}: "
                  f"{trials} trial(s), sampler {setup.sampler}, pruner {setup.pruner}, {len(workers)} worker(s)")  # fmt: skip
    if tracker is not None and _shared_storage(storage_url) and tracker.uri.startswith("sqlite:"):
        console.print(f"note: the study is shared, but its runs go to {tracker.uri} on this machine; workers "
                      "elsewhere need --tracking-uri of an MLflow server this machine logs to too")  # fmt: skip
    _run_and_report(
        ctx, study, setup, storage_url, workers, tracker, parent, timeout, console, as_json, home
    )


def _run_and_report(ctx: click.Context, study: optuna.Study, setup: StudySetup, storage_url: str,
                    workers: list[str | None], tracker: Tracker | None, parent: str | None,
                    timeout: float | None, console: Console, as_json: bool, home: Path) -> None:  # fmt: skip
    from tracking import final_status

    def run_trials() -> None:
        if setup.target_trials is not None and _started(study) >= setup.target_trials:
            return  # --trials 0: create or update the study only
        if len(workers) == 1 and workers[0] is None:
            worker = WorkerRun(study.study_name, storage_url, home, None, timeout=timeout)
            worker.run(Progress(console, setup.target_trials), tracker)
        else:
            wait_for(
                spawn_workers(study.study_name, storage_url, home, workers, setup.tracking_uri)
            )

    if tracker is None or parent is None:
        run_trials()
    else:
        with final_status(tracker, parent):
            try:
                run_trials()
            finally:
                _finish_parent(tracker, parent, study, build_report(study))
    report = build_report(study)
    if as_json:
        print_json(
            {
                "study": study.study_name,
                "storage": storage_url,
                "parent_run_id": parent,
                "report": report.to_dict(),
            }
        )
        return
    console.print(report.markdown(), markup=False, highlight=False)
    console.print(
        f"open the UI: siamese-lab ui --home {home}"
        + (f"   (study run {parent})" if parent else "")
    )
    console.print(
        f"promote the best converged trial: siamese-lab promote --study {study.study_name} --home {home}"
    )


@click.command()
@click.option("--study", "study_name", required=True)
@click.option(
    "--storage", required=True, help="the study's storage URL (postgresql://..., journal:PATH)"
)
@click.option(
    "--trials", type=click.IntRange(min=1),
    help="at most this many trials (default: until the study's target)",
)  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True))
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: the study's)")
@click.option("--worker-index", type=int, default=0, hidden=True)
@click.option("--no-track", is_flag=True)
@tracking_options
@home_option
@click.pass_context
def worker(ctx: click.Context, study_name: str, storage: str, trials: int | None, timeout: float | None,
           device: str | None, worker_index: int, no_track: bool, tracking_uri: str | None,
           experiment: str) -> None:  # fmt: skip
    """Join an existing study from this process (or another machine) and run trials."""
    home = home_dir(ctx)
    study = load_existing_study(open_storage(storage), study_name, storage)
    setup = read_setup(study)
    tracker = None if no_track else tracker_for(setup, home, tracking_uri)
    if tracker is not None and setup.parent_run_id is not None:
        check_parent_run(tracker, study_name, setup.parent_run_id)
    console = Console(soft_wrap=True)
    console.print(f"worker {worker_index} joined study {study_name!r} ({storage})")
    WorkerRun(study_name, storage, home, device, worker_index, trials, timeout).run(
        Progress(console, setup.target_trials), tracker
    )


@click.command()
@click.option("--study", "study_name", required=True)
@click.option("--storage", help="default: the home folder's study storage")
@click.option("--json", "as_json", is_flag=True)
@home_option
@click.pass_context
def report(ctx: click.Context, study_name: str, storage: str | None, as_json: bool) -> None:
    """Study-level failure map, best trial, diagnoses and parameter importances."""
    study = find_study(ctx, study_name, storage)
    result = build_report(study)
    if as_json:
        print_json(result.to_dict())
    else:
        click.echo(result.markdown())


def find_study(ctx: click.Context, study_name: str, storage: str | None) -> optuna.Study:
    """The study in --storage, else in the home folder's SQLite or journal storage."""
    home = home_dir(ctx)
    candidates = (
        [storage] if storage else [default_storage_url(home, 1), default_storage_url(home, 2)]
    )
    for url in candidates:
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            continue
        if url.startswith("journal:") and not Path(url.removeprefix("journal:")).exists():
            continue
        opened = open_storage(url)
        if study_exists(opened, study_name):
            return optuna.load_study(study_name=study_name, storage=opened)
    raise SiameseInputError(f"--study {study_name!r}: not found in {', '.join(candidates)}")
