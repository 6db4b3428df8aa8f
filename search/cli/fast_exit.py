"""Ending the `siamese-lab` process without the interpreter's teardown.

Once a command has returned, Python would still free every module and object one by one:
0.3 s after a search, and up to 1.2 s in a bare process that imported torch, torch._dynamo,
MLflow and matplotlib (bench/RESULTS.md), for memory the operating system takes back at
once. Everything that teardown would finish is finished here first, in its order: threads
that are not daemons are joined (the tracker's writer drains its queue), `atexit` callbacks
run (MLflow's, logging's), and stdout and stderr are flushed; then `os._exit`. Files the
commands write are closed by their own `with` blocks and SQLite commits each transaction,
so nothing that is not already on its way to the disk is left behind.

Where this Python lacks the two hooks it relies on, the process ends as usual.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import NoReturn

# What the interpreter itself calls at exit, in this order (private, so checked first).
_JOIN_THREADS = getattr(threading, "_shutdown", None)
_RUN_ATEXIT = getattr(atexit, "_run_exitfuncs", None)


def exit_code(code: str | int | None) -> int:
    """The status `sys.exit(code)` ends a process with (a text is printed, and is 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_without_teardown(code: str | int | None) -> NoReturn:
    """Ends the process with `sys.exit(code)`'s status, skipping only the freeing of memory."""
    if _JOIN_THREADS is None or _RUN_ATEXIT is None:
        sys.exit(code)
    status = exit_code(code)
    # A Ctrl-C now, once the command is done, cuts a step short as in Python's own exit
    # (which reports it as ignored): the next steps still run, and the status stays.
    for step in (_JOIN_THREADS, _RUN_ATEXIT, logging.shutdown):
        with contextlib.suppress(KeyboardInterrupt):
            step()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (`| head`) or stream has nothing left to save.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
