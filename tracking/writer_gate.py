"""The writer thread keeps out of the way while a trial is being set up or wound down.

Between two trainings the main thread runs Python alone: it ends a trial (checkpoint,
record, Optuna's tell), asks for the next (TPE), builds its model and run. A writer that
draws curves or commits to SQLite then takes the interpreter lock from it every few
milliseconds, and those ~100 ms of setup took half again as long. While a trial trains, the
main thread spends most of its time in torch ops that let go of the lock, and the writer's
work there costs the training little. So the caller holds the writer while it is between
trainings (`hold`) and lets it go when the next training starts (`release`). The run
maker's thread (tracking.run_maker) waits for the gate too.

A hold never lasts: after `MAX_HOLD_S` the writer goes on by itself (a caller that forgot
to release, or a long stretch between trainings, costs the record that much lag at most),
and everything that waits for the writer releases it first (a flush among them: a process
that exits without one waits out the hold at the writer's join, 2 s at most).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Longer than a trial's setup (~0.1 s; Optuna's TPE over a few hundred trials ~1 s), short
# enough that a writer held by mistake lags by no more than that.
MAX_HOLD_S = 2.0


class WriterGate:
    """Open unless held; a hold ends at `release` or `max_hold_s` after it began."""

    def __init__(
        self, max_hold_s: float = MAX_HOLD_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_hold_s = max_hold_s
        self._clock = clock
        self._changed = threading.Condition()
        self._held_since: float | None = None

    def hold(self) -> None:
        """Holds the writer from its next job on (the one it is in goes on). Holding again
        while held keeps the first hold's start: the bound counts from there. A hold that
        has run out is over: holding again starts a new one."""
        with self._changed:
            if self._held_since is None or self._left() <= 0:
                self._held_since = self._clock()

    def release(self) -> None:
        with self._changed:
            self._held_since = None
            self._changed.notify_all()

    @property
    def held(self) -> bool:
        with self._changed:
            return self._held_since is not None and self._left() > 0

    def wait(self) -> None:
        """The writer's side: returns once the gate is open or the hold has lasted too long."""
        with self._changed:
            while self._held_since is not None and (left := self._left()) > 0:
                self._changed.wait(left)

    def _left(self) -> float:
        assert self._held_since is not None
        return self._held_since + self.max_hold_s - self._clock()
