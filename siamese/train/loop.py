"""`fit`: the training loop, in named steps, with callbacks for everything outside the core."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from siamese.config import TrainConfig
from siamese.data import PairData, prepare_data
from siamese.errors import ConfigError
from siamese.model import SiameseNet
from siamese.train import gpu
from siamese.train.callbacks import Callback
from siamese.train.checkpoint import load_for_resume, load_weights
from siamese.train.checks import EARLY_STOP_REASON, EpochChecks, epoch_record
from siamese.train.device_data import DeviceData
from siamese.train.evaluate import INITIAL_TOWER, EvalResult, evaluate
from siamese.train.history import EpochRecord, History
from siamese.train.initial import seeded_model
from siamese.train.keeper import CheckpointKeeper
from siamese.train.step import StepRunner, load_optimizer_state, make_optimizer, uses_graph

# Config fields a resumed run may change: they decide how long, where and in which number
# format, not what is learned.
RESUMABLE_CHANGES = ("epochs", "device", "precision", "early_stop")
INITIAL_EVAL_PAIRS = 256
_log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: History
    model: SiameseNet
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    # The checkpoint the run resumed from: best.pt when the one asked for was corrupt.
    resumed_from: Path | None = None


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available here; expected auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    return device


def epoch_order(config: TrainConfig, epoch: int, n_pairs: int) -> Tensor:
    """The pair order of one epoch, from (seed, epoch) alone: resuming replays it exactly."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return torch.randperm(n_pairs, generator=generator)


def _check_resumable(config: TrainConfig, saved: dict[str, Any], path: Path) -> None:
    current = config.to_dict()
    changed = sorted(
        k for k in current if k not in RESUMABLE_CHANGES and current[k] != saved.get(k)
    )
    if changed:
        raise ConfigError(
            f"--resume {path}: config differs from the checkpoint's in {changed}; "
            f"only {list(RESUMABLE_CHANGES)} may change"
        )


class _Run:
    """The state of one fit call; methods are the loop's named steps."""

    def __init__(
        self,
        config: TrainConfig,
        data: PairData | None,
        callbacks: Sequence[Callback],
        checkpoint_dir: Path | None,
        lean_checkpoints: bool = False,
        checkpoint_every_s: float = 0.0,
    ) -> None:
        data = data if data is not None else prepare_data(config.data)
        self.config, self.data, self.callbacks = config, data, callbacks
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)  # CUDA's generators too: dropout on a GPU
        self.model = seeded_model(config)
        self.model.set_normalization(*data.train.pixel_stats)
        self.model.to(self.device).train()
        params = list(self.model.parameters())
        self.optimizer = make_optimizer(config, params, capturable=uses_graph(self.device))
        self.train = DeviceData.put(data.train, data.train_pairs, self.device)
        self.val = DeviceData.put(data.val, data.val_pairs, self.device)
        self.runner = StepRunner(self.model, self.optimizer, self.train, config)
        self.history = History(
            config.to_dict(),
            device=str(self.device),
            identical_pair_fraction=data.identical_train_pair_fraction,
            data_warnings=list(data.warnings),
        )
        self.checks = EpochChecks(config, self.history, self.model, self.runner, self.val)
        self.start_epoch = 1
        self.checkpoints = CheckpointKeeper(
            checkpoint_dir, self._notify_checkpoint, lean_checkpoints, checkpoint_every_s
        )
        self.resumed_from: Path | None = None

    def resume(self, asked: Path) -> None:
        point = load_for_resume(asked, map_location=self.device)
        path, payload = point.path, point.payload
        self.resumed_from = path
        _check_resumable(self.config, payload["config"], path)
        load_weights(self.model, payload["model"], path)
        # This device's capturable/fused/foreach, not the saving device's.
        load_optimizer_state(self.optimizer, payload["optimizer"])
        torch.set_rng_state(payload["rng"]["torch"].cpu())
        if self.device.type == "cuda" and "cuda" in payload["rng"]:
            torch.cuda.set_rng_state(payload["rng"]["cuda"].cpu(), self.device)
        saved = History.from_dict(payload["history"])
        self.history.records = saved.records
        self.history.initial_val_loss = saved.initial_val_loss
        self.history.initial_output_std = saved.initial_output_std
        self.start_epoch = int(payload["epoch"]) + 1
        self.checkpoints.restore_best(path, payload, self.history)

    def measure_initial(self) -> None:
        # A sample is enough for the "before training" baseline the diagnosis compares with
        # (a loss that explodes or does not move). The runs of a search share the initial
        # tower: from the second on, this pass runs the head alone (evaluate.TowerMemo).
        initial = evaluate(self.model, self.val, limit=INITIAL_EVAL_PAIRS, memo=INITIAL_TOWER)
        self.history.initial_val_loss = initial.loss
        self.history.initial_output_std = initial.output_std

    def validate(self) -> EvalResult:
        return evaluate(self.model, self.val)

    def train_epoch(self, epoch: int) -> EpochRecord:
        started = time.perf_counter()
        batch = self.config.batch_size
        n_batches = len(self.data.train_pairs) // batch  # whole batches only: one shape, graphable
        order = epoch_order(self.config, epoch, len(self.data.train_pairs)).to(self.device)
        self.runner.reset_sums()
        checks = self.checks.steps(n_batches)  # a NaN loss, or a proven failure, ends it there
        for step in range(n_batches):
            self.runner.run(order[step * batch : (step + 1) * batch])
            if step + 1 in checks and (cut := self.checks.at(epoch, step + 1, n_batches, started)):
                return cut
        sums, result = self.runner.read_sums(), self.validate()
        record = epoch_record(epoch, sums, result, time.perf_counter() - started, n_batches * batch)
        self.checks.after_epoch(record, n_batches)
        return record

    def _notify_checkpoint(self, path: Path, kind: str, epoch: int) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(path, kind, epoch)

    def _state(self) -> dict[str, Any]:
        """What a checkpoint holds besides the epoch and best AUC (the keeper adds those)."""
        rng: dict[str, Tensor] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.config.to_dict(),
            "history": self.history.to_dict(),
            "rng": rng,
        }

    def loop(self) -> None:
        for epoch in range(self.start_epoch, self.config.epochs + 1):
            self.checkpoints.write_pending()  # the previous epoch's, before the weights change
            for callback in self.callbacks:
                callback.on_epoch_start(epoch)
            record = self.train_epoch(epoch)
            self.history.step_path = self.runner.path
            self.history.precision = self.runner.precision
            self.history.records.append(record)
            self.checkpoints.save(record, self._state)
            if not math.isfinite(record.train_loss) or not math.isfinite(record.val_loss):
                self.history.stop_reason = "non_finite"
                return
            reasons = [cb.on_epoch_end(record, self.history) for cb in self.callbacks]
            stop = (
                EARLY_STOP_REASON if self.history.early_stop else next(filter(None, reasons), None)
            )
            if stop:
                self.history.stop_reason = stop
                return


def fit(
    config: TrainConfig,
    data: PairData | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: Path | None = None,
    resume_from: Path | None = None,
    *,
    lean_checkpoints: bool = False,
    checkpoint_every_s: float = 0.0,
) -> FitResult:
    """Train one model. A NaN/Inf loss ends the run as a result (stop_reason "non_finite"),
    not an exception; Ctrl-C ends it with stop_reason "interrupted" and re-raises.
    `lean_checkpoints`: a run that ends on its own keeps its best weights only, as a
    search's trials do (siamese.train.keeper); one that is interrupted keeps everything.
    `checkpoint_every_s` (lean runs): last.pt at most this often (0: after every epoch)."""
    # The run's device is current from its first tensor to its last callback (cuda:N).
    with gpu.device_scope(resolve_device(config.device)):
        run = _Run(config, data, callbacks, checkpoint_dir, lean_checkpoints, checkpoint_every_s)
        return _fit(run, callbacks, resume_from)


def _fit(run: _Run, callbacks: Sequence[Callback], resume_from: Path | None) -> FitResult:
    if resume_from is not None:
        run.resume(resume_from)
    else:
        run.measure_initial()
    for callback in callbacks:
        callback.on_fit_start(run.history)
    try:
        run.loop()
        run.checkpoints.finish(run.history.stop_reason)
    except BaseException as exc:
        # "error" too, not "completed": a crashed run must never log a model.
        interrupted = isinstance(exc, KeyboardInterrupt)
        run.history.stop_reason = "interrupted" if interrupted else "error"
        with contextlib.suppress(OSError):  # the error that stopped the run is the one to see
            run.checkpoints.finish(run.history.stop_reason)
        _end(callbacks, run.history, exc)
        raise
    _end(callbacks, run.history, None)
    kept = run.checkpoints
    return FitResult(run.history, run.model, kept.best_path, kept.last_path, run.resumed_from)


def _end(callbacks: Sequence[Callback], history: History, error: BaseException | None) -> None:
    """Every callback's on_fit_end. While `error` ends the run, one that fails too is a
    warning line: the error that stopped the run is the one the caller must see (a full
    disk, not the curve that could not be drawn on it). Ctrl-C still goes through."""
    for callback in callbacks:
        if error is None:
            callback.on_fit_end(history)
            continue
        try:
            callback.on_fit_end(history)
        except Exception as exc:
            name, text = type(callback).__name__, " ".join(str(exc).split())[:300]
            _log.warning(
                "warning: %s could not finish the run: %s: %s", name, type(exc).__name__, text
            )
