"""`siamese-lab train`: one run, a table row per epoch, the diagnosis, the MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from search.cli.common import (
    current_env,
    data_options,
    print_json,
    refuse_targets_untracked,
    tracking_options,
    train_options,
    typed_flags,
)
from siamese.config import PRESETS, DataConfig, TrainConfig, build_config

if TYPE_CHECKING:
    from search.training import TrainOutcome


@click.command()
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="seed: the original failing network; fixed: sq head with dropout 0.3",
)
@train_options(TrainConfig())
@data_options(DataConfig())
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="continue from a checkpoint (its config; --epochs/--device/--precision may change)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of tables")
@click.option("--no-track", is_flag=True, help="do not log the run to MLflow")
@tracking_options
def train(
    preset: str | None, resume: Path | None, as_json: bool, no_track: bool, **flags: Any
) -> None:
    """Train one model, diagnose it, and log it all to MLflow."""
    from search.printing import EpochPrinter
    from search.training import (
        TrainRequest,
        check_device,
        kept_in_home,
        new_run_name,
        resume_request,
        run_training,
    )

    refuse_targets_untracked(no_track)
    env = current_env()
    if resume is not None:
        changeable = ("epochs", "device", "precision")
        given = {"preset": preset, **flags}
        typed = {k: v for k, v in given.items() if v is not None and k not in changeable}
        request = resume_request(
            resume, flags["epochs"], flags["device"], typed, flags["precision"], typed_flags()
        )
        request = kept_in_home(request, env.checkpoint_dir())
    else:
        name = new_run_name()
        config = build_config(preset, flags)
        check_device("--device", config.device)
        request = TrainRequest(config, env.checkpoint_dir(name), None, name)
    env.ensure_home()  # once the flags are checked: bad input now, not after the first epoch
    console = Console(stderr=as_json, quiet=as_json, soft_wrap=True)
    make_tracker = (lambda: None) if no_track else env.tracker
    try:
        outcome = run_training(request, make_tracker, [EpochPrinter(console)])
    except KeyboardInterrupt:
        _print_resume_hint(request.checkpoint_dir, request.resume, env.home)
        raise click.Abort() from None  # the group says "interrupted" (exit 130)
    if as_json:
        print_json(_as_dict(outcome))
        return
    _print_outcome(console, outcome, env.home)


def _print_resume_hint(folder: Path, resumed: Path | None, home: Path) -> None:
    """Where a Ctrl-C left the run, and the command that continues it (the group then
    prints "interrupted"): its last.pt, or the file it was resumed from when it was stopped
    before it wrote one (a resume into a new folder)."""
    last = folder / "last.pt"
    start = last if last.is_file() else resumed
    if start is not None and start.is_file():
        click.echo(f"continue it: siamese-lab --home {home} train --resume {start}", err=True)


def _as_dict(outcome: TrainOutcome) -> dict[str, Any]:
    result = outcome.result
    checkpoints = {"best": result.best_checkpoint, "last": result.last_checkpoint}
    return {
        "config": result.history.config,
        "history": result.history.to_dict(),
        "diagnosis": outcome.diagnosis.to_dict(),
        "checkpoints": {k: str(v) if v else None for k, v in checkpoints.items()},
        "run_id": outcome.run_id,
        "model_uri": outcome.model_uri,
    }


def _print_outcome(console: Console, outcome: TrainOutcome, home: Path) -> None:
    from siamese.diagnosis import render_text

    best = outcome.result.history.best
    if best is not None:
        console.print(f"best val_auc {best.val_auc:.4f} at epoch {best.epoch}")
    kept = outcome.result.best_checkpoint or outcome.result.last_checkpoint
    if kept is not None:
        console.print(f"checkpoints: {outcome.checkpoint_dir}")
    else:  # checkpoints never hold diverged weights: no epoch ended with a finite loss
        console.print("checkpoints: none (no epoch ended with a finite loss)")
    console.print(render_text(outcome.diagnosis), markup=False, highlight=False)
    if outcome.run_id is None:
        return
    model = f"  model: {outcome.model_uri}" if outcome.model_uri else ""
    console.print(f"MLflow run: {outcome.run_id}{model}")
    console.print(f"see it: {outcome.run_url or f'siamese-lab ui --home {home}'}")
