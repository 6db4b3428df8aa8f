"""snapshot: the copy of a run's state a lean keeper holds between writes. It must never
share a tensor, dict or list with the live state, and may reuse a spent copy's tensors."""

from __future__ import annotations

import torch

from siamese.train.snapshot import snapshot


def _state(weight: torch.Tensor) -> dict[str, object]:
    return {
        "model": {"w": weight},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "buf": weight * 2}}, "groups": []},
        "history": {"records": [{"epoch": 1}], "pair": (1, "a")},
        "epoch": 1,
    }


def test_a_snapshot_shares_nothing_that_training_changes() -> None:
    weight = torch.zeros(4)
    live = _state(weight)
    frozen = snapshot(live)
    weight += 1.0  # training goes on, in place
    live["optimizer"]["state"][0]["step"] += 1  # type: ignore[index]
    live["history"]["records"].append({"epoch": 2})  # type: ignore[index]
    assert torch.equal(frozen["model"]["w"], torch.zeros(4))
    assert float(frozen["optimizer"]["state"][0]["step"]) == 3.0
    assert frozen["history"]["records"] == [{"epoch": 1}]
    assert frozen["history"]["pair"] == (1, "a") and frozen["epoch"] == 1


def test_a_spent_snapshot_receives_the_next_copy_in_its_own_tensors() -> None:
    weight = torch.arange(4.0)
    spent = snapshot(_state(torch.full((4,), 9.0)))
    spent_weight, spent_step = spent["model"]["w"], spent["optimizer"]["state"][0]["step"]
    frozen = snapshot(_state(weight), into=spent)
    assert frozen["model"]["w"] is spent_weight  # no new allocation
    assert frozen["optimizer"]["state"][0]["step"] is spent_step
    assert torch.equal(frozen["model"]["w"], weight) and frozen["model"]["w"] is not weight
    weight += 1.0
    assert torch.equal(frozen["model"]["w"], torch.arange(4.0))


def test_a_tensor_that_does_not_fit_is_copied_afresh() -> None:
    spent = {"w": torch.zeros(3), "v": torch.zeros(4, dtype=torch.float64)}
    frozen = snapshot({"w": torch.ones(4), "v": torch.ones(4)}, into=spent)
    assert frozen["w"] is not spent["w"] and frozen["v"] is not spent["v"]
    assert torch.equal(spent["w"], torch.zeros(3))  # left as it was
    assert torch.equal(frozen["w"], torch.ones(4)) and frozen["v"].dtype == torch.float32


def test_the_live_tensor_itself_is_never_the_copy() -> None:
    weight = torch.ones(3)
    frozen = snapshot({"w": weight}, into={"w": weight})
    assert frozen["w"] is not weight
    weight += 1.0
    assert torch.equal(frozen["w"], torch.ones(3))


def test_sharing_is_kept_and_a_spent_tensor_takes_one_copy_at_most() -> None:
    shared = torch.ones(2)
    frozen = snapshot({"a": shared, "b": shared})
    assert frozen["a"] is frozen["b"]  # one tensor under two names, as torch.save keeps it
    # The spent copy shared one tensor; the new state has two: each keeps its own values.
    again = snapshot({"a": torch.full((2,), 5.0), "b": torch.full((2,), 7.0)}, into=frozen)
    assert again["a"] is not again["b"]
    assert again["a"].tolist() == [5.0, 5.0] and again["b"].tolist() == [7.0, 7.0]
