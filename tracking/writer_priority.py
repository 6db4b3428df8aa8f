"""The tracker's writer thread runs at the lowest CPU priority (Linux).

Its work (the curves PNG, SQLite commits, text records) can wait; the training beside it
cannot. On two cores, the training's two torch threads keep both busy, and a writer thread
at the same priority took a core from them mid-operation: every op of the running trial
then waited for the thread that lost its core. At the lowest priority the writer runs in
the gaps (between ops, between trials) and still gets a whole core once nothing else wants
one (a drain at the end, a read that waits for it)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

LOWEST_PRIORITY = 19  # the highest nice value: runs when nothing at normal priority wants a core


def lower_this_thread() -> None:
    """Gives the calling thread the lowest CPU priority, where that is possible.

    Linux only: there a thread is a task with its own nice value, and setpriority on its
    native id changes that thread alone. Elsewhere the same call would name a process."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):  # a sandbox may forbid it: the writer still works
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
