"""A tracked run's lifetime: it always ends FINISHED, FAILED or KILLED, never RUNNING.

SIGTERM (a scheduler, `kill`, a container stop) is turned into an interruption like Ctrl-C,
so the same code path marks the run KILLED and keeps its last checkpoint. An interruption
stays one whatever else fails while the process stops: the run still ends KILLED.
"""

from __future__ import annotations

import platform
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import torch

import siamese
from siamese.config import TrainConfig
from siamese.files import signals_deferred
from siamese.interrupts import forget_unless_remembered, remember
from tracking.base import ERROR_TAG, FAILED, FINISHED, KILLED, Tracker


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        remember(signum)  # raised again at the next safe point if a finalizer drops it
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except BaseException as exc:
        # It reached the caller, who decides (a library caller may catch it and train
        # again): forgotten, unless a remembering scope is open. One dropped in a finalizer
        # stays remembered, for the next safe point.
        if isinstance(interruption_of(exc), Terminated):
            forget_unless_remembered(signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def environment_tags(device: str) -> dict[str, str]:
    name = (
        torch.cuda.get_device_name(torch.device(device))
        if device.startswith("cuda")
        else platform.processor() or "cpu"
    )
    return {
        "siamese_lab.version": siamese.__version__,
        "siamese_lab.torch": torch.__version__,
        "siamese_lab.cuda": str(torch.version.cuda or "none"),
        "siamese_lab.device_name": name,
    }


@contextmanager
def tracked_run(
    tracker: Tracker,
    name: str,
    config: TrainConfig,
    device: str,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    on_made: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Start a run with the config as params; end it with the status the outcome deserves.
    With `on_made`, the run may be made while the caller goes on (Tracker.start_run_soon):
    the id given may stand in for it until `tracker.run_id_of`."""

    def start() -> str:
        all_tags = {**environment_tags(device), **(tags or {})}
        if on_made is None:
            return tracker.start_run(name, config.flat(), all_tags, parent_run_id)
        return tracker.start_run_soon(name, config.flat(), all_tags, parent_run_id, on_made)

    with final_status(tracker, start) as run_id:
        tracker.catch_up()  # here, where SIGTERM ends the new run KILLED, not the process
        yield run_id


@contextmanager
def final_status(tracker: Tracker, run: str | Callable[[], str]) -> Iterator[str]:
    """End the run FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED (any error, recorded).
    `run`: its id, or what starts it: then it is started here, with Ctrl-C and SIGTERM held
    until its id is known, so no moment leaves a run RUNNING (a Ctrl-C just after the
    store made it, before it could be ended, did).

    KILLED also when the error was raised while stopping after Ctrl-C (an exception whose
    context holds the interruption, e.g. a cleanup that broke on a half-done import); the
    error is recorded and the interruption raised again, so the caller sees Ctrl-C. Ctrl-C
    while the failure is being recorded, or while the status is written, ends it KILLED."""
    outcome: BaseException | None = None  # what ends the run (not sys.exc_info(): that
    # would be the caller's own exception when the run is used inside an except block)
    run_id = run if isinstance(run, str) else None
    with sigterm_as_interrupt():
        try:
            try:
                if run_id is None:
                    assert callable(run)
                    with signals_deferred():  # one held meanwhile is raised here, run known
                        run_id = run()
                yield run_id
            except BaseException as exc:
                if run_id is None:  # the run was never made: nothing to end
                    raise
                interruption = interruption_of(exc)
                if interruption is not exc:
                    _record_error(tracker, run_id, exc, after_interruption=interruption is not None)
                if interruption is not None and interruption is not exc:
                    raise type(interruption)(*interruption.args) from exc
                raise
        except BaseException as ending:  # the error, or Ctrl-C while it was recorded
            outcome = ending
            raise
        finally:
            if run_id is not None:
                _end(tracker, run_id, _status_for(outcome))


def interruption_of(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM `exc` is, or was raised while handling; None if none."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        pending += [current.__cause__, current.__context__]
    return None


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return FINISHED
    return KILLED if interruption_of(exc) is not None else FAILED


def _record_error(
    tracker: Tracker, run_id: str, exc: BaseException, after_interruption: bool
) -> None:
    line = " ".join(f"{type(exc).__name__}: {exc}".split())
    if after_interruption:
        line = f"interrupted; then, while stopping: {line}"
    tracker.set_tags(run_id, {ERROR_TAG: line[:4000]})
    tracker.log_text(run_id, traceback.format_exc(), "error.txt")


def _end(tracker: Tracker, run_id: str, status: str) -> None:
    """Writes the status with Ctrl-C held until it is written; one that came meanwhile makes
    it KILLED (the process stops right after)."""
    with signals_deferred() as held:
        tracker.end_run(run_id, status)
        if held and status != KILLED:
            tracker.end_run(run_id, KILLED)
