"""Checkpoints: written atomically, read with weights_only=True, rejected loudly when corrupt.

A checkpoint holds everything needed to continue bit-for-bit: model, optimizer, the epoch
reached, RNG states, the config and the history so far.
"""

from __future__ import annotations

import os
import pickle
import secrets
import signal
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from siamese.errors import CheckpointError

FORMAT = "siamese-lab-checkpoint/1"
REQUIRED_KEYS = ("format", "model", "optimizer", "epoch", "config", "history", "rng")


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C or SIGTERM during a write is acted on right after it, not in the middle: an
    exception raised inside torch.save becomes a corrupt-zip RuntimeError. (Masking the
    signal would not do: it is delivered to whichever thread does not mask it.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    watched = (signal.SIGINT, signal.SIGTERM)
    previous: dict[int, Any] = {s: signal.signal(s, lambda n, _f: held.append(n)) for s in watched}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            _redeliver(held[0], previous[held[0]])


def _redeliver(signum: int, handler: Any) -> None:
    if callable(handler):
        handler(signum, None)  # e.g. KeyboardInterrupt, or tracking's Terminated
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Temp file in the same folder, fsync, os.replace: a crash leaves the old file or the new."""
    with signals_deferred():
        _write_atomically(path, payload)


def link_atomically(source: Path, path: Path) -> bool:
    """Gives a complete file a second name without writing it again: best.pt for the epoch
    just saved as last.pt, or a checkpoint in a local MLflow artifact store. Atomic like a
    save: a temporary link renamed into place (a no-op when `path` already is `source`).
    Safe because no checkpoint is changed in place: the next save of `source` is a new file.
    False where the file system has no hard links; the caller then writes a copy."""
    # A random name: another process (a retried trial's zombie, another host over NFS)
    # may link into the same folder.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.link")
    with signals_deferred():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, tmp)
            os.replace(tmp, path)
        except OSError:
            return False
        finally:
            tmp.unlink(missing_ok=True)  # left when path already was this file (a no-op rename)
        _fsync_dir(path.parent)
    return True


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True: a file carrying pickled code is refused, not executed."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the file holds objects that are not plain tensors/values "
            "(unsafe or not a siamese-lab checkpoint)"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({type(exc).__name__})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a siamese-lab checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return payload
