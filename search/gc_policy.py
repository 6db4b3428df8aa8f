"""The cyclic garbage collector in a process that runs trials, told what lives as long as
the process.

Such a process loads millions of objects that never die: the modules of torch, MLflow,
Optuna, scikit-learn and matplotlib, and their caches. Every full collection walks all of
them: in the default search on 2 CPU cores, 8 before the first trial (1 s; 3 of them, 0.7
s, while MLflow and its store load), one after it (0.3 s), two at the end (0.8 s), and the
interpreter's teardown at exit walks them again (1.5-2 s). Two steps make that a fraction:

- `loading()` around the bulk load of MLflow and its store (search.env's tracker): no
  collection inside, and everything alive after it is frozen (gc.freeze: moved to a
  generation that collections, the teardown's too, never walk). Without a collection
  first: the load leaves a few dozen objects of garbage (28-36 measured), and finding them
  would walk everything loaded (0.25 s before the first trial);
- `freeze_once(AFTER_FIRST_TRIAL)` when the first trial has ended, everything a trial needs
  loaded (matplotlib, scikit-learn's metrics): a collection of what is not frozen yet
  (0.1 s), then the freeze.

Each freeze happens once per process: what later trials allocate is collected as before,
and a process that loads twice (tests, a notebook) does not freeze everything it holds.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

AFTER_LOAD = "MLflow loaded"
AFTER_FIRST_TRIAL = "first trial"
_done: set[str] = set()


@contextmanager
def loading() -> Iterator[None]:
    """No collection inside; the collector as it was after (after an error too). The first
    time in a process, everything alive then is frozen."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
    freeze_once(AFTER_LOAD, collect=False)


def freeze_once(when: str, collect: bool = True) -> bool:
    """Collect what is garbage now (unless `collect` is False), then freeze what is alive:
    once per process for each `when` (True the time it does). The garbage goes first where
    there may be much: frozen objects are never collected."""
    if when in _done:
        return False
    _done.add(when)
    if collect:
        gc.collect()
    gc.freeze()
    return True
