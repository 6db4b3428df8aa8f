"""Which checkpoint files a run keeps, and when they are written.

last.pt holds everything a resume needs and is rewritten after every epoch; best.pt is a
second name (a hard link) for the file last.pt was when its epoch was the best. Diverged
weights never replace a good file. A search's trials end "weights only" (siamese.train.keep):
a trial that ends on its own is never resumed, so its optimizer state would only fill the
disk. Such a keeper writes an epoch's last.pt when the next epoch begins, not when the
epoch ends, and keeps the best epoch's weights in memory: a run that then ends on its own
writes its small best.pt once, and never the full last.pt of its final epoch (nor reads a
23 MB file back to shrink it). A run that ends otherwise (Ctrl-C, an error) still gets it.

A lean keeper may also write at most every `every_s` seconds (a search trial's
`--checkpoint-every`): a trial of a few seconds then writes no 23 MB file per epoch that
nothing reads, and a hard-killed worker's retry replays at most that much training. The
epoch it holds meanwhile is a frozen copy (a few ms of memcpy, not a 30-70 ms write), and so
is the best epoch's full state while it is not on disk: Ctrl-C or an error still writes both.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from siamese.errors import CheckpointError
from siamese.files import link_atomically, signals_deferred
from siamese.train.checkpoint import load_checkpoint, make_durable, save_checkpoint
from siamese.train.history import EpochRecord, History
from siamese.train.integrity import disk_full_named
from siamese.train.keep import FINISHED_REASONS, keep_weights_only, weights_only
from siamese.train.snapshot import SPENT, Spares, snapshot

# (path, kind "best" or "last", epoch): called after each file is in place.
Notify = Callable[[Path, str, int], None]
Payload = dict[str, Any]


def _holds_epoch(path: Path, epoch: int) -> bool:
    """Whether `path` is a readable checkpoint of `epoch` (a corrupt one is simply not)."""
    try:
        return path.is_file() and int(load_checkpoint(path)["epoch"]) == epoch
    except CheckpointError:
        return False


def _weights_copy(payload: Payload) -> Payload:
    """The weights-only payload of `payload`, its weights copied to the CPU: the live
    tensors go on training (and a weights-only file holds CPU tensors, as ever)."""
    model = {key: value.detach().to("cpu", copy=True) for key, value in payload["model"].items()}
    return {**weights_only(payload), "model": model}


@dataclass(frozen=True)
class _Pending:
    """An epoch's last.pt, not yet written (a lean keeper's; see the module)."""

    epoch: int
    payload: Payload
    improved: bool
    frozen: bool = False  # its tensors are copies, not the live ones training goes on with

    def freeze(self, spare: Payload | None = None) -> _Pending:
        """This epoch with its own copy of every tensor: the run's go on changing. The
        copy goes into the tensors of `spare`, a frozen payload let go, where they fit."""
        if self.frozen:
            return self
        return replace(self, payload=snapshot(self.payload, spare), frozen=True)


class CheckpointKeeper:
    """The checkpoint files of one run in `checkpoint_dir` (none are written where it is
    None), with the best validation AUC so far and the paths written. `lean`: the run
    keeps weights only if it ends on its own (see the module); call `write_pending` before
    the next epoch changes the weights, and `finish` once the run has stopped. `every_s`
    (lean keepers): write at most this often, holding frozen copies between (0: every epoch)."""

    def __init__(
        self,
        checkpoint_dir: Path | None,
        notify: Notify,
        lean: bool = False,
        every_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        spares: Spares = SPENT,
    ) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.notify = notify
        self.lean = lean
        self.every_s = every_s if lean else 0.0
        self._clock = clock
        self._written_at = clock()
        self.best_auc = -math.inf
        self.best_path: Path | None = None
        self.last_path: Path | None = None
        self._pending: _Pending | None = None
        self._best_weights: tuple[int, Payload] | None = None  # (epoch, weights-only payload)
        # The best epoch's full state while only memory holds it (see the module).
        self._unwritten_best: _Pending | None = None
        # Frozen payloads let go, which the next freeze copies into (this run's or the next).
        self._spares = spares

    def save(self, record: EpochRecord, payload_fn: Callable[[], Payload]) -> None:
        """last.pt for `record`'s epoch, and best.pt linked to it if the epoch improved on
        the best validation AUC; a lean keeper holds it until `write_pending` or `finish`.
        `payload_fn` gives the run's state (model, optimizer, config, history, rng); it is
        called only when something is kept."""
        if self.checkpoint_dir is None or not math.isfinite(record.train_loss):
            return  # never overwrite a good checkpoint with diverged weights
        improved = self._improves(record)
        if improved:
            self.best_auc = record.val_auc
        payload = {**payload_fn(), "epoch": record.epoch, "best_val_auc": self.best_auc}
        if not self.lean:
            self._write(_Pending(record.epoch, payload, improved))
            return
        previous = self._pending
        if improved:
            self._best_weights = (record.epoch, _weights_copy(payload))
            self._let_go(self._unwritten_best)
            self._unwritten_best = None
        elif self.every_s > 0 and previous is not None and previous.improved:
            # Held back by `every_s`, so frozen by `write_pending` before this epoch trained.
            assert previous.frozen, "save() twice without write_pending() between"
            self._unwritten_best, previous = previous, None
        self._let_go(previous)
        self._pending = _Pending(record.epoch, payload, improved)

    def write_pending(self) -> None:
        """Writes the epoch a lean keeper holds (nothing otherwise): before its weights
        change. Within `every_s` of the last write, freezes it instead."""
        if self._pending is not None and self._clock() - self._written_at < self.every_s:
            self._pending = self._pending.freeze(self._spares.take())
            return
        self._flush()

    def _flush(self) -> None:
        """Writes what is held, now: the last epoch, and the best one if it is not on disk.
        A Ctrl-C or SIGTERM waits for both (it must not cost the resumable last.pt, which
        goes first, for what a hard kill may cut short); each is let go once written."""
        with signals_deferred():
            if self._pending is not None:
                self._write(self._pending)
                self._let_go(self._pending)
                self._pending = None
            if self._unwritten_best is not None:  # (an improving epoch since clears it)
                self._write_best(self._unwritten_best)
                self._let_go(self._unwritten_best)
                self._unwritten_best = None

    def _let_go(self, pending: _Pending | None) -> None:
        """`pending` is written or superseded: a frozen one's tensors become the spare.
        Never a payload that is not frozen: its tensors are the run's live ones."""
        if pending is not None and pending.frozen:
            self._spares.give(pending.payload)

    def _write(self, pending: _Pending) -> None:
        assert self.checkpoint_dir is not None
        self.last_path = self.checkpoint_dir / "last.pt"
        # A file written is a file reported: Ctrl-C waits for both, or tracking never
        # learns of the checkpoint it would log.
        with signals_deferred():
            # Not fsynced every epoch: the run's end makes what it keeps durable.
            save_checkpoint(self.last_path, pending.payload, durable=False)
            self.notify(self.last_path, "last", pending.epoch)
            if pending.improved:
                self.best_path = self.checkpoint_dir / "best.pt"
                if not link_atomically(self.last_path, self.best_path):
                    save_checkpoint(self.best_path, pending.payload)
                self.notify(self.best_path, "best", pending.epoch)
        self._written_at = self._clock()

    def _write_best(self, best: _Pending) -> None:
        """best.pt alone: an epoch better than the last one, held back by `every_s`."""
        self._put_best(best.payload, best.epoch, durable=False)

    def _put_best(self, payload: Payload, epoch: int, durable: bool) -> None:
        """best.pt alone, reported (Ctrl-C waits for both: see _write)."""
        assert self.checkpoint_dir is not None
        self.best_path = self.checkpoint_dir / "best.pt"
        with signals_deferred():
            save_checkpoint(self.best_path, payload, durable=durable)
            self.notify(self.best_path, "best", epoch)

    def finish(self, stop_reason: str) -> None:
        """What the run keeps once it has stopped, made durable: weights only for a lean
        keeper's run that ended on its own, else every file a resume needs."""
        if self.lean and stop_reason in FINISHED_REASONS:
            self._keep_weights_only()
            return
        self._flush()
        self.settle()

    def _keep_weights_only(self) -> None:
        folder = self.checkpoint_dir
        if folder is None:
            return
        best, last = folder / "best.pt", folder / "last.pt"
        pending = self._pending
        if self._best_weights is not None:
            (epoch, payload), kept = self._best_weights, best
        elif pending is not None and not best.is_file():  # no epoch had a finite AUC
            epoch, payload, kept = pending.epoch, weights_only(pending.payload), last
        else:  # the best epoch came before a resume: it is on disk only
            keep_weights_only(folder)
            self._release_held()
            return
        with signals_deferred():
            save_checkpoint(kept, payload)
            if kept != last:
                last.unlink(missing_ok=True)
            self.notify(kept, "best" if kept == best else "last", epoch)
        self._release_held()
        self.best_path = best if kept == best else self.best_path
        self.last_path = last

    def _release_held(self) -> None:
        """What memory held is let go once the weights-only file is written: until then a
        failure leaves it to `finish("error")`, which writes it in full for a resume."""
        self._let_go(self._pending)
        self._let_go(self._unwritten_best)  # its weights are in _best_weights
        self._pending = self._unwritten_best = None

    def settle(self) -> None:
        """Makes what the run keeps durable once it stops: last.pt was written every epoch
        without an fsync (one per epoch per trial adds up in a search), and best.pt is the
        file last.pt was at the best epoch, an earlier one's when a later epoch did worse."""
        for path in self._kept_files():
            with disk_full_named(path):
                make_durable(path)

    def _kept_files(self) -> list[Path]:
        kept = [p for p in (self.last_path, self.best_path) if p is not None and p.is_file()]
        if len(kept) == 2 and os.path.samefile(*kept):
            return kept[:1]  # one file under two names: one fsync
        return kept

    def save_best(self, record: EpochRecord, payload_fn: Callable[[], Payload]) -> None:
        """best.pt alone, for `record`'s epoch if it improved on the best validation AUC. For
        a run that keeps its best epoch's state in memory and writes files at intervals (a
        population member), so the best epoch may lie before the last; `save` the last
        epoch after this (it links best.pt instead when the last epoch is the best)."""
        if self.checkpoint_dir is None or not math.isfinite(record.train_loss):
            return
        if not self._improves(record):
            return
        self.best_auc = record.val_auc
        payload = {**payload_fn(), "epoch": record.epoch, "best_val_auc": self.best_auc}
        if self.lean:
            self._best_weights = (record.epoch, _weights_copy(payload))
        self._put_best(payload, record.epoch, durable=True)

    def _improves(self, record: EpochRecord) -> bool:
        return math.isfinite(record.val_auc) and record.val_auc > self.best_auc

    def restore_best(self, source: Path, payload: Payload, history: History) -> None:
        """Takes up the best AUC of the checkpoint `source` a run resumes from (`payload`,
        with its `history`) and puts best.pt right.

        best.pt must hold the history's best epoch, or the resumed run would keep a wrong
        one: a crash can fall between saving last.pt and linking best.pt, a run resumed into
        a new folder has none there yet, and a reused folder may hold another run's."""
        self.best_auc = float(payload.get("best_val_auc", -math.inf))
        if self.checkpoint_dir is None:
            return
        best = self.checkpoint_dir / "best.pt"
        record = history.best
        origin: Path | None = None
        if record is not None and record.epoch == int(payload["epoch"]):
            origin = source  # the resumed epoch is the best one
        elif record is not None:
            candidates = (best, source.parent / "best.pt")
            origin = next((c for c in candidates if _holds_epoch(c, record.epoch)), None)
        if origin is None or record is None:
            self.best_auc = -math.inf  # unknown: the next epoch's checkpoint becomes best.pt
            return
        with signals_deferred():
            if origin != best and not link_atomically(origin, best):
                save_checkpoint(best, load_checkpoint(origin))
            self.best_path = best
            # Reported like a save, so tracking logs it even if no later epoch improves.
            self.notify(best, "best", record.epoch)
