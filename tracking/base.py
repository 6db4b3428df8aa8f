"""The tracker interface: what siamese-lab needs from an experiment tracker, and no more.

`MlflowTracker` is the real one; `InMemoryTracker` is its twin for fast tests. One contract
test (tests/tracking/test_contract.py) runs against both, as optuna's storage tests do.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the interface itself needs no torch: `--help` and errors stay light
    from torch import nn

# Final run states, as MLflow names them.
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
# Tags every layer reads: a trial's Optuna state and the error that ended a run.
STATE_TAG = "optuna.state"
ERROR_TAG = "siamese_lab.error"
# Where a run's logged model is (only a converged, completed run logs one).
MODEL_URI_TAG = "siamese_lab.model_uri"
# completed | pruned | non_finite | interrupted | error: History.stop_reason
STOP_REASON_TAG = "siamese_lab.stop_reason"
# MLflow keeps a run's display name in this tag too; setting it renames the run.
RUN_NAME_TAG = "mlflow.runName"
# What a study's parent run is tagged with (search.study writes it; `diagnose` reads it).
KIND_TAG, STUDY_KIND = "siamese_lab.kind", "study"
# The UI shows 8 characters of a run id; 6 is the shortest prefix taken for one.
MIN_RUN_ID_PREFIX = 6
FULL_RUN_ID_LENGTH = 32
_HEX = re.compile(r"[0-9a-f]+")


@dataclass
class RunView:
    """A run as read back: enough for `diagnose`, `promote` and the tests."""

    run_id: str
    name: str
    status: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each
    experiment_id: str = ""


class Tracker(abc.ABC):
    uri: str = ""

    @abc.abstractmethod
    def start_run(
        self,
        name: str,
        params: dict[str, object],
        tags: dict[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        """Create a RUNNING run and return its id."""

    def start_run_soon(
        self,
        name: str,
        params: dict[str, object],
        tags: dict[str, str],
        parent_run_id: str | None,
        on_made: Callable[[str], None],
    ) -> str:
        """`start_run`, where the run may be made after this returns (MlflowTracker: by a
        thread of its own, while the caller trains). The id returned may stand in for the
        run's until then: every call of this tracker takes it, and `run_id_of` gives the
        run's own. `on_made(run id)` runs once the run exists, before `run_id_of` returns
        it. Here: made at once."""
        run_id = self.start_run(name, params, tags, parent_run_id)
        on_made(run_id)
        return run_id

    def run_id_of(self, run_id: str) -> str:
        """The run's own id for an id `start_run_soon` gave (waiting until the run is made
        and `on_made` has run); any other id as given."""
        return run_id

    @abc.abstractmethod
    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """Log one step of metrics; may return before the write lands (see flush)."""

    @abc.abstractmethod
    def set_tags(self, run_id: str, tags: dict[str, str]) -> None: ...

    @abc.abstractmethod
    def log_artifact(
        self, run_id: str, local_path: Path, artifact_dir: str | None = None
    ) -> None: ...

    @abc.abstractmethod
    def log_text(self, run_id: str, text: str, artifact_file: str) -> None: ...

    @abc.abstractmethod
    def log_model(self, run_id: str, scorer: nn.Module, name: str = "model") -> str:
        """Log a pair scorer (input (N, 2, 40, 50) -> P(same)); returns its model URI."""

    def offer_model(self, run_id: str, checkpoint: Path, value: float) -> None:
        """The model of a run that may be the best (a search's trial that beat every
        converged one so far), from its `checkpoint`, `value` its selection metric: an offer
        of a higher value may follow, and only the best is ever promoted. A tracker where
        logging a model costs (MlflowTracker: a torch.export, a second or more) keeps the
        offer of the highest value and logs it at `flush`; here it is logged at once. Either
        way the run gets the model and its MODEL_URI_TAG."""
        self.log_checkpoint_model(run_id, checkpoint)

    def log_checkpoint_model(self, run_id: str, checkpoint: Path) -> str:
        """Logs the scorer of `checkpoint` as the run's model, tags the run with its URI,
        and returns the URI."""
        from siamese.scoring import scorer_from_checkpoint  # here: the interface needs no torch

        uri = self.log_model(run_id, scorer_from_checkpoint(checkpoint))
        self.set_tags(run_id, {MODEL_URI_TAG: uri})
        return uri

    def defer(self, work: Callable[[], None], what: str) -> None:
        """Runs `work` (a run's end-of-run artifacts) off the caller's path where the
        tracker can, in order with its other writes; `flush` and every read wait for it,
        and so does the process's exit. A failure is a warning naming `what`: the run's
        record (status, tags, checkpoints) never depends on it. Here: at once."""
        work()

    def catch_up(self) -> None:
        """Waits until deferred work is not too far behind (a tracker whose writer can
        lag); before a new run trains. Here: nothing is deferred, nothing waits."""
        return None

    def hold_writer(self) -> None:
        """The caller is between two trainings (a run ended, the next is being set up): a
        tracker that writes in the background keeps its writer out of the way until
        `release_writer`, or a short while at most (tracking.writer_gate). Here: no writer."""
        return None

    def release_writer(self) -> None:
        """A training starts (or the caller waits for the writer): it may write again."""
        return None

    def rename_run(self, run_id: str, name: str) -> None:
        """Change the name the runs table shows (a trial's name ends with its outcome)."""
        self.set_tags(run_id, {RUN_NAME_TAG: name})

    @abc.abstractmethod
    def reopen_run(self, run_id: str) -> None:
        """Set a finished run RUNNING again (a resumed study continues its parent run)."""

    @abc.abstractmethod
    def end_run(self, run_id: str, status: str) -> None:
        """Flush pending writes and set the final status."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Wait until every pending write has landed (an offered model too)."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunView: ...

    @abc.abstractmethod
    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs in step order."""

    @abc.abstractmethod
    def list_artifacts(self, run_id: str) -> list[str]:
        """Every artifact path of the run, recursively, relative to its root."""

    @abc.abstractmethod
    def download_artifact(self, run_id: str, path: str, dest: Path) -> Path: ...

    @abc.abstractmethod
    def child_runs(self, parent_run_id: str) -> list[RunView]: ...

    @abc.abstractmethod
    def run_ids_starting_with(self, prefix: str, limit: int = 10) -> list[str]:
        """Ids of runs in any experiment that start with `prefix` (a lower-case hex string)."""

    def resolve_run_id(self, given: str) -> str:
        """A full run id, or a unique prefix of at least MIN_RUN_ID_PREFIX characters."""
        from siamese.errors import SiameseInputError

        wanted = given.strip().lower()
        if len(wanted) < MIN_RUN_ID_PREFIX or not _HEX.fullmatch(wanted):
            raise SiameseInputError(
                f"run {given!r}: expected a run id or its first {MIN_RUN_ID_PREFIX}+ characters "
                "(hex digits, as the MLflow UI shows them)"
            )
        if len(wanted) == FULL_RUN_ID_LENGTH:
            return wanted
        found = self.run_ids_starting_with(wanted)
        if len(found) == 1:
            return found[0]
        if not found:
            raise SiameseInputError(f"run {given!r}: not found in {self.uri}")
        raise SiameseInputError(
            f"run {given!r}: ambiguous, matches {', '.join(found)}; give more characters"
        )

    def run_url(self, run_id: str) -> str | None:
        """Where a person sees the run, when the tracker has a UI."""
        return None
