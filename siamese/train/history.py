"""What a run records, epoch by epoch: the metrics users watch and the statistics the
diagnosis reads. Plain floats only, so it goes as-is into JSON, MLflow and checkpoints."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EpochRecord:
    epoch: int  # 1-based: epoch 1 is the first pass over the training pairs
    train_loss: float
    val_loss: float
    val_acc: float
    val_auc: float
    # Mean per-step gradient L2 norm of each layer (conv1..conv4, fc, head).
    grad_norm: dict[str, float]
    # Mean per-step ||delta w|| / ||w|| over all weights; ~1e-3 is healthy, <1e-5 is stalled.
    update_ratio: float
    # Share of the 100 embedding units that are zero for every validation image.
    dead_unit_fraction: float
    # relu2 head only: share of validation pairs whose "same" output is exactly 0.
    head_zero_fraction: float
    output_std: float  # std of P(same) across validation pairs; ~0 = one output for all
    output_mean: float
    seconds: float
    pairs_per_second: float

    def metrics(self) -> dict[str, float]:
        """Flat name -> value, the shape MLflow's log_metrics wants."""
        flat = {k: v for k, v in asdict(self).items() if k not in ("epoch", "grad_norm")}
        flat.update({f"grad_norm_{layer}": v for layer, v in self.grad_norm.items()})
        return flat

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EpochRecord:
        return cls(**raw)


@dataclass
class History:
    config: dict[str, Any]
    device: str = "cpu"
    records: list[EpochRecord] = field(default_factory=list)
    # completed | non_finite | interrupted | a callback's reason such as "pruned"
    stop_reason: str = "completed"
    identical_pair_fraction: float = 0.0
    initial_val_loss: float = math.nan
    initial_output_std: float = math.nan
    data_warnings: list[str] = field(default_factory=list)
    # A run stopped inside its first epoch: `siamese.early_stop.EarlyStop.to_dict()` (the
    # verdict, the step, the proof). None otherwise, and in older histories.
    early_stop: dict[str, Any] | None = None
    # How the training steps ran: "graph" (one CUDA graph per step), or "eager: <why>"
    # ("cpu", "capture failed: ..."). "" before the first epoch, and in older histories.
    step_path: str = ""
    # The steps' number format, `siamese.train.precision`: "bf16" (autocast) or "fp32".
    # "" before the first epoch, and in older histories.
    precision: str = ""

    @property
    def best(self) -> EpochRecord | None:
        finite = [r for r in self.records if math.isfinite(r.val_auc)]
        return max(finite, key=lambda r: r.val_auc) if finite else None

    @property
    def last(self) -> EpochRecord | None:
        return self.records[-1] if self.records else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> History:
        values = dict(raw)
        values["records"] = [EpochRecord.from_dict(r) for r in raw.get("records", [])]
        return cls(**values)


def strict_json(value: Any) -> Any:
    """NaN/Inf -> None, recursively: JSON written by siamese-lab is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value
