"""The tracking callback: plugs into `siamese.fit` and sends everything a run produces to a
tracker - per-epoch metrics as they come, then checkpoints, curves, diagnosis and (for a run
that converged) the model."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from siamese.diagnosis import Diagnosis, diagnose, early_stop_text, render_text
from siamese.files import signals_deferred
from siamese.scoring import scorer_from_checkpoint
from siamese.train import Callback, EpochRecord, History
from siamese.train.history import strict_json
from tracking.base import MODEL_URI_TAG, RUN_NAME_TAG, STOP_REASON_TAG, Tracker
from tracking.readback import DIAGNOSIS_FILE

CHECKPOINT_DIR_TAG = "siamese_lab.checkpoint_dir"
STEP_PATH_TAG = "siamese_lab.step_path"
PRECISION_TAG = "siamese_lab.precision"
EARLY_STOP_TAG = "siamese_lab.early_stop"


def diagnosis_tags(history: History, verdict: Diagnosis) -> dict[str, str]:
    best = history.best
    tags = {
        "diagnosis.verdict": verdict.verdict,
        "diagnosis.label": verdict.label,
        "diagnosis.summary": "; ".join(f.summary for f in verdict.findings) or "learned",
        STOP_REASON_TAG: history.stop_reason,
        # "graph" or "eager: <why>": a GPU run that silently trained eagerly is visible here.
        STEP_PATH_TAG: history.step_path,
        # The config says "auto"; this says what auto chose on this machine: bf16 or fp32.
        PRECISION_TAG: history.precision,
        "siamese_lab.best_epoch": str(best.epoch if best else ""),
    }
    if history.early_stop:  # stopped inside epoch 1, its statistics proving a failure
        tags[EARLY_STOP_TAG] = early_stop_text(history.early_stop)
    return tags


class TrackingCallback(Callback):
    """`log_model`: True logs a converged, completed run's model with its record (`train`);
    a rule (a search's "beats every converged trial so far") offers it to the tracker
    instead (Tracker.offer_model), which may log only the last offer, at its flush.
    `outcome_tags`: tags that follow from the run's end (a trial's state and the name that
    shows it), written with its diagnosis and used as its curves' title."""

    def __init__(
        self,
        tracker: Tracker,
        run_id: str,
        log_model: bool | Callable[[History], bool] = True,
        outcome_tags: Callable[[History, Diagnosis], dict[str, str]] | None = None,
    ) -> None:
        self.tracker, self.run_id, self.should_log_model = tracker, run_id, log_model
        self.outcome_tags = outcome_tags
        self.checkpoints: dict[str, Path] = {}
        self.model_uri: str | None = None
        self.verdict: Diagnosis | None = None  # computed once, at the end of the run

    def on_fit_start(self, history: History) -> None:
        tags = {"siamese_lab.device": history.device}
        if history.data_warnings:
            tags["siamese_lab.data_warnings"] = " | ".join(history.data_warnings)[:4000]
        self.tracker.set_tags(self.run_id, tags)

    def on_epoch_start(self, epoch: int) -> None:
        # The steps start: the writer works beside them, while the main thread mostly
        # waits in torch ops (tracking.writer_gate).
        self.tracker.release_writer()

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        self.tracker.log_metrics(self.run_id, record.metrics(), step=record.epoch)
        self.tracker.hold_writer()  # until the next epoch's steps (or the next run's)
        return None

    def on_checkpoint(self, path: Path, kind: str, epoch: int) -> None:
        # Uploaded once at the end; until then the file on disk is the copy that survives a
        # crash, so its folder is recorded on the run straight away.
        if not self.checkpoints:
            self.tracker.set_tags(self.run_id, {CHECKPOINT_DIR_TAG: str(path.parent)})
        self.checkpoints[kind] = path

    def on_fit_end(self, history: History) -> None:
        """The run's record, written whole: a Ctrl-C or SIGTERM meanwhile is held until it
        is done and then stops the process. Cut short, it would leave a run without its
        diagnosis, or (a tracker that draws at once) matplotlib half imported for the
        study's own figures."""
        with signals_deferred():
            self._write_record(history)
        # What follows until the next run trains (Optuna's tell and ask, the next model and
        # run) goes without the writer taking turns with it.
        self.tracker.hold_writer()

    def _write_record(self, history: History) -> None:
        """What the run's outcome depends on is written now: the verdict, tags, checkpoints
        and the model (or its offer). The curves and text records are deferred: the tracker draws and
        writes them while the next trial trains (and before the process exits)."""
        self.run_id = self.tracker.run_id_of(self.run_id)  # made by now: its own id from here
        verdict = self.verdict = diagnose(history)
        best = history.best
        if best is not None:
            self.tracker.log_metrics(self.run_id, {"best_val_auc": best.val_auc}, step=best.epoch)
        for path in sorted(set(self.checkpoints.values())):
            if path.is_file():  # a finished trial keeps best.pt only (siamese.train.keep)
                self.tracker.log_artifact(self.run_id, path, "checkpoints")
        tags = diagnosis_tags(history, verdict)
        if self.outcome_tags is not None:
            tags.update(self.outcome_tags(history, verdict))
        if self._model_wanted(verdict.verdict, history) and best is not None:
            if callable(self.should_log_model):  # the best so far: a later run may beat it
                self.tracker.offer_model(self.run_id, self.checkpoints["best"], best.val_auc)
            else:
                self.model_uri = self.tracker.log_model(
                    self.run_id, scorer_from_checkpoint(self.checkpoints["best"])
                )
                tags[MODEL_URI_TAG] = self.model_uri
        self.tracker.set_tags(self.run_id, tags)
        title = tags.get(RUN_NAME_TAG)  # None: the run keeps its name, read when drawn
        records = _Records(self.tracker, self.run_id, history, verdict, title)
        self.tracker.defer(records.write, f"the curves and records of run {self.run_id}")

    def _model_wanted(self, verdict: str, history: History) -> bool:
        """Only a converged, completed run logs a model: the registry never sees a broken one."""
        if (
            verdict != "converged"
            or history.stop_reason != "completed"
            or "best" not in self.checkpoints
        ):
            return False
        wanted = self.should_log_model
        return wanted(history) if callable(wanted) else wanted


class _Records:
    """A finished run's curves and text records, written by the tracker's writer thread.
    Everything it needs is taken now: the history is a copy, so it cannot change meanwhile."""

    def __init__(
        self,
        tracker: Tracker,
        run_id: str,
        history: History,
        verdict: Diagnosis,
        title: str | None = None,
    ) -> None:
        self.tracker, self.run_id, self.verdict, self.title = tracker, run_id, verdict, title
        self.history = History.from_dict(history.to_dict())

    def write(self) -> None:
        # matplotlib is imported here, where it is used: `train --no-track` never pays for
        # it, and a search's first trial does not wait for it (the MLflow tracker's writer
        # thread imports it at low priority; Ctrl-C, raised in the main thread only, cannot
        # cut it in half there, and an in-process tracker defers into a deferred-signal block).
        from tracking.plots import plot_curves

        tracker, run_id, history = self.tracker, self.run_id, self.history
        with tempfile.TemporaryDirectory() as tmp:
            if history.records:
                title = self.title or tracker.get_run(run_id).name
                tracker.log_artifact(run_id, plot_curves(history, Path(tmp) / "curves.png", title))
        diagnosis = json.dumps(strict_json(self.verdict.to_dict()), indent=2)
        tracker.log_text(run_id, diagnosis, DIAGNOSIS_FILE)
        tracker.log_text(run_id, render_text(self.verdict) + "\n", "diagnosis.txt")
        tracker.log_text(
            run_id, json.dumps(strict_json(history.to_dict()), indent=2), "history.json"
        )
