"""The MLflow tracker: explicit run ids through MlflowClient (no global active run, so trials
and their parent can be logged side by side), metrics logged asynchronously, a trial's run
made while the trial trains (tracking.run_maker)."""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from siamese.names import check_name
from tracking.base import FINISHED, RunView, Tracker
from tracking.batching import PendingBatch
from tracking.experiment import experiment_id, refuse_default_in_a_new_store
from tracking.fresh_store import make_store_at_once
from tracking.local_artifacts import link_artifact, local_artifact_dir
from tracking.pt2_model import log_pt2_model, pointed_at
from tracking.run_maker import RunMaker
from tracking.sqlite_busy import quiet_retried_refusals, retried
from tracking.store import TrackingTarget, TrackingUnavailable, bound_http_retries, store_lock
from tracking.writer_gate import WriterGate
from tracking.writer_priority import lower_this_thread

if TYPE_CHECKING:
    from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

# MLflow logs its schema migrations and requirement guesses at INFO/WARNING on every start.
logging.getLogger("mlflow").setLevel(logging.ERROR)

WRITER_THREAD = "mlflow-writer"
# A new run waits while a finished run's curves and records have waited longer than this
# for the low-priority writer: the MLflow UI lags a busy machine's search by about this
# much, not more and more, and a hard kill costs at most that much of the record. (A count
# would not do: a GPU population's members end together, dozens at once.)
MAX_LAG_S = 30.0
_log = logging.getLogger(__name__)
# A run-id prefix is looked up in this many experiments at most (MLflow pages its answers).
MAX_EXPERIMENTS = 50_000


class MlflowTracker(Tracker):
    def __init__(self, target: TrackingTarget) -> None:
        check_name("--experiment", target.experiment)  # before the store is touched
        if target.is_http:
            bound_http_retries()
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.target = target
        self.uri = target.uri
        quiet_retried_refusals()
        refuse_default_in_a_new_store(target)  # before the lock and the store are made
        with store_lock(target):  # the first contact creates the schema: one process at a time
            make_store_at_once(target.uri)  # a fresh home's store: seconds, not migrations
            self.client = mlflow.MlflowClient(target.uri)
            self.experiment_id = experiment_id(self.client, target)
        # One writer thread: metrics and deferred end-of-run work land in the order given.
        # Its queue is drained when the process exits (concurrent.futures joins it). It runs
        # at the lowest CPU priority, beside the training (tracking.writer_priority).
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=WRITER_THREAD, initializer=lower_this_thread
        )
        self._pending: list[Future[object]] = []
        # Held by the caller between two trainings (tracking.writer_gate).
        self._gate = WriterGate()
        # The log_batch queued last, which later writes for its run may join until the
        # writer takes it (tracking.batching); the lock guards it and its `taken`.
        self._open_batch: PendingBatch | None = None
        self._queue_lock = threading.Lock()
        # The deferred records (curves, text) not known to be written yet, oldest first, each
        # with when it was queued (time.monotonic).
        self._deferred: deque[tuple[Future[object], float]] = deque()
        # A run's artifact folder never changes: looked up once, not once per artifact.
        self._artifact_dirs: dict[str, Path | None] = {}
        # (value, run id, checkpoint) of the best offer: see offer_model
        self._offered: tuple[float, str, Path] | None = None
        # A trial's run is made while it trains, like the writer's work: making it while the
        # trial is set up took the interpreter from the set-up it was to spare.
        self._maker = RunMaker(wait_turn=self._gate.wait, hurry=self._gate.release)

    def start_run(
        self,
        name: str,
        params: dict[str, object],
        tags: dict[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        run_id = self._make_run(name, self._run_tags(tags, parent_run_id))
        self._log(run_id, params=_params(params))
        return run_id

    def start_run_soon(
        self,
        name: str,
        params: dict[str, object],
        tags: dict[str, str],
        parent_run_id: str | None,
        on_made: Callable[[str], None],
    ) -> str:
        """Made by the run maker's thread (tracking.run_maker), started at the time of this
        call; a stand-in id until then."""
        all_tags, started = self._run_tags(tags, parent_run_id), int(1000 * time.time())
        stand_in = self._maker.make(lambda: self._make_run(name, all_tags, started), on_made)
        self._log(stand_in, params=_params(params))  # the writer waits for the run
        return stand_in

    def run_id_of(self, run_id: str) -> str:
        return self._maker.run_id(run_id)

    def _run_tags(self, tags: dict[str, str], parent_run_id: str | None) -> dict[str, str]:
        if not parent_run_id:
            return dict(tags)
        return {**tags, "mlflow.parentRunId": self.run_id_of(parent_run_id)}

    def _make_run(self, name: str, tags: dict[str, str], started: int | None = None) -> str:
        experiment = self.experiment_id
        run = retried(
            lambda: self.client.create_run(experiment, start_time=started, tags=tags, run_name=name)
        )
        run_id = str(run.info.run_id)
        self._artifact_dirs[run_id] = local_artifact_dir(run.info.artifact_uri)
        return run_id

    def _write(self, call: Callable[..., object], *args: object, **kwargs: object) -> None:
        """A write for the writer thread, in order with the others: the caller (a trial
        about to train, or that just did) never waits on the store, a synced SQLite commit
        each (tens of ms) or a server. Reads, flush and a FAILED/KILLED end wait for it."""
        with self._queue_lock:
            self._open_batch = None  # a later log_batch must not jump ahead of this
            self._pending.append(self._pool.submit(self._when_let, call, *args, **kwargs))

    def _log(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
    ) -> None:
        """A log_batch for the writer: it joins the one queued last if it can (same run,
        not yet taken, nothing queued after it), so writes that queue up behind each other
        cost one transaction."""
        with self._queue_lock:
            batch = self._open_batch
            if batch is not None and batch.can_take(run_id, metrics, params, tags):
                batch.add(metrics, params, tags)
                return
            batch = PendingBatch(run_id)
            batch.add(metrics, params, tags)
            self._pending.append(self._pool.submit(self._when_let, self._write_batch, batch))
            self._open_batch = batch  # once queued: a batch that never was takes nothing

    def _when_let(self, call: Callable[..., object], *args: object, **kwargs: object) -> object:
        """A job on the writer thread, started once the gate lets it (a held batch goes on
        taking the writes that queue up behind it meanwhile)."""
        self._gate.wait()
        return retried(lambda: call(*args, **kwargs))

    def hold_writer(self) -> None:
        self._gate.hold()

    def release_writer(self) -> None:
        self._gate.release()

    def _write_batch(self, batch: PendingBatch) -> None:
        with self._queue_lock:
            batch.taken = True  # from here on it is read, never changed
        params, tags = list(batch.params.values()), list(batch.tags.values())
        run_id = self._maker.made(batch.run_id)
        if run_id is not None:  # None: never made (its trial fails with why)
            self.client.log_batch(run_id, batch.metrics, params, tags)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        stamp = int(1000 * time.time())
        batch = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        # Written by one background thread: training never waits on the store, and end_run
        # waits only for what is queued (MLflow's own async mode polls on shutdown, ~0.7 s).
        self._log(run_id, metrics=batch)

    def defer(self, work: Callable[[], None], what: str) -> None:
        def warn_on_failure() -> None:
            try:
                retried(work)
            except Exception as exc:
                text = " ".join(str(exc).split())[:300]
                _log.warning("warning: could not write %s: %s: %s", what, type(exc).__name__, text)

        self._write(warn_on_failure)
        self._deferred.append((self._pending[-1], time.monotonic()))

    def catch_up(self) -> None:
        """Waits for the deferred records queued more than MAX_LAG_S ago. The writer runs at
        the lowest priority and can fall behind on a busy machine; waiting gives it the
        cores this process's training leaves idle meanwhile."""
        now = time.monotonic()
        while self._deferred:
            future, queued_at = self._deferred[0]
            if not future.done() and now - queued_at <= MAX_LAG_S:
                return
            self._gate.release()  # it is waited for: nothing may hold it back
            future.result()  # a failure was a warning already (defer)
            self._deferred.popleft()

    def offer_model(self, run_id: str, checkpoint: Path, value: float) -> None:
        """Kept, not exported: a search's best converged trial so far is usually beaten
        by a later one, and exporting each (torch.export, a second or more a model) would
        cost a trial's end that much. The best offer (the first of equals, as a search's
        rule keeps it; the members of a population end together and each may offer) is
        exported at `flush` (a search's and a worker's end, Ctrl-C included), in the calling
        thread, after the queue."""
        if self._offered is None or value > self._offered[0]:
            self._offered = (value, run_id, checkpoint)

    def _log_offered(self) -> None:
        """The offered model, logged; a failure is a warning naming the run (its trial and
        checkpoint are recorded already; `promote` then finds no model for it)."""
        offered, self._offered = self._offered, None
        if offered is None:
            return
        _, run_id, checkpoint = offered
        try:
            self.log_checkpoint_model(run_id, checkpoint)
        except Exception as exc:
            text = " ".join(str(exc).split())[:300]
            _log.warning(
                "warning: could not log the model of run %s from %s: %s: %s",
                run_id,
                checkpoint,
                type(exc).__name__,
                text,
            )

    def _settle(self) -> None:
        """Reads see this tracker's own writes: wait for the queue (not from the writer
        thread itself, where deferred work reads too and would wait on itself)."""
        if not threading.current_thread().name.startswith(WRITER_THREAD):
            self._drain()

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        batch = [RunTag(k, str(v)[:8000]) for k, v in tags.items()]  # the values of now
        self._log(run_id, tags=batch)

    def log_artifact(self, run_id: str, local_path: Path, artifact_dir: str | None = None) -> None:
        run_id = self.run_id_of(run_id)
        if run_id not in self._artifact_dirs:
            uri = self.client.get_run(run_id).info.artifact_uri
            self._artifact_dirs[run_id] = local_artifact_dir(uri)
        root = self._artifact_dirs[run_id]
        if root is None or not link_artifact(root, local_path, artifact_dir):
            self.client.log_artifact(run_id, str(local_path), artifact_dir)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id_of(run_id), text, artifact_file)

    def log_model(self, run_id: str, scorer: nn.Module, name: str = "model") -> str:
        """torch.export ("pt2") format: loading it back unpickles no code."""
        with self.using_store():
            return log_pt2_model(self.run_id_of(run_id), scorer, name)

    @contextmanager
    def using_store(self) -> Iterator[None]:
        """MLflow's global (fluent) API pointed at this store meanwhile (tracking.pt2_model)."""
        with pointed_at(self.uri, self.experiment_id):
            yield

    def flush(self) -> None:
        self._drain()
        self._log_offered()

    def _drain(self) -> None:
        """Waits for the writer thread's queue. Cut short (a failed write, Ctrl-C), the
        writes not waited for stay queued: the next drain waits for them."""
        self._gate.release()  # waited for: nothing may hold it back
        pending, self._pending = self._pending, []
        for done, future in enumerate(pending, start=1):
            try:
                future.result()  # re-raises a failed write here, not silently
            except BaseException:
                # A write that failed is reported now; one whose wait was cut short is not
                # done yet and stays queued with the rest.
                self._pending[:0] = pending[done:] if future.done() else pending[done - 1 :]
                raise

    def reopen_run(self, run_id: str) -> None:
        self.client.update_run(self.run_id_of(run_id), status="RUNNING")

    def end_run(self, run_id: str, status: str = FINISHED) -> None:
        if status == FINISHED:
            # After the run's deferred work (one writer, in order), and not waited for: the
            # next trial starts while the last one's curves are drawn.
            self._write(self._set_terminated, run_id, status)
            return
        # KILLED or FAILED: the process may be stopping; everything queued lands before it
        # does (an offered model waits for the search's end: flush).
        self._drain()
        self._set_terminated(run_id, status)

    def _set_terminated(self, run_id: str, status: str) -> None:
        made = self._maker.made(run_id)
        if made is not None:  # None: never made (its trial fails with why)
            self.client.set_terminated(made, status=status)

    def get_run(self, run_id: str) -> RunView:
        self._settle()
        run_id = self.run_id_of(run_id)
        try:
            run = self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException as exc:
            raise TrackingUnavailable(f"run {run_id!r}: not found in {self.uri}") from exc
        return RunView(
            run.info.run_id,
            run.info.run_name or "",
            run.info.status,
            dict(run.data.params),
            dict(run.data.tags),
            dict(run.data.metrics),
            str(run.info.experiment_id),
        )

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        self._settle()
        history = self.client.get_metric_history(self.run_id_of(run_id), key)
        return sorted((m.step, m.value) for m in history)

    def list_artifacts(self, run_id: str) -> list[str]:
        self._settle()
        run_id = self.run_id_of(run_id)
        found: list[str] = []
        pending: list[str | None] = [None]
        while pending:
            for item in self.client.list_artifacts(run_id, pending.pop()):
                (pending.append(item.path) if item.is_dir else found.append(item.path))
        return sorted(found)

    def download_artifact(self, run_id: str, path: str, dest: Path) -> Path:
        self._settle()
        dest.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(self.run_id_of(run_id), path, str(dest)))

    def child_runs(self, parent_run_id: str) -> list[RunView]:
        self._settle()
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id_of(parent_run_id)}'",
            max_results=5000,
        )
        return [self.get_run(r.info.run_id) for r in runs]

    def run_ids_starting_with(self, prefix: str, limit: int = 10) -> list[str]:
        from mlflow.entities import ViewType

        experiments = self.client.search_experiments(ViewType.ALL, max_results=MAX_EXPERIMENTS)
        runs = self.client.search_runs(
            [e.experiment_id for e in experiments],
            filter_string=f"attributes.run_id LIKE '{prefix}%'",  # prefix: hex digits only
            run_view_type=ViewType.ALL,
            max_results=limit,
            order_by=["attributes.run_id ASC"],
        )
        return [r.info.run_id for r in runs]

    def run_url(self, run_id: str) -> str | None:
        if self.target.is_http:
            made = self.run_id_of(run_id)
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{made}"
        return None


def _params(params: dict[str, object]) -> list[Param]:
    """One batch, not a call per param. MLflow caps a value at 6000 characters."""
    return [Param(k, "None" if v is None else str(v)[:6000]) for k, v in params.items()]
