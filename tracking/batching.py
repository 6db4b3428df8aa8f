"""One MLflow log_batch for the writes that queue up behind each other.

The writer thread is often busy (a trial's curves) while the next trial's params, tags and
first metrics queue behind it, and a trial's end writes its checkpoint tag, best metric and
diagnosis tags within a millisecond. Each was its own log_batch: a SQLite transaction (and
a run lookup) of 3-10 ms, several a trial, on cores the training needs. A write for the
same run joins the batch queued last, as long as the writer has not taken it: the order
of everything is kept (nothing joins a batch with other work queued after it), and each
value is what it would have been written one call at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mlflow.entities import Metric, Param, RunTag

# MLflow's limits for one log_batch call.
MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
MAX_ENTITIES = 1000


@dataclass
class PendingBatch:
    run_id: str
    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, Param] = field(default_factory=dict)
    tags: dict[str, RunTag] = field(default_factory=dict)  # a later value of a key wins
    taken: bool = False  # the writer has started on it: nothing joins any more

    def add(
        self, metrics: Sequence[Metric], params: Sequence[Param], tags: Sequence[RunTag]
    ) -> None:
        self.metrics.extend(metrics)
        self.params.update((p.key, p) for p in params)
        self.tags.update((t.key, t) for t in tags)

    def can_take(
        self,
        run_id: str,
        metrics: Sequence[Metric],
        params: Sequence[Param],
        tags: Sequence[RunTag],
    ) -> bool:
        """Whether these writes may join: same run, not taken, within MLflow's limits, and no
        param logged twice (MLflow refuses a changed param: that error stays the caller's)."""
        if self.taken or run_id != self.run_id or any(p.key in self.params for p in params):
            return False
        n_metrics = len(self.metrics) + len(metrics)
        n_params = len(self.params) + len(params)
        n_tags = len(self.tags.keys() | {t.key for t in tags})
        return (
            n_metrics <= MAX_METRICS
            and n_params <= MAX_PARAMS
            and n_tags <= MAX_TAGS
            and n_metrics + n_params + n_tags <= MAX_ENTITIES
        )
