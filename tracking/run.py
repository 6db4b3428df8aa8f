"""A tracked run's lifetime: it always ends FINISHED, FAILED or KILLED, never RUNNING.

SIGTERM (a scheduler, `kill`, a container stop) is turned into an interruption like Ctrl-C,
so the same code path marks the run KILLED and keeps its last checkpoint.
"""

from __future__ import annotations

import platform
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import torch

import siamese
from siamese.config import TrainConfig
from tracking.base import FAILED, FINISHED, KILLED, Tracker


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
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
) -> Iterator[str]:
    """Start a run with the config as params; end it with the status the outcome deserves."""
    run_id = tracker.start_run(
        name, config.flat(), {**environment_tags(device), **(tags or {})}, parent_run_id
    )
    with final_status(tracker, run_id):
        yield run_id


@contextmanager
def final_status(tracker: Tracker, run_id: str) -> Iterator[None]:
    """End `run_id` FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED (any error, recorded)."""
    with sigterm_as_interrupt():
        try:
            yield
        except KeyboardInterrupt:
            tracker.end_run(run_id, KILLED)
            raise
        except BaseException as exc:
            tracker.set_tags(run_id, {"siamese_lab.error": f"{type(exc).__name__}: {exc}"[:4000]})
            tracker.log_text(run_id, traceback.format_exc(), "error.txt")
            tracker.end_run(run_id, FAILED)
            raise
        tracker.end_run(run_id, FINISHED)
