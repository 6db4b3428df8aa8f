"""`siamese-lab search` (the main job), `worker` and `report`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from search.cli.common import (
    OVERRIDES,
    checked_name,
    current_env,
    data_options,
    home_option,
    print_json,
    tracking_options,
    train_options,
    typed_flags,
)
from search.defaults import DEFAULT_STUDY, PRUNERS, SAMPLERS, SEARCH_BASE, SPACE_PARAMS

if TYPE_CHECKING:
    from rich.console import Console

    from search.env import LabEnv
    from search.study import OpenedStudy, SearchResult
    from tracking.base import Tracker


def _storage_option(help_text: str, required: bool = False) -> Any:
    return click.option("--storage", required=required, help=help_text)


def _not_nan(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    if value is not None and math.isnan(value):  # FloatRange lets nan through
        raise click.BadParameter("expected a number of seconds, got nan")
    return value


_checkpoint_every_option = click.option(
    "--checkpoint-every",
    "checkpoint_every_s",
    type=click.FloatRange(min=0),
    callback=_not_nan,
    help="seconds between a running trial's resumable last.pt writes; 0: after every epoch "
    "(default: 30, or 300 with a population; a trial trained alone also writes it on "
    "Ctrl-C or an error)",
)
_population_option = click.option(
    "--population",
    type=click.IntRange(min=1),
    help="trials each worker trains at once as one program (default: 1 on the CPU, 32 on a GPU)",
)


@click.command()
@click.option(
    "--study",
    "study_name",
    default=DEFAULT_STUDY,
    show_default=True,
    callback=checked_name,
    help="the same name resumes it",
)
@click.option(
    "--trials",
    type=click.IntRange(min=0),
    default=12,
    show_default=True,
    help="trials to add to the study (workers count each other's running trials too)",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    callback=_not_nan,
    help="stop starting trials after this many seconds",
)
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(PRUNERS), default="median", show_default=True)
@click.option(
    "--space",
    "space_file",
    type=click.Path(path_type=Path),
    help="TOML file narrowing/fixing the space",
)
@_storage_option("journal:PATH, sqlite:///PATH or postgresql://... (default: in the home folder)")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="worker processes on this machine",
)
@click.option("--devices", help="one worker per GPU, e.g. 0,1,2,3")
@_population_option
@_checkpoint_every_option
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="make trial 0 of a new study the original failing network",
)
@train_options(SEARCH_BASE, SPACE_PARAMS)
@data_options(SEARCH_BASE.data)
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-track", is_flag=True, help="do not log to MLflow")
@tracking_options
def search(
    study_name: str,
    trials: int,
    timeout: float | None,
    sampler: str,
    pruner: str,
    space_file: Path | None,
    storage: str | None,
    jobs: int,
    devices: str | None,
    population: int | None,
    checkpoint_every_s: float | None,
    baseline: bool,
    as_json: bool,
    no_track: bool,
    **flags: Any,
) -> None:
    """Create or resume a study and run its trials; every trial is logged to MLflow."""
    from rich.console import Console

    from search.progress import Progress
    from search.space import base_and_space
    from search.study import SearchRequest, run_search
    from search.training import check_device, check_jobs, gpu_devices

    check_jobs(jobs)
    env = current_env().with_overrides(storage_url=storage)
    workers: tuple[str | None, ...] = (
        gpu_devices(devices) if devices is not None else (None,) * jobs
    )
    base, space = base_and_space(flags, space_file)
    typed = _study_flags(flags, space_file)
    check_device("--device", base.device)  # a missing GPU: before the study and its run
    env.check_tracking_uri()  # recorded on the study, even untracked: a resume would use it
    request = SearchRequest(
        study_name=study_name,
        base=base,
        space=space,
        storage_url=env.study_storage_url(len(workers), study_name),
        home=env.ensure_home(),
        trials=trials,
        sampler=sampler,
        pruner=pruner,
        timeout=timeout,
        devices=workers,
        baseline=baseline,
        tracking_uri=env.tracking_uri,
        experiment=env.experiment,
        population=population,
        checkpoint_every_s=checkpoint_every_s,
        typed=typed,
    )
    console = Console(stderr=as_json, quiet=as_json, soft_wrap=True)
    make_tracker = (lambda _uri, _experiment: None) if no_track else env.tracker
    result = run_search(
        request, make_tracker, Progress(console, None), lambda opened: _announce(console, opened)
    )
    if as_json:
        print_json(_as_dict(result))
        return
    console.print(result.report.markdown(), markup=False, highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    _print_next_steps(console, result, env)


def _study_flags(flags: dict[str, Any], space_file: Path | None) -> dict[str, str]:
    """Parameter name -> flag as typed, for the settings a study keeps once created (all but
    --device, which each worker may choose): a resume refuses one that differs."""
    ctx = click.get_current_context()
    names = [k for k, v in flags.items() if v is not None and k != "device"]
    typed = ("sampler", "pruner")
    names += [k for k in typed if ctx.get_parameter_source(k) != ParameterSource.DEFAULT]
    names += ["space_file"] if space_file is not None else []
    as_typed = typed_flags()
    study_flags = {name: as_typed[name] for name in names}
    if "experiment" in ctx.meta.get(OVERRIDES, {}):  # its trials' runs stay beside its own
        study_flags["experiment"] = "--experiment"
    return study_flags


def _as_dict(result: SearchResult) -> dict[str, Any]:
    return {
        "study": result.study_name,
        "storage": result.storage_url,
        "parent_run_id": result.parent_run_id,
        "report": result.report.to_dict(),
        "notes": list(result.notes),
    }


def _announce(console: Console, opened: OpenedStudy) -> None:
    kind = "resumed, with its stored space and base config" if opened.existed else "new"
    setup = opened.setup
    console.print(
        f"study {opened.name!r} ({kind}) in {opened.storage_url}: {opened.trials} trial(s), "
        f"sampler {setup.sampler}, pruner {setup.pruner}, {opened.workers} worker(s)"
    )
    for note in opened.notes:
        console.print(f"recovered: {note}", highlight=False)
    shared = not opened.storage_url.startswith(("sqlite:", "journal:"))
    if shared and opened.tracking_uri and opened.tracking_uri.startswith("sqlite:"):
        console.print(
            f"note: the study is shared, but its runs go to {opened.tracking_uri} on this "
            "machine; workers elsewhere need --tracking-uri of an MLflow server this machine "
            "logs to too"
        )


def _print_next_steps(console: Console, result: SearchResult, env: LabEnv) -> None:
    """Commands that work as printed: they name the home, and the MLflow store when it is
    not the home's own (a study-scoped command finds that one in the study itself)."""
    uri = result.tracking_uri
    if uri is None:
        return
    where = f"--home {env.home}"
    if uri.startswith(("http://", "https://")):
        console.print(f"open the UI: {uri}   (study run {result.parent_run_id})")
    else:
        extra = "" if result.setup.tracking_uri is None else f" --tracking-uri {uri}"
        console.print(
            f"open the UI: siamese-lab ui {where}{extra}   (study run {result.parent_run_id})"
        )
    if result.storage_url not in env.default_storage_urls():
        where += f" --storage {result.storage_url}"
    if not result.report.diagnoses:  # no trial has ended (--trials 0): nothing to say yet
        return
    if result.report.best_converged is None:  # promote would refuse it
        console.print(
            "nothing to promote: no trial converged (see the diagnoses above); more trials: "
            f"siamese-lab search --study {result.study_name} --trials N {where}"
        )
        return
    console.print(
        f"promote the best converged trial: siamese-lab promote --study {result.study_name} {where}"
    )


@click.command()
@click.option("--study", "study_name", required=True, callback=checked_name)
@_storage_option("the study's storage URL (postgresql://..., journal:PATH)", required=True)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    help="this many trials, whatever the study's target (default: until the study's target)",
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), callback=_not_nan)
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: the study's)")
@_population_option
@_checkpoint_every_option
@click.option("--worker-index", type=int, default=0, hidden=True)
@click.option("--no-track", is_flag=True)
@tracking_options
def worker(
    study_name: str,
    storage: str,
    trials: int | None,
    timeout: float | None,
    device: str | None,
    population: int | None,
    checkpoint_every_s: float | None,
    worker_index: int,
    no_track: bool,
) -> None:
    """Join an existing study from this process (or another machine) and run trials."""
    from rich.console import Console

    from search.training import check_device
    from search.workers import WorkerSpec, join_study
    from siamese.errors import SiameseInputError
    from tracking.store import DEFAULT_EXPERIMENT

    if device is not None:
        check_device("--device", device)
    env = current_env()
    spec = WorkerSpec(
        study_name,
        storage,
        env.home,  # made once the study is found (its tracker, its trials' checkpoints)
        device,
        worker_index,
        n_trials=trials,
        timeout=timeout,
        tracking_uri=env.tracking_uri,
        track=not no_track,
        population=population,
        checkpoint_every_s=checkpoint_every_s,
    )
    console = Console(soft_wrap=True)
    typed_experiment = click.get_current_context().meta.get(OVERRIDES, {}).get("experiment")

    def tracker(recorded_uri: str | None, experiment: str | None) -> Tracker | None:
        if no_track:
            return None
        # A worker logs where its study does: another --experiment was silently ignored.
        logs_to = experiment or DEFAULT_EXPERIMENT
        if typed_experiment is not None and typed_experiment != logs_to:
            raise SiameseInputError(
                f"--experiment {typed_experiment}: study {study_name!r} logs its trials to "
                f"experiment {logs_to!r}, and so do its workers; leave --experiment out"
            )
        return env.tracker(recorded_uri, experiment)

    def joined() -> None:
        console.print(f"worker {worker_index} joined study {study_name!r} ({storage})")

    join_study(spec, console, tracker, joined)


@click.command()
@click.option(
    "--study", "study_name", default=DEFAULT_STUDY, show_default=True, callback=checked_name
)
@_storage_option("default: the home folder's study storage")
@click.option("--json", "as_json", is_flag=True)
@home_option
def report(study_name: str, storage: str | None, as_json: bool) -> None:
    """Study-level failure map, best trial, diagnoses and parameter importances."""
    from search.report import build_report
    from search.storage import find_study

    env = current_env()
    study, _url = find_study(study_name, (storage,) if storage else env.default_storage_urls())
    result = build_report(study)
    if as_json:
        print_json(result.to_dict())
    else:
        click.echo(result.markdown())
