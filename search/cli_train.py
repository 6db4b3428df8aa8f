"""`siamese-lab train`, `siamese-lab data check` and `siamese-lab data export`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from search.cli_common import (
    data_options,
    home_dir,
    home_option,
    print_json,
    tracking_options,
    train_options,
)
from siamese import (
    PRESETS,
    DataConfig,
    PairData,
    TrainConfig,
    diagnose,
    fit,
    prepare_data,
    render_text,
)
from siamese.config import with_overrides
from siamese.data.export import PAIRS_FILE, export_test_pairs
from siamese.train import Callback, EpochRecord, FitResult, History, load_checkpoint, resolve_device
from tracking import TrackingCallback, resolve_target, tracked_run

DATA_FIELDS = ("source", "task", "target", "train_pairs", "val_pairs", "inject_bug")


def build_config(preset: str | None, flags: dict[str, Any]) -> TrainConfig:
    """Defaults, then the preset, then every flag the user typed (flags win)."""
    data_flags = {k: flags.pop(k) for k in DATA_FIELDS}
    base = TrainConfig(**PRESETS[preset]) if preset else TrainConfig()
    seed = flags.get("seed")
    data = with_overrides(base.data, seed=seed, **data_flags)
    if data.task == "same-class" and data_flags["target"] is None:
        data = with_overrides(data, target=None)
    return with_overrides(base, data=data, **flags)


class EpochPrinter(Callback):
    """One table row per epoch as it finishes."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def on_fit_start(self, history: History) -> None:
        self.console.print(
            f"training on {history.device}: "
            + ", ".join(f"{k}={v}" for k, v in history.config.items() if k != "data")
        )
        for warning in history.data_warnings:
            self.console.print(f"[yellow]data warning:[/] {warning}")
        self.console.print(
            f"{'epoch':>5} {'train_loss':>10} {'val_loss':>9} {'val_acc':>7} {'val_auc':>7} "
            f"{'out_std':>8} {'upd_ratio':>9} {'pairs/s':>8}"
        )

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        self.console.print(
            f"{record.epoch:>5} {record.train_loss:>10.4f} {record.val_loss:>9.4f} {record.val_acc:>7.3f} "
            f"{record.val_auc:>7.3f} {record.output_std:>8.4f} {record.update_ratio:>9.2e} "
            f"{record.pairs_per_second:>8.0f}"
        )
        return None


def _resume_config(path: Path, epochs: int | None, device: str | None) -> TrainConfig:
    saved = TrainConfig.from_dict(load_checkpoint(path)["config"])
    return with_overrides(saved, epochs=epochs, device=device)


@click.command()
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="seed: the original failing network; fixed: sq head with dropout 0.3",
)
@train_options
@data_options
@click.option(
    "--resume",
    "resume",
    type=click.Path(path_type=Path),
    help="continue from a checkpoint (its config; --epochs/--device may change)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of tables")
@click.option("--no-track", is_flag=True, help="do not log the run to MLflow")
@tracking_options
@home_option
@click.pass_context
def train(
    ctx: click.Context,
    preset: str | None,
    resume: Path | None,
    as_json: bool,
    no_track: bool,
    tracking_uri: str | None,
    experiment: str,
    **flags: Any,
) -> None:
    """Train one model, diagnose it, and log it all to MLflow."""
    run_name = f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if resume is not None:
        config = _resume_config(resume, flags["epochs"], flags["device"])
        checkpoint_dir = resume.parent
    else:
        config = build_config(preset, flags)
        checkpoint_dir = home_dir(ctx) / "checkpoints" / run_name
    console = Console(stderr=as_json, quiet=as_json, soft_wrap=True)
    data = prepare_data(config.data)  # every pre-flight check, before any training
    device = str(resolve_device(config.device))
    job = TrainJob(config, data, checkpoint_dir, resume, [EpochPrinter(console)])
    if no_track:
        result, run = job.run(), None
    else:
        from tracking.mlflow_tracker import MlflowTracker  # here: importing MLflow takes a second

        tracker = MlflowTracker(resolve_target(home_dir(ctx), tracking_uri, experiment))
        with tracked_run(tracker, run_name, config, device) as run_id:
            callback = TrackingCallback(tracker, run_id)
            result = job.run(extra=[callback])
        run = RunLinks(run_id, callback.model_uri, tracker.run_url(run_id), home_dir(ctx))
    report(console, result, checkpoint_dir, run, as_json)


@dataclass
class TrainJob:
    config: TrainConfig
    data: PairData
    checkpoint_dir: Path
    resume: Path | None
    callbacks: list[Callback]

    def run(self, extra: Sequence[Callback] = ()) -> FitResult:
        return fit(
            self.config,
            self.data,
            callbacks=[*self.callbacks, *extra],
            checkpoint_dir=self.checkpoint_dir,
            resume_from=self.resume,
        )


@dataclass(frozen=True)
class RunLinks:
    run_id: str
    model_uri: str | None
    url: str | None
    home: Path


def report(
    console: Console, result: FitResult, checkpoint_dir: Path, run: RunLinks | None, as_json: bool
) -> None:
    verdict = diagnose(result.history)
    if as_json:
        print_json(
            {
                "config": result.history.config,
                "history": result.history.to_dict(),
                "diagnosis": verdict.to_dict(),
                "checkpoints": {
                    "best": _str(result.best_checkpoint),
                    "last": _str(result.last_checkpoint),
                },
                "run_id": run.run_id if run else None,
                "model_uri": run.model_uri if run else None,
            }
        )
        return
    best = result.history.best
    if best is not None:
        console.print(f"best val_auc {best.val_auc:.4f} at epoch {best.epoch}")
    console.print(f"checkpoints: {checkpoint_dir}")
    console.print(render_text(verdict), markup=False, highlight=False)
    if run is not None:
        console.print(
            f"MLflow run: {run.run_id}" + (f"  model: {run.model_uri}" if run.model_uri else "")
        )
        console.print(
            f"see it: {run.url}" if run.url else f"see it: siamese-lab ui --home {run.home}"
        )


def data_warnings(summary: dict[str, object]) -> list[str]:
    found = summary.get("warnings")
    return [str(w) for w in found] if isinstance(found, list) else []


def _str(path: Path | None) -> str | None:
    return str(path) if path else None


@click.group()
def data() -> None:
    """Inspect the data alone."""


@data.command("check")
@data_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def check(seed: int, as_json: bool, **flags: Any) -> None:
    """Run the pre-flight data checks without training (exit 2 on an error)."""
    config = with_overrides(DataConfig(), seed=seed, **flags)
    summary = prepare_data(config).summary()
    if as_json:
        print_json({"data": config.source, **summary})
        return
    click.echo(
        f"data {config.source}: {summary['classes']} classes; images {summary['images']}; "
        f"pairs {summary['pairs']}; positive fraction {summary['positive_fraction']:.2f}"
    )
    warnings = list(data_warnings(summary))
    for warning in warnings:
        click.echo(f"warning: {warning}")
    click.echo("ok: no errors" + (f", {len(warnings)} warning(s)" if warnings else ""))


@data.command("export")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="a new folder (it must not exist yet)",
)
@click.option(
    "--pairs", "count", type=click.IntRange(min=1), default=20, show_default=True,
    help="how many test pairs",
)  # fmt: skip
@data_options
@click.option(
    "--seed", type=int, default=0, show_default=True,
    help="the seed of the split: the one the model was trained with",
)  # fmt: skip
def export(out: Path, count: int, seed: int, **flags: Any) -> None:
    """Write held-out test pairs as PNG files plus pairs.csv, to try `predict` on."""
    if flags.get("inject_bug") not in (None, "none"):
        raise click.UsageError("--inject-bug: not for export; its pairs would show one image twice")
    config = with_overrides(DataConfig(), seed=seed, **flags)
    exported = export_test_pairs(prepare_data(config), out, count)
    different = exported.pairs - exported.same
    click.echo(
        f"wrote {exported.pairs} test pairs ({exported.same} same, {different} different) and "
        f"{exported.images} images to {out}; no run with --seed {seed} has trained on them"
    )
    click.echo(
        f"try: siamese-lab predict --model models:/siamese@champion --pairs {out / PAIRS_FILE}"
    )
