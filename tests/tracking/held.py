"""A method of the tracker's MLflow client held until `release` (a slow disk, a slow
server), recording the threads that called it: shared by the writer and run-maker tests."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tracking.mlflow_tracker import MlflowTracker


class HeldCall:
    def __init__(
        self, tracker: MlflowTracker, method: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.gate = threading.Event()
        self.callers: list[str] = []
        call = getattr(tracker.client, method)

        def held(*args: Any, **kwargs: Any) -> Any:
            self.callers.append(threading.current_thread().name)
            assert self.gate.wait(timeout=60), "never released"
            return call(*args, **kwargs)

        monkeypatch.setattr(tracker.client, method, held)

    def release(self) -> None:
        self.gate.set()
