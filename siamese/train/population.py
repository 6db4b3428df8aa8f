"""`fit_population`: K trials trained as one program, each ending as `fit` would end it.

On a GPU one tiny model per trial leaves the chip idle (DESIGN.md, "Performance design");
a population stacks K members' weights and steps them together (`population_step`), with
per-member hyperparameters, data order, dropout masks and statistics. Each member has its
own `History`, callbacks and checkpoint files, as a `fit` run with the same config and seed
has, and ends within float tolerance of that run (the same initial weights, normalisation,
epoch order, sampled statistics and, on the CPU, the same kernels and dropout masks). A
member that diverges or is stopped by a callback stops changing; its NaNs stay in its row.

Members train together when they share `population_key` (head, optimizer, batch, device,
data); `fit_population` splits any list of configs into such groups and runs them in turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from siamese.config import TrainConfig
from siamese.data import PairData, prepare_data
from siamese.errors import ConfigError
from siamese.train.callbacks import Callback
from siamese.train.population_members import MemberResult
from siamese.train.population_run import DEFAULT_CHECKPOINT_EVERY_S, Population, population_key

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY_S",
    "MemberResult",
    "Population",
    "fit_population",
    "population_groups",
    "population_key",
]


def population_groups(
    configs: Sequence[TrainConfig], max_size: int | None = None
) -> list[list[int]]:
    """The indices of `configs` in compatible groups (in order of first appearance), each
    split into populations of at most `max_size` members."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(population_key(config), []).append(index)
    out: list[list[int]] = []
    for indices in groups.values():
        size = max_size or len(indices)
        out.extend(indices[start : start + size] for start in range(0, len(indices), size))
    return out


def fit_population(
    configs: Sequence[TrainConfig],
    data: PairData | None = None,
    callbacks: Sequence[Sequence[Callback]] | None = None,
    checkpoint_dirs: Sequence[Path | None] | None = None,
    *,
    checkpoint_every_s: float | None = DEFAULT_CHECKPOINT_EVERY_S,
    max_size: int | None = None,
    lean_checkpoints: bool = False,
) -> list[MemberResult]:
    """Train every config as `fit(config, data, callbacks[i], checkpoint_dirs[i])` would,
    as populations of compatible members; results in the order of `configs`.

    A member whose callbacks or checkpoint files fail ends alone (stop_reason "error", the
    exception on its result); Ctrl-C or a failure of the shared step ends every member still
    running ("interrupted" / "error", each one's `on_fit_end` called) and is raised.
    `checkpoint_every_s`: while members run, how often their files are written (0: every
    epoch, as fit; None: only when each ends). `lean_checkpoints`: as fit's."""
    n = len(configs)
    per_member = list(callbacks) if callbacks is not None else [()] * n
    dirs = list(checkpoint_dirs) if checkpoint_dirs is not None else [None] * n
    if len(per_member) != n or len(dirs) != n:
        raise ConfigError(f"fit_population: expected {n} callback lists and checkpoint folders")
    if n == 0:
        return []
    if any(c.data != configs[0].data for c in configs):
        raise ConfigError("fit_population: every config must have the same data config")
    pairs = data if data is not None else prepare_data(configs[0].data)
    results: list[MemberResult | None] = [None] * n
    for group in population_groups(configs, max_size):
        population = Population(
            [configs[i] for i in group],
            pairs,
            [per_member[i] for i in group],
            [dirs[i] for i in group],
            checkpoint_every_s=checkpoint_every_s,
            lean_checkpoints=lean_checkpoints,
        )
        for index, result in zip(group, population.run(), strict=True):
            results[index] = result
    return [r for r in results if r is not None]
