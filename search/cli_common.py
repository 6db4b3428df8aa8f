"""Pieces every command shares: the home folder, the data, train and tracking flags, JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from siamese.config import HEADS, INJECTED_BUGS, OPTIMIZERS, TASKS
from siamese.train.history import strict_json

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_HOME = Path.home() / ".siamese-lab"


def home_dir(ctx: click.Context) -> Path:
    """The one folder holding the embedded stores; created on first use.
    `--home` after the command wins over `--home` before it, then SIAMESE_LAB_HOME."""
    root = ctx.find_root()
    chosen = ctx.meta.get("home") or root.params.get("home") or os.environ.get("SIAMESE_LAB_HOME")
    home = Path(chosen or DEFAULT_HOME)
    home.mkdir(parents=True, exist_ok=True)
    return home


def _remember_home(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.meta["home"] = value


home_option = click.option(
    "--home",
    type=click.Path(path_type=Path),
    expose_value=False,
    callback=_remember_home,
    help="folder of the embedded stores and checkpoints (default ~/.siamese-lab)",
)


def tracking_options(func: F) -> F:
    options = [
        click.option(
            "--tracking-uri",
            envvar="MLFLOW_TRACKING_URI",
            help="an MLflow server or store (default: SQLite in the home folder)",
        ),
        click.option(
            "--experiment", default="siamese-lab", show_default=True, help="MLflow experiment"
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def data_options(func: F) -> F:
    """--data/--task/--target/--train-pairs/--val-pairs/--inject-bug, all defaulting to None
    so that presets and checkpoints are only overridden by what the user typed."""
    options = [
        click.option("--data", "source", help="digits (default), shapes, folder:PATH or npz:PATH"),
        click.option(
            "--task", type=click.Choice(TASKS), help="same-class (default) or one-vs-rest"
        ),
        click.option("--target", help="the class C for --task one-vs-rest"),
        click.option("--train-pairs", type=int, help="training pairs (default 2048)"),
        click.option("--val-pairs", type=int, help="validation (and test) pairs (default 512)"),
        click.option(
            "--inject-bug",
            type=click.Choice(INJECTED_BUGS),
            help="reproduce the original data bug: same-image feeds one image to both towers",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def train_options(func: F) -> F:
    """A flag for every TrainConfig field."""
    options = [
        click.option("--head", type=click.Choice(HEADS), help="output head (default sq)"),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="default adam"),
        click.option("--lr", type=float, help="learning rate (default 1e-3)"),
        click.option("--momentum", type=float, help="for sgd and rmsprop (default 0.9)"),
        click.option("--weight-decay", type=float, help="default 0"),
        click.option("--batch-size", type=int, help="default 32"),
        click.option("--epochs", type=int, help="default 5"),
        click.option("--dropout", type=float, help="after the tower's linear layer (default 0)"),
        click.option("--margin", type=float, help="contrastive head margin (default 1.0)"),
        click.option("--seed", type=int, help="data split, pair order and init (default 0)"),
        click.option("--device", help="auto (default), cpu, cuda or cuda:N"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def print_json(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(strict_json(obj), indent=2, allow_nan=False))
