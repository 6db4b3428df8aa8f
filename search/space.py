"""The search space, and the one pure function from an Optuna trial to a TrainConfig.

Defaults cover the original failure on purpose (lr down to 1e-6, the relu2 head), so a
search on them maps where training breaks, not only where it works. A TOML file narrows,
widens or fixes any parameter; a value fixed on the command line wins over both.

    [lr]                 # a float range (log = true for log-uniform)
    low = 1e-4
    high = 1e-2
    [optimizer]          # a choice
    choices = ["adam", "sgd"]
    [head]               # a fixed value
    value = "sq"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from search.defaults import SPACE_PARAMS
from siamese.config import HEADS, OPTIMIZERS, TrainConfig
from siamese.errors import ConfigError

# Optimizers whose update uses `momentum`; for the others it is not suggested at all.
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class SearchSpace:
    lr: FloatRange = FloatRange(1e-6, 1e-1, log=True)
    optimizer: tuple[str, ...] = OPTIMIZERS
    momentum: FloatRange = FloatRange(0.0, 0.99)
    head: tuple[str, ...] = HEADS
    dropout: FloatRange = FloatRange(0.0, 0.5)
    fixed: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, str]:
        """One line per parameter, for MLflow params and the report."""
        out: dict[str, str] = {}
        for name in SPACE_PARAMS:
            if name in self.fixed:
                out[name] = f"fixed {self.fixed[name]}"
                continue
            spec = getattr(self, name)
            out[name] = (
                f"{'log-uniform' if spec.log else 'uniform'} [{spec.low:g}, {spec.high:g}]"
                if isinstance(spec, FloatRange)
                else f"one of {list(spec)}"
            )
        return out


def contains_original(space: SearchSpace, original: dict[str, Any]) -> bool:
    """Whether the space can propose exactly these values (and fixes nothing)."""
    return (
        not space.fixed
        and space.lr.low <= original["lr"] <= space.lr.high
        and original["optimizer"] in space.optimizer
        and original["head"] in space.head
        and space.momentum.low <= original["momentum"] <= space.momentum.high
        and space.dropout.low <= original["dropout"] <= space.dropout.high
    )


def suggest_config(
    trial: optuna.trial.BaseTrial, base: TrainConfig, space: SearchSpace
) -> TrainConfig:
    """Pure: the same trial answers give the same config. Fixed values are not suggested."""

    def floating(name: str) -> float:
        if name in space.fixed:
            return float(space.fixed[name])
        spec: FloatRange = getattr(space, name)
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log)

    def choice(name: str) -> str:
        if name in space.fixed:
            return str(space.fixed[name])
        return str(trial.suggest_categorical(name, list(getattr(space, name))))

    optimizer = choice("optimizer")
    momentum = floating("momentum") if optimizer in MOMENTUM_OPTIMIZERS else 0.0
    return replace(
        base,
        lr=floating("lr"),
        optimizer=optimizer,
        momentum=momentum,
        head=choice("head"),
        dropout=floating("dropout"),
    )


def _float_range(path: Path, name: str, table: dict[str, Any], default: FloatRange) -> FloatRange:
    low, high = table.get("low", default.low), table.get("high", default.high)
    log = bool(table.get("log", default.log))
    if not all(_is_number(v) for v in (low, high)) or not low < high or (log and low <= 0):
        raise ConfigError(
            f"--space {path}: [{name}] expected numbers low < high (and low > 0 with log), got {table}"
        )
    for key, value in (("low", low), ("high", high)):  # a trial may draw either end
        endpoint: dict[str, Any] = {name: float(value)}
        try:
            replace(TrainConfig(), **endpoint)
        except ConfigError as exc:
            raise ConfigError(f"--space {path}: [{name}] {key} = {value}: {exc}") from exc
    return FloatRange(float(low), float(high), log)


def _choices(
    path: Path, name: str, table: dict[str, Any], allowed: tuple[str, ...]
) -> tuple[str, ...]:
    chosen = table.get("choices", list(allowed))
    bad = [c for c in chosen if c not in allowed]
    if not chosen or bad:
        raise ConfigError(
            f"--space {path}: [{name}] choices {bad or chosen} not allowed; expected some of {list(allowed)}"
        )
    return tuple(chosen)


FLOAT_KEYS = {"low", "high", "log", "value"}
CHOICE_KEYS = {"choices", "value"}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)  # TOML true is no lr


def _check_table(path: Path, name: str, table: object) -> None:
    """A typo ([lr] lo = ...) must not silently leave the default range in place."""
    allowed = CHOICE_KEYS if name in ("optimizer", "head") else FLOAT_KEYS
    if not isinstance(table, dict):
        raise ConfigError(
            f"--space {path}: {name} = {table!r}: expected a table [{name}] with {sorted(allowed)}"
        )
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(
            f"--space {path}: [{name}] unknown key(s) {sorted(unknown)}; expected {sorted(allowed)}"
        )
    ranged = sorted(set(table) - {"value"})
    if "value" in table and ranged:
        raise ConfigError(
            f"--space {path}: [{name}] value fixes it, so {', '.join(ranged)} would be ignored; "
            "give value alone, or a range without value"
        )
    value = table.get("value")
    if allowed is FLOAT_KEYS and value is not None and not _is_number(value):
        raise ConfigError(f"--space {path}: [{name}] value = {value!r}: expected a number")
    if "log" in table and not isinstance(table["log"], bool):
        raise ConfigError(
            f"--space {path}: [{name}] log = {table['log']!r}: expected true or false"
        )
    if "choices" in table and not isinstance(table["choices"], list):
        raise ConfigError(
            f"--space {path}: [{name}] choices = {table['choices']!r}: expected a list of names"
        )


def load_space(path: Path | None, fixed_on_command_line: dict[str, Any]) -> SearchSpace:
    """The default space, changed by a TOML file, then by values fixed on the command line.
    Each value a trial could take is checked as the config checks it, before the study
    exists: a study stores its space, so a bad one would fail every trial for good."""
    replace(TrainConfig(), **fixed_on_command_line)  # `--lr nan`: the flag, named
    default = SearchSpace()
    if path is None:
        return replace(default, fixed=dict(fixed_on_command_line))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"--space {path}: not a UTF-8 text file (byte {exc.start}); expected a TOML file"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"--space {path}: cannot read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--space {path}: not valid TOML ({exc})") from exc
    unknown = set(raw) - set(SPACE_PARAMS)
    if unknown:
        raise ConfigError(
            f"--space {path}: unknown parameter(s) {sorted(unknown)}; expected lr, optimizer, momentum, head, dropout"
        )
    for name, table in raw.items():
        _check_table(path, name, table)
    fixed = {name: table["value"] for name, table in raw.items() if "value" in table}
    try:  # the config's own checks (head names, lr > 0, dropout range) before any trial runs
        replace(TrainConfig(), **fixed)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"--space {path}: {exc}") from exc
    return SearchSpace(
        lr=_float_range(path, "lr", raw.get("lr", {}), default.lr),
        optimizer=_choices(path, "optimizer", raw.get("optimizer", {}), OPTIMIZERS),
        momentum=_float_range(path, "momentum", raw.get("momentum", {}), default.momentum),
        head=_choices(path, "head", raw.get("head", {}), HEADS),
        dropout=_float_range(path, "dropout", raw.get("dropout", {}), default.dropout),
        fixed={**fixed, **fixed_on_command_line},
    )


def base_and_space(
    flags: dict[str, Any], space_file: Path | None
) -> tuple[TrainConfig, SearchSpace]:
    """A search's base config (SEARCH_BASE, then the flags) and its space. A space
    parameter given as a flag (`--head sq`) is fixed: it wins over the space file."""
    from search.defaults import SEARCH_BASE
    from siamese.config import build_config

    fixed = {k: flags[k] for k in SPACE_PARAMS if flags.get(k) is not None}
    others = {k: v for k, v in flags.items() if k not in SPACE_PARAMS}
    return build_config(None, others, SEARCH_BASE), load_space(space_file, fixed)
