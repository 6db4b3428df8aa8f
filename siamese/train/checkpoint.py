"""Checkpoints: written atomically, read with weights_only=True, rejected loudly when corrupt.

A checkpoint holds everything needed to continue bit-for-bit: model, optimizer, the epoch
reached, RNG states, the config and the history so far, and a sha256 digest of all of it
(torch checks no checksum when it loads: a flipped bit would load silently). A full disk is
`DiskFullError`, one line, with the previous file intact. Which files a run keeps, and
when, is `siamese.train.keeper.CheckpointKeeper`'s.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from siamese.errors import CheckpointError, CorruptCheckpointError
from siamese.files import fsync_dir, signals_deferred
from siamese.model import DEFAULT_THRESHOLD, THRESHOLD_KEY
from siamese.train.integrity import DIGEST_KEY, disk_full_named, payload_digest

FORMAT = "siamese-lab-checkpoint/1"
# What torch.save writes (a zip archive): anything else is not a checkpoint at all.
ZIP_SIGNATURE = b"PK\x03\x04"
REQUIRED_KEYS = ("format", "model", "optimizer", "epoch", "config", "history", "rng")
# A checkpoint goes to its file in pieces of this size: one multi-MB write() into a new file
# took 10x as long as the same bytes in 1 MiB writes (16 against 1.6 ms for a 7.8 MB best.pt
# on Linux 6.18, ext4; bench/RESULTS.md), which was most of what a search trial spends
# writing its checkpoint.
WRITE_PIECE = 1 << 20
_log = logging.getLogger(__name__)
# False in a weights-only checkpoint: it scores pairs but cannot resume training.
RESUMABLE_KEY = "resumable"


def save_checkpoint(path: Path, payload: dict[str, Any], durable: bool = True) -> None:
    """Temp file in the same folder, fsync, os.replace: a crash leaves the old file or the new.

    `durable=False` skips the fsyncs: the file then survives the process dying (the page
    cache has it) but maybe not the machine losing power. For the last.pt a run rewrites
    every epoch, where a lost file only means resuming from best.pt (`load_for_resume`);
    `make_durable` makes the one a run ends with durable."""
    with signals_deferred():
        _write_atomically(path, payload, durable)


def make_durable(path: Path) -> None:
    """fsync a file written with durable=False, and its folder (the rename)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    fsync_dir(path.parent)


def _write_atomically(path: Path, payload: dict[str, Any], durable: bool) -> None:
    body = {"format": FORMAT, **payload}
    body[DIGEST_KEY] = payload_digest(body)
    # Serialized in memory first: a failed write is then Python's OSError with its errno,
    # not torch's "enforce fail ... unexpected pos" from inside the zip writer.
    buffer = io.BytesIO()
    torch.save(body, buffer)
    with disk_full_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                _write_in_pieces(handle, buffer.getbuffer())
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())  # NFS and quotas may report ENOSPC only here
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        if durable:
            fsync_dir(path.parent)


def _write_in_pieces(handle: BinaryIO, data: memoryview) -> None:
    for start in range(0, len(data), WRITE_PIECE):
        handle.write(data[start : start + WRITE_PIECE])


def _check_is_torch_file(path: Path) -> None:
    """A text file or /etc/passwd is named as not a checkpoint at all (torch's own loader
    fails on it with a bare KeyError), before torch reads it."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(ZIP_SIGNATURE))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if head != ZIP_SIGNATURE:
        raise CheckpointError(
            f"{path}: not a siamese-lab checkpoint (not a file torch.save writes); "
            "expected the best.pt or last.pt of a train or search run"
        )


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True: a file carrying pickled code is refused, not executed."""
    _check_is_torch_file(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the file holds objects that are not plain tensors/values "
            "(unsafe or not a siamese-lab checkpoint)"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CorruptCheckpointError(
            f"{path}: corrupt or truncated checkpoint ({type(exc).__name__})"
        ) from exc
    except Exception as exc:  # torch's unpickler fails in many more ways on a foreign zip
        raise CheckpointError(
            f"{path}: corrupt or not a siamese-lab checkpoint ({type(exc).__name__})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a siamese-lab checkpoint (expected format {FORMAT!r})")
    if DIGEST_KEY in payload and payload[DIGEST_KEY] != payload_digest(payload):
        raise CorruptCheckpointError(
            f"{path}: its tensors do not match their digest: the file is corrupt"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return payload


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run resumes from: the one asked for, or an earlier good one."""

    path: Path
    payload: dict[str, Any]
    note: str = ""  # why it is not the file asked for


def check_resumable(path: Path, payload: dict[str, Any]) -> None:
    """A finished trial's weights-only file (siamese.train.keep) is no point to resume from."""
    if payload.get(RESUMABLE_KEY, True) is False:
        raise CheckpointError(
            f"{path}: holds weights only (a finished trial keeps no optimizer state); it "
            "scores pairs, but training cannot resume from it"
        )


def load_for_resume(path: Path, map_location: str | torch.device = "cpu") -> ResumePoint:
    """`load_checkpoint(path)`; when that file is corrupt, best.pt in the same folder if it
    is sound (an earlier epoch: the run replays the rest exactly), said in a warning line.
    Otherwise the error that names `path`. A weights-only file is refused."""
    point = _load_or_fall_back(path, map_location)
    check_resumable(point.path, point.payload)
    return point


def _load_or_fall_back(path: Path, map_location: str | torch.device) -> ResumePoint:
    try:
        return ResumePoint(path, load_checkpoint(path, map_location))
    except CorruptCheckpointError as exc:
        fallback = path.with_name("best.pt")
        if path.name == fallback.name or not fallback.is_file():
            raise
        try:
            payload = load_checkpoint(fallback, map_location)
        except CheckpointError:
            raise exc from None  # a hard link to the same bytes, or damaged too
        note = f"{exc}; resuming from {fallback} (epoch {payload['epoch']}) instead"
        _log.warning("warning: %s", note)
        return ResumePoint(fallback, payload, note)


def load_weights(model: nn.Module, state: dict[str, Any], path: Path) -> None:
    """`model.load_state_dict(state)`, strict; weights saved by another version of the
    network (renamed or reshaped layers) are bad input that names the file. Weights saved
    before the model stored its decision threshold load with the default, said in a note."""
    older = THRESHOLD_KEY in model.state_dict() and THRESHOLD_KEY not in state
    if older:
        state = {**state, THRESHOLD_KEY: torch.tensor(DEFAULT_THRESHOLD)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: its weights do not match this version's network "
            f"({_mismatch(set(model.state_dict()), set(state), exc)})"
        ) from exc
    if older:
        _log.warning(
            "note: %s stores no decision threshold (an older checkpoint): P(same) >= %s decides",
            path,
            DEFAULT_THRESHOLD,
        )


def _mismatch(expected: set[str], found: set[str], exc: RuntimeError) -> str:
    """The difference in one line: torch's message runs over many."""
    parts = [
        f"{label} {len(keys)} key(s), e.g. {sorted(keys)[0]!r}"
        for label, keys in (("missing", expected - found), ("unexpected", found - expected))
        if keys
    ]
    return "; ".join(parts) or " ".join(str(exc).split())[:300]
