"""What a finished search trial keeps on disk: its best weights, not its optimizer.

A run that ended on its own (completed, pruned, diverged) is never resumed, so the Adam
moments and RNG states in its checkpoints (two thirds of a 23 MB file) only fill the disk.
A lean keeper (siamese.train.keeper, `fit(..., lean_checkpoints=True)`) keeps best.pt as
weights, config, history and epoch, and removes last.pt, before anything logs the files. A
weights-only file scores pairs (`predict`) but a resume refuses it, naming the file. An
interrupted or crashed run keeps everything: it may be retried from its last.pt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from siamese.train.checkpoint import RESUMABLE_KEY, load_checkpoint, save_checkpoint
from siamese.train.integrity import DIGEST_KEY

# Stop reasons after which nothing resumes the run.
FINISHED_REASONS = ("completed", "pruned", "non_finite")


def weights_only(payload: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in payload.items() if k not in ("format", DIGEST_KEY)}
    return {**kept, "optimizer": {}, "rng": {}, RESUMABLE_KEY: False}


def keep_weights_only(folder: Path) -> Path | None:
    """best.pt (else last.pt) rewritten weights-only; last.pt removed. The kept file."""
    best, last = folder / "best.pt", folder / "last.pt"
    kept = best if best.is_file() else last if last.is_file() else None
    if kept is None:
        return None
    save_checkpoint(kept, weights_only(load_checkpoint(kept)))  # a new file: links untouched
    if kept != last:
        last.unlink(missing_ok=True)
    return kept
