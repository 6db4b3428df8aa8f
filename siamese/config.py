"""Frozen, typed run configuration.

`asdict()` of a `TrainConfig` is what goes into MLflow params and into every checkpoint, so
every field is a plain str/int/float/None and every invalid value fails here, loudly, with what
was expected.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

from siamese.errors import ConfigError

HEADS = ("relu2", "abs", "sq", "contrastive")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
TASKS = ("same-class", "one-vs-rest")
INJECTED_BUGS = ("none", "same-image")
# auto: bf16 autocast where the chip computes bf16 natively, else float32 (siamese.train.precision)
PRECISIONS = ("auto", "fp32", "bf16")
IMAGE_HEIGHT, IMAGE_WIDTH = 40, 50

_DEVICE_PATTERN = re.compile(r"(auto|cpu|cuda(:[0-9]+)?)")


def is_device_spec(spec: str) -> bool:
    """auto, cpu, cuda or cuda:N (whether this machine has it is `resolve_device`'s call)."""
    return bool(_DEVICE_PATTERN.fullmatch(spec))


# What every random number generator the seed reaches accepts (NumPy's and Optuna's samplers
# take 32 bits).
MAX_SEED = 2**32 - 1


def _check_seed(seed: int) -> None:
    _expect(0 <= seed <= MAX_SEED, "--seed", f"an integer in [0, {MAX_SEED}]", seed)


def _expect(ok: bool, name: str, expected: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, got {got!r}")


# Pairs drawn per split at most: their indices alone take 24 bytes each (240 MB here), and
# 10 million pairs an epoch is hours on a CPU. A typo of a few more digits was a MemoryError.
MAX_PAIRS = 10_000_000


@dataclass(frozen=True)
class DataConfig:
    """Which images, which pairs. `source` is digits, shapes, folder:PATH or npz:PATH."""

    source: str = "digits"
    task: str = "same-class"
    target: str | None = None
    train_pairs: int = 2048
    val_pairs: int = 512
    seed: int = 0
    # Reproduces the original partitioning bug on purpose: every pair shows one image twice.
    inject_bug: str = "none"

    def __post_init__(self) -> None:
        kind, _, path = self.source.partition(":")
        _expect(
            self.source in ("digits", "shapes")
            or (kind in ("folder", "npz") and path.strip() != ""),  # "folder:" is no folder
            "--data",
            "digits, shapes, folder:PATH or npz:PATH",
            self.source,
        )
        _expect(self.task in TASKS, "--task", " or ".join(TASKS), self.task)
        pairs = f"an integer in [2, {MAX_PAIRS}]"
        _expect(2 <= self.train_pairs <= MAX_PAIRS, "--train-pairs", pairs, self.train_pairs)
        _expect(2 <= self.val_pairs <= MAX_PAIRS, "--val-pairs", pairs, self.val_pairs)
        _check_seed(self.seed)
        _expect(
            self.inject_bug in INJECTED_BUGS,
            "--inject-bug",
            "/".join(INJECTED_BUGS),
            self.inject_bug,
        )
        if self.task == "one-vs-rest" and self.target is None:
            raise ConfigError(
                "--target: required with --task one-vs-rest (the class to tell apart)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result (plus where it runs)."""

    head: str = "sq"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 5
    dropout: float = 0.0
    margin: float = 1.0
    seed: int = 0
    # Stop inside epoch 1 when the statistics prove a failure (`siamese.early_stop`): on in a
    # search, off in `train`, which shows a failing run to its end.
    early_stop: bool = False
    device: str = "auto"
    precision: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        _expect(self.head in HEADS, "--head", "/".join(HEADS), self.head)
        _expect(self.optimizer in OPTIMIZERS, "--optimizer", "/".join(OPTIMIZERS), self.optimizer)
        _expect(self.lr > 0 and self.lr < float("inf"), "--lr", "a positive finite number", self.lr)
        _expect(0.0 <= self.momentum < 1.0, "--momentum", "a number in [0, 1)", self.momentum)
        _expect(
            0.0 <= self.weight_decay < math.inf,
            "--weight-decay",
            "a finite number >= 0",
            self.weight_decay,
        )
        _expect(self.batch_size >= 2, "--batch-size", "an integer >= 2", self.batch_size)
        _expect(self.epochs >= 1, "--epochs", "an integer >= 1", self.epochs)
        _expect(0.0 <= self.dropout < 1.0, "--dropout", "a number in [0, 1)", self.dropout)
        _expect(0.0 < self.margin < math.inf, "--margin", "a positive finite number", self.margin)
        _check_seed(self.seed)
        _expect(isinstance(self.early_stop, bool), "--early-stop", "true or false", self.early_stop)
        _expect(
            is_device_spec(self.device),
            "--device",
            "auto, cpu, cuda or cuda:N",
            self.device,
        )
        _expect(self.precision in PRECISIONS, "--precision", "/".join(PRECISIONS), self.precision)
        _expect(
            self.data.train_pairs >= self.batch_size,
            "--train-pairs",
            f"at least --batch-size ({self.batch_size})",
            self.data.train_pairs,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """One level of keys (data fields prefixed `data.`), the shape MLflow params want."""
        out = {k: v for k, v in asdict(self).items() if k != "data"}
        out.update({f"data.{k}": v for k, v in asdict(self.data).items()})
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        _expect(not unknown, "config", f"only the fields {sorted(known)}", sorted(unknown))
        data = DataConfig(**raw.get("data", {}))
        return cls(**{**{k: v for k, v in raw.items() if k != "data"}, "data": data})


# The configuration of the network that printed 0.503 for every pair (see DESIGN.md).
SEED_PRESET: dict[str, Any] = {
    "head": "relu2",
    "optimizer": "sgd",
    "lr": 1e-6,
    "momentum": 0.9,
    "batch_size": 32,
    "dropout": 0.0,
}
# The fix proposed for it: one logit on squared differences, with dropout.
FIXED_PRESET: dict[str, Any] = {"head": "sq", "dropout": 0.3}
PRESETS = {"seed": SEED_PRESET, "fixed": FIXED_PRESET}


ConfigT = TypeVar("ConfigT", TrainConfig, DataConfig)


def with_overrides(base: ConfigT, **overrides: Any) -> ConfigT:
    """`base` with the given non-None fields replaced (CLI flags left unset stay None)."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


DATA_FIELDS = tuple(f.name for f in fields(DataConfig) if f.name != "seed")


def build_config(
    preset: str | None, values: dict[str, Any], defaults: TrainConfig | None = None
) -> TrainConfig:
    """`defaults`, then the preset, then every value that is not None (the flags a user
    typed; data fields by their DataConfig names). The seed seeds the data split too."""
    values = dict(values)
    data_values = {k: values.pop(k) for k in DATA_FIELDS if k in values}
    base = defaults or TrainConfig()
    if preset:
        base = replace(base, **PRESETS[preset])
    data = build_data_config(data_values, values.get("seed"), base.data)
    return with_overrides(base, data=data, **values)


def build_data_config(
    values: dict[str, Any], seed: int | None, defaults: DataConfig | None = None
) -> DataConfig:
    """`defaults` with every data value that is not None (the data flags a user typed)."""
    data = with_overrides(defaults or DataConfig(), seed=seed, **values)
    # Typed without --task one-vs-rest it would be ignored (configs saved that way still load).
    typed_target = values.get("target")
    _expect(
        typed_target is None or data.task == "one-vs-rest",
        "--target",
        "nothing without --task one-vs-rest",
        typed_target,
    )
    if data.task == "same-class" and typed_target is None:
        data = replace(data, target=None)  # a target only means something for one-vs-rest
    return data
