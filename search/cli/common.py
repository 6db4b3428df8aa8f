"""What the commands share: the environment object, the data/train/tracking flags (their
help shows the defaults of the command they are on), JSON output, the bad-input error."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from search.env import LabEnv
from siamese.config import (
    HEADS,
    INJECTED_BUGS,
    OPTIMIZERS,
    PRECISIONS,
    TASKS,
    DataConfig,
    TrainConfig,
)
from siamese.errors import ConfigError, SiameseInputError
from siamese.names import check_name

if TYPE_CHECKING:
    from tracking.base import Tracker

F = TypeVar("F", bound=Callable[..., Any])
OVERRIDES = "siamese_lab.env_overrides"


class BadInput(click.ClickException):
    """Bad usage or bad input: one line on stderr, exit 2 (DESIGN's exit codes)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def checked_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option callback: a study, experiment or model name must be safe as a folder name,
    checked while the command line is parsed, before anything is created."""
    if value is not None:
        check_name(_flag(param), value)
    return value


# MLflow's rule for a registered model's alias: letters, digits, _ and -, at most 255; and
# neither "latest" nor vN, which name versions. Checked before a version is registered for it.
_ALIAS = re.compile(r"[\w-]{1,255}")
_RESERVED_ALIAS = re.compile(r"latest|v\d+", re.IGNORECASE)


def checked_alias(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An option callback for --alias (see _ALIAS)."""
    if not _ALIAS.fullmatch(value) or _RESERVED_ALIAS.fullmatch(value):
        raise ConfigError(
            f"{_flag(param)} {value[:60]!r}: expected letters, digits, _ and - (at most 255), "
            "not latest or vN (MLflow's names for versions)"
        )
    return value


def _flag(param: click.Parameter) -> str:
    return max(param.opts, key=len) if param.opts else str(param.name)


def typed_flags() -> dict[str, str]:
    """The current command's parameter names -> their flags as typed (--train-pairs)."""
    return {p.name: _flag(p) for p in click.get_current_context().command.params if p.name}


def home_path(typed: str) -> Path:
    """--home as typed: an empty one would be the current folder, which nobody means."""
    if not typed.strip():
        raise BadInput("--home '': expected a folder (made if missing), not an empty path")
    return Path(typed)


def _remember(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            if field == "experiment":
                check_name(_flag(param), value)
            if field == "home":
                value = home_path(value)
            ctx.meta.setdefault(OVERRIDES, {})[field] = value

    return callback


def _env_option(flag: str, field: str, help_text: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(
        flag, expose_value=False, callback=_remember(field), help=help_text, **kwargs
    )


home_option = _env_option(
    "--home",
    "home",
    "folder of the embedded stores and checkpoints (default ~/.siamese-lab)",
    type=click.Path(),  # text, so that an empty one is seen (a Path would be ".")
)
tracking_uri_option = _env_option(
    "--tracking-uri",
    "tracking_uri",
    "an MLflow server or store (default: MLFLOW_TRACKING_URI, else SQLite in the home folder)",
)
experiment_option = _env_option(
    "--experiment", "experiment", "MLflow experiment (default siamese-lab)"
)


def tracking_options(func: F) -> F:
    return home_option(tracking_uri_option(experiment_option(func)))


def refuse_targets_untracked(no_track: bool) -> None:
    """`train --no-track` logs nothing and records nothing: a --tracking-uri or --experiment
    typed with it says where to log, and one of the two is a mistake (it was ignored). A
    search records both on its study, where a later resume that tracks finds them."""
    if not no_track:
        return
    typed = click.get_current_context().meta.get(OVERRIDES, {})
    for field, flag in (("tracking_uri", "--tracking-uri"), ("experiment", "--experiment")):
        if field in typed:
            raise BadInput(
                f"{flag} {str(typed[field])[:200]}: given with --no-track, which logs "
                "nothing; expected one or the other"
            )


def current_env() -> LabEnv:
    """The group's environment, with what this command's own flags changed."""
    ctx = click.get_current_context()
    env = ctx.find_object(LabEnv)
    if env is None:  # a command invoked on its own (tests), without the group
        import os

        env = LabEnv.from_environ(os.environ)
    return env.with_overrides(**ctx.meta.get(OVERRIDES, {}))


def read_tracker(env: LabEnv, recorded_uri: str | None = None) -> Tracker:
    """For a command that reads runs: the home's SQLite store read directly, without
    importing MLflow (tracking.sqlite_reader: ~2 s less), where it can be; else, and for
    whatever it writes, MLflow's tracker, as `env.tracker(recorded_uri)` makes it."""
    from tracking.fresh_store import sqlite_path
    from tracking.sqlite_reader import open_reader

    env.check_home()
    target = env.tracking_target(recorded_uri)
    store = sqlite_path(target.uri)
    if store is not None and not store.is_file():  # a mistyped --home: find, never make
        raise SiameseInputError(
            f"{target.uri}: no MLflow store there (nothing was tracked in {store.parent} yet); "
            "check --home, SIAMESE_LAB_HOME or --tracking-uri"
        )
    if "mlflow" in sys.modules:
        # A process that already imported MLflow (a test, a library user that tracked runs)
        # saves nothing here, and its trackers may still have writes queued that a direct
        # read would run ahead of: MLflow reads, as before.
        return env.tracker(recorded_uri)
    reader = open_reader(target, lambda: env.tracker(recorded_uri))
    return env.tracker(recorded_uri) if reader is None else reader


def _default(config: object, name: str) -> str:
    return f"default {getattr(config, name)}"


def data_options(defaults: DataConfig) -> Callable[[F], F]:
    """--data/--task/--target/--train-pairs/--val-pairs/--inject-bug, all None unless typed,
    so that presets and checkpoints are overridden only by what the user typed."""

    def decorate(func: F) -> F:
        options = [
            click.option(
                "--data",
                "source",
                help=f"digits, shapes, folder:PATH or npz:PATH ({_default(defaults, 'source')})",
            ),
            click.option("--task", type=click.Choice(TASKS), help=_default(defaults, "task")),
            click.option("--target", help="the class C for --task one-vs-rest"),
            click.option("--train-pairs", type=int, help=_default(defaults, "train_pairs")),
            click.option(
                "--val-pairs",
                type=int,
                help=f"validation (and test) pairs ({_default(defaults, 'val_pairs')})",
            ),
            click.option(
                "--inject-bug",
                type=click.Choice(INJECTED_BUGS),
                help="reproduce the original data bug: same-image feeds one image to both towers",
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


TRAIN_HELP = {
    "head": "output head",
    "momentum": "for sgd and rmsprop",
    "dropout": "after the tower's linear layer",
    "margin": "contrastive head margin",
    "seed": "data split, pair order and init",
    "device": "auto, cpu, cuda or cuda:N",
    "early_stop": "stop in epoch 1 when the statistics prove a failure",
    "precision": "auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
}
TRAIN_TYPES: dict[str, Any] = {
    "head": click.Choice(HEADS),
    "optimizer": click.Choice(OPTIMIZERS),
    "precision": click.Choice(PRECISIONS),
}


def train_options(defaults: TrainConfig, searched: tuple[str, ...] = ()) -> Callable[[F], F]:
    """A flag for every TrainConfig field, its help showing this command's default; on a
    search, a `searched` parameter given as a flag is fixed instead."""

    def decorate(func: F) -> F:
        for field in reversed([f for f in fields(TrainConfig) if f.name != "data"]):
            kind = TRAIN_TYPES.get(field.name, type(getattr(defaults, field.name)))
            default = (
                "fixes it (default: searched)"
                if field.name in searched
                else _default(defaults, field.name)
            )
            text = ", ".join(filter(None, [TRAIN_HELP.get(field.name), default]))
            flag = "--" + field.name.replace("_", "-")
            if kind is bool:  # --early-stop/--no-early-stop, None when neither is typed
                flag = f"{flag}/--no-{flag[2:]}"
                func = click.option(flag, field.name, default=None, help=text)(func)
                continue
            func = click.option(flag, field.name, type=kind, help=text)(func)
        return func

    return decorate


def print_json(obj: dict[str, Any]) -> None:
    from siamese.train.history import strict_json

    click.echo(json.dumps(strict_json(obj), indent=2, allow_nan=False))
