"""A trial's MLflow run, made off the trial's path: it trains while its run is made.

Making a run is one store transaction, done in the caller's thread: 8-13 ms of SQLAlchemy
and a synced SQLite commit that a search's every trial waited for before it trained. Here
a thread of its own makes it (not the writer thread, which runs at the lowest priority and
can be seconds behind a busy machine's training), and the caller holds a stand-in id
meanwhile. The tracker turns a stand-in into the run's id wherever it meets one: its writes
are queued behind the making, and a read waits for it (it is done long before a trial
ends). `on_made` learns the run's id in that thread, as soon as the run exists: a search
records it on the Optuna trial there, before the trial can end. A tracker's maker waits
for its writer gate (tracking.writer_gate): a run is made once its trial trains, when the
main thread waits in torch ops, not while the trial is set up in Python beside it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

STAND_IN_PREFIX = "run-being-made-"
MAKER_THREAD = "mlflow-run-maker"


class RunMaker:
    """Makes runs in a thread of its own. `wait_turn` runs in that thread before each run
    is made; `hurry` runs before a caller waits for a run not yet made (a tracker's writer
    gate: a run is made while its trial trains, not while the trial is set up)."""

    def __init__(
        self, wait_turn: Callable[[], None] = lambda: None, hurry: Callable[[], None] = lambda: None
    ) -> None:
        self._wait_turn, self._hurry = wait_turn, hurry
        # Joined when the process exits (concurrent.futures): a run asked for is made. At
        # the usual priority, unlike the writer: the run's id goes on the trial right after
        # the run exists, so a worker killed meanwhile leaves a run that recovery can close.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=MAKER_THREAD)
        self._made: dict[str, Future[str]] = {}
        # Each run's id as soon as the store gave it, whatever `on_made` then does.
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def make(self, make_run: Callable[[], str], on_made: Callable[[str], None]) -> str:
        """A stand-in id for the run `make_run` makes (in the maker thread)."""
        stand_in = f"{STAND_IN_PREFIX}{uuid.uuid4().hex}"

        def job() -> str:
            self._wait_turn()
            run_id = make_run()
            with self._lock:
                self._ids[stand_in] = run_id
            on_made(run_id)
            return run_id

        future = self._pool.submit(job)
        with self._lock:
            self._made[stand_in] = future
        return stand_in

    def _future(self, given: str) -> Future[str] | None:
        """The making of the run `given` stands in for; None for any other id."""
        with self._lock:
            return self._made.get(given)

    def run_id(self, given: str) -> str:
        """The run's id for a stand-in (waiting until the run is made); any other id as
        given. Raises what making the run raised, or, once, what `on_made` raised (the
        caller's trial then fails, and its run, which exists, is ended FAILED)."""
        future = self._future(given)
        if future is None:
            return given
        if not future.done():
            self._hurry()
        try:
            return future.result()
        except Exception:
            with self._lock:
                made = self._ids.get(given)
                if made is not None and self._made.get(given) is future:
                    self._made[given] = _made_already(made)  # said once: later calls get it
            raise

    def made(self, given: str) -> str | None:
        """The run's id for a stand-in once the run exists (waiting for it), any other id
        as given; None for a run that could not be made. The writer's jobs take this: a run
        that was never made is said once, where its trial waits for it, not by every write
        queued for it (and not retried as a locked store would be)."""
        future = self._future(given)
        if future is None:
            return given
        try:  # not through run_id: a failure it raises is the waiting trial's to meet
            return future.result()
        except Exception:
            with self._lock:
                return self._ids.get(given)


def _made_already(run_id: str) -> Future[str]:
    future: Future[str] = Future()
    future.set_result(run_id)
    return future
