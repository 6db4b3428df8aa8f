"""`diagnose`, `promote`, `predict` and `ui`: the commands that read from MLflow."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from search.cli_common import home_dir, home_option, print_json, tracking_options
from siamese.diagnose import Diagnosis, render_text
from siamese.errors import SiameseInputError


def _tracker(ctx: click.Context, tracking_uri: str | None, experiment: str) -> Any:
    from tracking import resolve_target
    from tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(resolve_target(home_dir(ctx), tracking_uri, experiment))


@click.command("diagnose")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@tracking_options
@home_option
@click.pass_context
def diagnose_run(
    ctx: click.Context, run_id: str, as_json: bool, tracking_uri: str | None, experiment: str
) -> None:
    """Print a logged run's diagnosis with its evidence and fixes."""
    tracker = _tracker(ctx, tracking_uri, experiment)
    run = tracker.get_run(run_id)
    if "diagnosis.json" not in tracker.list_artifacts(run_id):
        raise SiameseInputError(
            f"run {run_id}: has no diagnosis.json (status {run.status}); it did not finish an epoch"
        )
    with tempfile.TemporaryDirectory() as tmp:
        raw = json.loads(tracker.download_artifact(run_id, "diagnosis.json", Path(tmp)).read_text())
    verdict = Diagnosis.from_dict(raw)
    if as_json:
        print_json({"run_id": run_id, "run_name": run.name, "status": run.status, "diagnosis": raw})
        return
    click.echo(f"run {run_id} ({run.name}, {run.status})")
    click.echo(render_text(verdict))


@click.command()
@click.option("--run", "run_id", help="the run whose model to register")
@click.option("--study", help="register the study's best converged trial instead")
@click.option("--storage", help="the study's storage (default: the home folder's)")
@click.option("--name", default="siamese", show_default=True, help="registered model name")
@click.option("--alias", default="champion", show_default=True)
@click.option(
    "--force", is_flag=True, help="move the alias even if the current holder scores higher"
)
@click.option("--json", "as_json", is_flag=True)
@tracking_options
@home_option
@click.pass_context
def promote(
    ctx: click.Context,
    run_id: str | None,
    name: str,
    alias: str,
    force: bool,
    as_json: bool,
    tracking_uri: str | None,
    experiment: str,
    study: str | None,
    storage: str | None,
) -> None:
    """Register a converged run's model and point an alias (default champion) at it."""
    from tracking.registry import promote as promote_run

    if run_id is None:
        if study is None:
            raise click.UsageError("give --run RUN_ID (or --study NAME)")
        run_id = _best_trial_run(ctx, study, storage)
    result = promote_run(_tracker(ctx, tracking_uri, experiment), run_id, name, alias, force)
    if as_json:
        print_json(result.__dict__)
    else:
        click.echo(result.message)
        if result.promoted:
            click.echo(
                f"use it: siamese-lab predict --model models:/{name}@{alias} LEFT.png RIGHT.png"
            )


def _best_trial_run(ctx: click.Context, study: str, storage: str | None) -> str:
    from search.cli_search import find_study
    from search.report import best_converged_trial

    best = best_converged_trial(find_study(ctx, study, storage))
    if best is None or "mlflow_run_id" not in best.user_attrs:
        raise SiameseInputError(f"--study {study}: no converged, tracked trial to promote")
    return str(best.user_attrs["mlflow_run_id"])


@dataclass(frozen=True)
class PairList:
    pairs: list[tuple[Path, Path]]
    same: list[int] | None  # the truth, when the CSV has a `same` column (`data export`'s)


def _read_pairs_csv(path: Path) -> PairList:
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    except OSError as exc:
        raise SiameseInputError(f"--pairs {path}: cannot read ({exc.strerror})") from exc
    header = rows[0] if rows and rows[0][:2] == ["left", "right"] else None
    if header is not None:
        rows = rows[1:]
    bad = next((i for i, row in enumerate(rows, 1) if len(row) < 2), None)
    if bad is not None:
        raise SiameseInputError(
            f"--pairs {path}: row {bad} has fewer than 2 columns; expected left,right"
        )
    base = path.parent
    pairs = [(base / row[0].strip(), base / row[1].strip()) for row in rows]
    has_truth = header is not None and header[2:3] == ["same"]
    return PairList(pairs, _truth_column(path, rows) if has_truth else None)


def _truth_column(path: Path, rows: list[list[str]]) -> list[int]:
    truth = [row[2].strip() if len(row) > 2 else "" for row in rows]
    bad = next((i for i, value in enumerate(truth, 1) if value not in ("0", "1")), None)
    if bad is not None:
        raise SiameseInputError(f"--pairs {path}: row {bad}: the same column must be 0 or 1")
    return [int(value) for value in truth]


def _print_scores(rows: list[dict[str, Any]], same: list[int] | None) -> None:
    for i, row in enumerate(rows):
        truth = f"  same={same[i]}" if same is not None else ""
        click.echo(f"{row['p_same']:.4f}  {row['left']}  {row['right']}{truth}")
    if same is not None and rows:
        right = sum((row["p_same"] >= 0.5) == bool(t) for row, t in zip(rows, same, strict=True))
        click.echo(f"{right} of {len(rows)} pairs right at P(same) >= 0.5")


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
@home_option
@click.pass_context
def predict(
    ctx: click.Context,
    model_uri: str,
    images: tuple[Path, ...],
    pairs_csv: Path | None,
    as_json: bool,
    tracking_uri: str | None,
    experiment: str,
) -> None:
    """Print P(same object) for each image pair: LEFT RIGHT, or --pairs FILE.csv."""
    from siamese.scoring import score, stack_pairs
    from tracking.models import load_scorer

    if pairs_csv is not None:
        listed = _read_pairs_csv(pairs_csv)
    elif len(images) == 2:
        listed = PairList([(images[0], images[1])], None)
    else:
        raise click.UsageError("give two images LEFT RIGHT, or --pairs FILE.csv")
    pairs = listed.pairs
    images_in = stack_pairs(pairs)  # unreadable images fail before any model is loaded
    if model_uri.startswith(("models:/", "runs:/")):
        with _tracker(ctx, tracking_uri, experiment).using_store():
            scorer = load_scorer(model_uri)
    else:
        scorer = load_scorer(model_uri)
    probs = score(scorer, images_in)
    rows: list[dict[str, Any]] = [
        {"left": str(a), "right": str(b), "p_same": float(p)}
        for (a, b), p in zip(pairs, probs, strict=True)
    ]
    if listed.same is not None:
        for row, truth in zip(rows, listed.same, strict=True):
            row["same"] = truth
    if as_json:
        print_json({"model": model_uri, "pairs": rows})
        return
    _print_scores(rows, listed.same)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@tracking_options
@home_option
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, tracking_uri: str | None, experiment: str) -> None:
    """Start the MLflow UI on the local store (Ctrl-C stops it)."""
    from tracking.ui import check_can_listen, ui_command, ui_url

    check_can_listen(host, port)
    tracker = _tracker(ctx, tracking_uri, experiment)
    click.echo(
        f"MLflow UI: {ui_url(host, port, tracker.experiment_id)}  (store: {tracker.uri})", err=True
    )
    process = subprocess.Popen(ui_command(tracker.target, host, port))
    # SIGTERM to us must stop the server too, or it keeps the port after we are gone.
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        raise SystemExit(process.wait())
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=10)
        raise
