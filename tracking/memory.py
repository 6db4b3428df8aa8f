"""In-memory twin of the MLflow tracker, for fast tests of code that tracks."""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from pathlib import Path

from torch import nn

from tracking.base import FINISHED, RUN_NAME_TAG, RunView, Tracker


class InMemoryTracker(Tracker):
    def __init__(self) -> None:
        self.uri = "memory://"
        self.runs: dict[str, RunView] = {}
        self.history: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self.models: dict[str, nn.Module] = {}
        self._artifacts = Path(tempfile.mkdtemp(prefix="siamese-lab-memory-"))
        # Its artifacts (checkpoints among them, 45 MB a test) go with it: at garbage
        # collection, or at the latest when the process exits.
        weakref.finalize(self, shutil.rmtree, self._artifacts, ignore_errors=True)

    def start_run(
        self,
        name: str,
        params: dict[str, object],
        tags: dict[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        run_id = uuid.uuid4().hex
        all_tags = {RUN_NAME_TAG: name, **tags}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.runs[run_id] = RunView(
            run_id, name, "RUNNING", {k: str(v) for k, v in params.items()}, all_tags
        )
        self.history[run_id] = {}
        (self._artifacts / run_id).mkdir()
        return run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.history[run_id].setdefault(key, []).append((step, float(value)))
            self.runs[run_id].metrics[key] = float(value)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.runs[run_id].tags.update({k: str(v) for k, v in tags.items()})
        if RUN_NAME_TAG in tags:  # as MLflow does: the tag is the run's name
            self.runs[run_id].name = str(tags[RUN_NAME_TAG])

    def log_artifact(self, run_id: str, local_path: Path, artifact_dir: str | None = None) -> None:
        target = self._artifacts / run_id / (artifact_dir or "")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local_path, target / local_path.name)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        target = self._artifacts / run_id / artifact_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def log_model(self, run_id: str, scorer: nn.Module, name: str = "model") -> str:
        uri = f"memory://{run_id}/{name}"
        self.models[uri] = scorer
        self.log_text(run_id, "in-memory model", f"{name}/MLmodel")
        return uri

    def reopen_run(self, run_id: str) -> None:
        self.runs[run_id].status = "RUNNING"

    def end_run(self, run_id: str, status: str = FINISHED) -> None:
        self.runs[run_id].status = status

    def flush(self) -> None:
        return None

    def get_run(self, run_id: str) -> RunView:
        if run_id not in self.runs:
            from tracking.store import TrackingUnavailable

            raise TrackingUnavailable(f"run {run_id!r}: not found in {self.uri}")
        return self.runs[run_id]

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return sorted(self.history[run_id].get(key, []))

    def list_artifacts(self, run_id: str) -> list[str]:
        root = self._artifacts / run_id
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def download_artifact(self, run_id: str, path: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(self._artifacts / run_id / path, dest))

    def run_ids_starting_with(self, prefix: str, limit: int = 10) -> list[str]:
        return sorted(r for r in self.runs if r.startswith(prefix))[:limit]

    def child_runs(self, parent_run_id: str) -> list[RunView]:
        return [r for r in self.runs.values() if r.tags.get("mlflow.parentRunId") == parent_run_id]
