"""The population's GPU programs, checked on the CPU: a step captured as a (fake) CUDA graph
replays on the tensors it was recorded with, and the vmapped program ends where fit ends."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import MethodType

import pytest
import torch
from torch import Tensor

from siamese import PairData, fit, prepare_data
from siamese.train import gpu, population_run
from siamese.train.population import Population
from siamese.train.population_step import PopulationStep
from tests.siamese.test_population import TINY, assert_same_history, assert_same_weights, cfg


@pytest.fixture(scope="module")
def tiny() -> PairData:
    return prepare_data(TINY)


def _pointers(step: PopulationStep) -> dict[str, int]:
    """Where every tensor a captured step reads or writes lives now."""
    owners: dict[str, object] = {
        "step": step,
        "optimizer": step.optimizer,
        "state": step.optimizer.state,
        "masks": step.masks,
        "stack": step.stack,
        "data": step.data,
    }
    found: dict[str, int] = {}
    for owner_name, owner in owners.items():
        for name, value in vars(owner).items():
            values = value.items() if isinstance(value, dict) else [(name, value)]
            for key, tensor in values:
                if isinstance(tensor, Tensor):
                    found[f"{owner_name}.{name}.{key}"] = tensor.data_ptr()
    return found


class FakeGraph:
    """A CUDA graph's contract on the CPU: capture records without running; a replay runs
    the recorded step, and the tensors it touches must be those it was recorded with."""

    def __init__(self, step_fn: Callable[[], None], owner: PopulationStep) -> None:
        self.step_fn, self.owner = step_fn, owner
        self.recorded = _pointers(owner)
        self.replays = 0

    def replay(self) -> None:
        assert _pointers(self.owner) == self.recorded
        self.step_fn()
        self.replays += 1


def test_a_graphed_step_reuses_the_tensors_it_was_recorded_with(
    tiny: PairData, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = [
        cfg(optimizer="adam", dropout=0.2, seed=1, epochs=3),
        cfg(optimizer="adam", lr=2e-3, seed=2, epochs=3),
    ]
    eager = Population(configs, tiny, [[], []], [None, None], masks="device")
    torch.manual_seed(0)
    eager_results = eager.run()
    graphs: list[FakeGraph] = []

    def capture(step_fn: Callable[[], None], device: torch.device) -> FakeGraph:
        assert isinstance(step_fn, partial) and isinstance(step_fn.func, MethodType)
        owner = step_fn.func.__self__  # the population's own step, replayed on its tensors
        assert isinstance(owner, PopulationStep)
        graphs.append(FakeGraph(step_fn, owner))
        return graphs[-1]

    monkeypatch.setattr(population_run, "uses_graph", lambda device: True)
    monkeypatch.setattr(gpu, "capture_graph", capture)
    graphed = Population(configs, tiny, [[], []], [None, None], masks="device")
    torch.manual_seed(0)
    results = graphed.run()
    assert graphed.step.path == "graph" and len(graphs) == 2  # with statistics and without
    assert sum(g.replays for g in graphs) == 3 * 2 - 3  # every step after the warm-up
    for mine, theirs in zip(results, eager_results, strict=True):
        assert mine.history.step_path == "graph"
        assert_same_weights(mine.model.state_dict(), theirs.model.state_dict(), rel=0.0)


@pytest.mark.slow
def test_the_vmapped_program_ends_where_fit_ends(tiny: PairData) -> None:
    """What runs on a GPU: all members' forward and backward in one vmapped program. Its
    batched convolutions round differently from fit's, hence the tolerance, and a smooth
    head: relu2's output ReLU turns a rounding difference into a different gradient."""
    configs = [
        cfg(optimizer="sgd", head="sq", lr=0.05, seed=1),
        cfg(optimizer="sgd", head="sq", lr=0.02, momentum=0.5, weight_decay=1e-3, dropout=0.3),
    ]
    population = Population(configs, tiny, [[], []], [None, None], vmapped=True)
    for config, mine in zip(configs, population.run(), strict=True):
        theirs = fit(config, tiny)
        assert_same_history(mine.history, theirs.history, rel=1e-3)
        assert_same_weights(mine.model.state_dict(), theirs.model.state_dict(), rel=1e-3)
