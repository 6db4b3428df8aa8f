"""Local worker processes (`search --jobs N`, `--devices`), started and watched by the
process that runs the search. A worker that dies (killed, out of memory, crashed) has its
trial recovered by the caller and is replaced once, so the retry runs; Ctrl-C or SIGTERM
here stops them all, each ending its running trial's run KILLED."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

from search.workers import WorkerSpec, child_main
from siamese.errors import SiameseInputError

# How long a stopped worker may take to end its run KILLED before it is killed outright.
STOP_GRACE_S = 60
INTERRUPTED_EXIT, BAD_INPUT_EXIT = 130, 2

# Called with a dead worker's pid and what happened; returns one line per recovered trial.
OnDeath = Callable[[int, str], list[str]]


def _start(spec: WorkerSpec) -> BaseProcess:
    context = multiprocessing.get_context("spawn")  # no fork: torch and storage handles
    process = context.Process(target=child_main, args=(spec,), name=f"worker-{spec.worker_index}")
    process.start()
    return process


def _how_it_ended(spec: WorkerSpec, code: int | None) -> str:
    if code is not None and code < 0:
        return f"worker {spec.worker_index} was killed by {signal.Signals(-code).name}"
    return f"worker {spec.worker_index} exited with code {code}"


def run_local_workers(specs: list[WorkerSpec], on_death: OnDeath) -> list[str]:
    """Run the workers to the end; the notes say what died and what was recovered."""
    running = {p.sentinel: (p, s) for p, s in ((_start(spec), spec) for spec in specs)}
    replacements, notes, bad_input = len(specs), [], []
    try:
        while running:
            ready = wait(list(running))
            for sentinel in [s for s in list(running) if s in ready]:
                process, spec = running.pop(sentinel)
                process.join()
                code = process.exitcode
                if code in (0, INTERRUPTED_EXIT):
                    continue
                if code == BAD_INPUT_EXIT:  # the worker printed its one line already
                    bad_input.append(spec.worker_index)
                    continue
                why = _how_it_ended(spec, code)
                notes += on_death(process.pid or 0, why) or [f"{why}; it held no trial"]
                if replacements > 0:
                    replacements -= 1
                    replacement = _start(spec)
                    running[replacement.sentinel] = (replacement, spec)
    except KeyboardInterrupt:
        _stop([p for p, _ in running.values()])
        raise
    if bad_input:
        raise SiameseInputError(f"worker(s) {bad_input} stopped on bad input (see above)")
    return notes


def _stop(processes: list[BaseProcess]) -> None:
    for process in processes:
        process.terminate()  # SIGTERM: the worker turns it into an interruption
    for process in processes:
        process.join(STOP_GRACE_S)
