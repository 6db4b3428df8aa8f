"""File writes that a crash or a signal cannot leave half done: Ctrl-C and SIGTERM held
back until a write is whole, a second name given to a complete file atomically, renames made
durable. No torch here: the tracking side links artifacts with it too."""

from __future__ import annotations

import os
import secrets
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Ctrl-C or SIGTERM during a write is acted on right after it, not in the middle: an
    exception raised inside torch.save becomes a corrupt-zip RuntimeError, one raised inside
    an import leaves the module half made. (Masking the signal would not do: it is delivered
    to whichever thread does not mask it.) Yields the signals held so far."""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    watched = (signal.SIGINT, signal.SIGTERM)
    previous: dict[int, Any] = {s: signal.signal(s, lambda n, _f: held.append(n)) for s in watched}
    try:
        yield held
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
        fsync_dir(path.parent)
    return True


def fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
