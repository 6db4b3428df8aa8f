"""A local worker stops when the search process that started it is gone.

`search --jobs N` starts its workers and watches them; if that process itself dies (kill
-9, the out-of-memory killer, a closed terminal that takes it first), nothing watches the
workers any more. They would train on as orphans, holding memory and cores, with nobody to
report to. So each worker watches its parent in a thread, and once the parent is gone it
sends itself SIGTERM: the worker's trial ends as on any SIGTERM (its run KILLED, its
checkpoint written, the trial retried when the study is resumed)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading


def stop_when_the_parent_dies() -> None:
    """Starts the watch in this process, if it is a multiprocessing child."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()


def _watch(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns once the parent's end of its pipe closes: it has exited
    os.kill(os.getpid(), signal.SIGTERM)
