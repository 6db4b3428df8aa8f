"""Reading back what a run logged: its diagnosis."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from siamese.errors import SiameseInputError
from tracking.base import KIND_TAG, STUDY_KIND, RunView, Tracker

DIAGNOSIS_FILE = "diagnosis.json"


def read_diagnosis(tracker: Tracker, run_id: str) -> tuple[RunView, dict[str, Any]]:
    """The run and its logged diagnosis (as `diagnosis.json` holds it)."""
    run = tracker.get_run(run_id)
    if run.tags.get(KIND_TAG) == STUDY_KIND:  # its report, not a diagnosis, is what it holds
        study = run.tags.get("optuna.study", "NAME")
        raise SiameseInputError(
            f"run {run_id}: is study {study}'s run, not a trial's; its trials are its child "
            f"runs, and `siamese-lab report --study {study}` sums them up"
        )
    if DIAGNOSIS_FILE not in tracker.list_artifacts(run_id):
        raise SiameseInputError(
            f"run {run_id}: has no {DIAGNOSIS_FILE} (status {run.status}); it did not finish an epoch"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.download_artifact(run_id, DIAGNOSIS_FILE, Path(tmp))
        return run, json.loads(path.read_text())
