"""`diagnose`, `promote`, `predict` and `ui`: the commands that read from MLflow."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from search.cli.common import (
    checked_alias,
    checked_name,
    current_env,
    print_json,
    read_tracker,
    tracking_options,
)

if TYPE_CHECKING:
    from torch import nn

    from search.env import LabEnv
    from tracking.base import Tracker
    from tracking.mlflow_tracker import MlflowTracker


@click.command("diagnose")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@tracking_options
def diagnose_run(run_id: str, as_json: bool) -> None:
    """Print a logged run's diagnosis with its evidence and fixes."""
    from siamese.diagnosis import Diagnosis, render_text
    from tracking.readback import read_diagnosis

    tracker = read_tracker(current_env())
    run, raw = read_diagnosis(tracker, tracker.resolve_run_id(run_id))
    if as_json:
        print_json(
            {"run_id": run.run_id, "run_name": run.name, "status": run.status, "diagnosis": raw}
        )
        return
    click.echo(f"run {run.run_id} ({run.name}, {run.status})")
    click.echo(render_text(Diagnosis.from_dict(raw)))


@click.command()
@click.option(
    "--run", "run_id", help="the run whose model to register (or its first 6+ characters)"
)
@click.option(
    "--study", callback=checked_name, help="register the study's best converged trial instead"
)
@click.option("--storage", help="the study's storage (default: the home folder's)")
@click.option(
    "--name",
    default="siamese",
    show_default=True,
    callback=checked_name,
    help="registered model name",
)
@click.option("--alias", default="champion", show_default=True, callback=checked_alias)
@click.option(
    "--force", is_flag=True, help="move the alias even if the current holder scores higher"
)
@click.option("--json", "as_json", is_flag=True)
@tracking_options
def promote(
    run_id: str | None,
    study: str | None,
    storage: str | None,
    name: str,
    alias: str,
    force: bool,
    as_json: bool,
) -> None:
    """Register a converged run's model and point an alias (default champion) at it."""
    from dataclasses import asdict

    from tracking.registry import promote as promote_run

    if run_id is not None and study is not None:
        raise click.UsageError(
            f"--run {run_id} and --study {study}: give one (a run, or the study's best converged trial)"
        )
    env = current_env()
    if run_id is not None:
        tracker = read_tracker(env)
        run_id = tracker.resolve_run_id(run_id)
    elif study is not None:
        tracker, run_id = _best_trial_run(env, study, storage)
    else:
        raise click.UsageError("give --run RUN_ID (or --study NAME)")
    result = promote_run(tracker, run_id, name, alias, force)
    if as_json:
        print_json(asdict(result))
        return
    click.echo(result.message)
    if result.promoted:
        click.echo(f"use it: siamese-lab predict --model models:/{name}@{alias} LEFT.png RIGHT.png")


def _best_trial_run(env: LabEnv, study: str, storage: str | None) -> tuple[Tracker, str]:
    """The study's best converged trial, in the MLflow store the study recorded."""
    from search.report import best_converged_run_id
    from search.setup import read_setup
    from search.storage import find_study

    found, _url = find_study(study, (storage,) if storage else env.default_storage_urls())
    return read_tracker(env, read_setup(found).tracking_uri), best_converged_run_id(found)


@click.command()
@click.option(
    "--model",
    "model_uri",
    required=True,
    help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or a checkpoint .pt",
)
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--pairs", "pairs_csv", type=click.Path(path_type=Path), help="CSV of left,right image paths"
)
@click.option("--json", "as_json", is_flag=True)
@tracking_options
def predict(
    model_uri: str, images: tuple[Path, ...], pairs_csv: Path | None, as_json: bool
) -> None:
    """Print P(same object) for each image pair: LEFT RIGHT, or --pairs FILE.csv.

    Each pair is decided same or different at the threshold the model chose on its
    validation pairs (a model logged before models stored one: 0.5)."""
    from search.pairs_csv import PairList, read_pairs_csv
    from siamese.model import DEFAULT_THRESHOLD
    from siamese.scoring import decision_threshold, score, stack_pairs
    from tracking.models import checked_model_reference, load_scorer

    model_uri = checked_model_reference(model_uri)
    if pairs_csv is not None and images:
        raise click.UsageError("give two images LEFT RIGHT, or --pairs FILE.csv, not both")
    if pairs_csv is not None:
        listed = read_pairs_csv(pairs_csv)
    elif len(images) == 2:
        listed = PairList([(images[0], images[1])], None)
    else:
        raise click.UsageError("give two images LEFT RIGHT, or --pairs FILE.csv")
    images_in = stack_pairs(listed.pairs)  # unreadable images fail before any model is loaded
    if model_uri.startswith(("models:/", "runs:/")):
        scorer = _logged_scorer(current_env(), model_uri)
    else:
        scorer = load_scorer(model_uri)
    stored = decision_threshold(scorer)
    if stored is None:
        click.echo(
            f"note: {model_uri} stores no decision threshold (logged by an older version): "
            f"P(same) >= {DEFAULT_THRESHOLD} decides",
            err=True,
        )
    threshold = DEFAULT_THRESHOLD if stored is None else stored
    rows: list[dict[str, Any]] = [
        {
            "left": str(a),
            "right": str(b),
            "p_same": float(p),
            "decision": "same" if p >= threshold else "different",
        }
        for (a, b), p in zip(listed.pairs, score(scorer, images_in), strict=True)
    ]
    for row, truth in zip(rows, listed.same or [], strict=False):
        row["same"] = truth
    if as_json:
        print_json({"model": model_uri, "threshold": threshold, "pairs": rows})
        return
    _print_scores(rows, listed.same, f"at the threshold P(same) >= {threshold:.4f}")


def _logged_scorer(env: LabEnv, model_uri: str) -> nn.Module:
    """A logged or registered model: built from its run's checkpoint when that is shown to be
    the same model (tracking.checkpoint_scorer, seconds faster), else loaded by MLflow."""
    from tracking.models import load_logged_scorer
    from tracking.sqlite_reader import SqliteReader

    tracker = read_tracker(env)
    if isinstance(tracker, SqliteReader):
        from tracking.checkpoint_scorer import scorer_from_run_checkpoint

        scorer = scorer_from_run_checkpoint(tracker, model_uri)
        if scorer is not None:
            return scorer
        tracker = tracker.writer
    return load_logged_scorer(cast("MlflowTracker", tracker), model_uri)


def _print_scores(rows: list[dict[str, Any]], same: list[int] | None, at: str) -> None:
    for row in rows:
        truth = f"  same={row['same']}" if "same" in row else ""
        click.echo(
            f"{row['p_same']:.4f}  {row['decision']:<9}  {row['left']}  {row['right']}{truth}"
        )
    if same is not None and rows:
        right = sum(
            (row["decision"] == "same") == bool(t) for row, t in zip(rows, same, strict=True)
        )
        click.echo(f"{right} of {len(rows)} pairs right {at}")
    else:
        click.echo(f"decided {at}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@tracking_options
def ui(host: str, port: int) -> None:
    """Start the MLflow UI on the local store (Ctrl-C stops it)."""
    from tracking.ui import (
        check_can_listen,
        signal_server,
        start_server,
        stop_server,
        ui_command,
        ui_url,
        wait_until_serving,
    )

    check_can_listen(host, port)
    tracker = current_env().tracker()
    click.echo(f"starting the MLflow UI on the store {tracker.uri} ...", err=True)
    process = start_server(ui_command(tracker.target, host, port))
    # SIGTERM to us must stop the server too, or it keeps the port after we are gone; the
    # terminal's Ctrl-C reaches us alone (the server has its own process group).
    signal.signal(signal.SIGTERM, lambda *_: signal_server(process))
    try:
        if wait_until_serving(host, port, process):  # the URL works once it is printed
            click.echo(f"MLflow UI: {ui_url(host, port, tracker.experiment_id)}", err=True)
        process.wait()
    finally:  # Ctrl-C, SIGTERM, or a server that stopped: nothing of it may stay behind
        status = stop_server(process)
    raise SystemExit(status)
