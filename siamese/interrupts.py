"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt in whatever the main thread runs when SIGINT lands. When
that is a weakref callback or a `__del__` (the garbage collector runs them anywhere), the
exception is printed as "Exception ignored" and dropped: a search then went on to its end
and exited 0 (seen in CI). Inside `interrupts_remembered`, the handler also remembers the
signal, and `raise_if_interrupted` - called at safe points: each epoch's end, each trial's
end - raises it again when it was dropped. A Ctrl-C always stops a search or a training.
SIGTERM, which tracking turns into an interruption the same way, is remembered the same way
(`remember`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from siamese.train.callbacks import Callback
from siamese.train.history import EpochRecord, History

_received: list[int] = []  # SIGINTs (and SIGTERMs) the handlers saw while installed
_scopes: list[None] = []  # one per `interrupts_remembered` open now (the main thread's)


def remember(signum: int) -> None:
    """For a signal handler that raises an interruption: kept for `raise_if_interrupted`,
    in case the exception lands in a finalizer and is dropped."""
    _received.append(signum)


def forget() -> None:
    """Drops what was remembered (tests call this between tests)."""
    _received.clear()


def forget_unless_remembered(signum: int) -> None:
    """For a handler's scope that ends (tracking's SIGTERM one): its signal is forgotten,
    unless an `interrupts_remembered` scope is open, whose safe points must still see it
    (that scope forgets it when it ends). A library caller that caught the interruption
    and trains again is not stopped at its next epoch's end by the old signal."""
    if not _scopes:
        while signum in _received:
            _received.remove(signum)


def _remember_and_raise(signum: int, frame: FrameType | None) -> None:
    remember(signum)
    raise KeyboardInterrupt


@contextmanager
def interrupts_remembered() -> Iterator[None]:
    """Installs the remembering SIGINT handler (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = signal.signal(signal.SIGINT, _remember_and_raise)
    _scopes.append(None)
    try:
        yield
    finally:
        _scopes.pop()
        signal.signal(signal.SIGINT, previous)
        _received.clear()


def raise_if_interrupted() -> None:
    """KeyboardInterrupt again if a Ctrl-C came and was dropped on the way."""
    if _received:
        raise KeyboardInterrupt


class InterruptCheck(Callback):
    """Stops a training at the end of an epoch when a Ctrl-C during it was dropped."""

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        raise_if_interrupted()
        return None
