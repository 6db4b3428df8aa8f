"""The trainer's optimizers: torch.optim's, without the torch._dynamo import (0.8 s) that
every torch.optim method call starts with."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from siamese.config import TrainConfig
from siamese.model import build_model
from siamese.train.lean_optim import lean
from siamese.train.step import make_optimizer

REPO = Path(__file__).resolve().parents[2]
KINDS = ["sgd", "adam", "adamw", "rmsprop"]
# The classes and device flags make_optimizer gives each kind on the CPU.
STOCK = {
    "sgd": (torch.optim.SGD, {"fused": True}),
    "adam": (torch.optim.Adam, {"fused": True}),
    "adamw": (torch.optim.AdamW, {"fused": True}),
    "rmsprop": (torch.optim.RMSprop, {"foreach": True}),
}


def _train(kind: str, stock: bool, steps: int = 4) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """A few steps of the real model; half way, the state goes through state_dict and back
    (what a resume does), from a stock optimizer's state_dict into a lean one's."""
    torch.manual_seed(0)
    config = TrainConfig(head="abs", optimizer=kind, lr=0.01, momentum=0.5, weight_decay=1e-3)
    model = build_model(config)
    params = list(model.parameters())
    if stock:
        cls, flags = STOCK[kind]
        momentum = {"momentum": 0.5} if kind in ("sgd", "rmsprop") else {}
        optimizer = cls(params, lr=0.01, weight_decay=1e-3, **momentum, **flags)
    else:
        optimizer = make_optimizer(config, params, capturable=False)
    generator = torch.Generator().manual_seed(1)
    left, right = torch.rand(2, 8, 40, 50, generator=generator)
    same = (torch.arange(8) % 2).float()
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        model.loss(model(left, right), same).backward()
        optimizer.step()
        if step == steps // 2:
            optimizer.load_state_dict(optimizer.state_dict())
    return [p.detach().clone() for p in params], optimizer.state_dict()


@pytest.mark.parametrize("kind", KINDS)
def test_the_lean_optimizer_updates_and_saves_exactly_as_torch_optim_does(kind: str) -> None:
    lean_params, lean_state = _train(kind, stock=False)
    stock_params, stock_state = _train(kind, stock=True)
    assert all(torch.equal(a, b) for a, b in zip(lean_params, stock_params, strict=True))
    assert lean_state["param_groups"] == stock_state["param_groups"]
    for index, slots in stock_state["state"].items():
        assert set(lean_state["state"][index]) == set(slots)
        for name, value in slots.items():
            assert torch.equal(lean_state["state"][index][name], value), (index, name)


def test_a_stock_state_dict_loads_into_the_lean_optimizer() -> None:
    """Checkpoints written before (by torch.optim's own classes) resume as they did."""
    model = torch.nn.Linear(3, 1)
    stock = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    model(torch.ones(2, 3)).sum().backward()
    stock.step()
    lean_adam = lean(torch.optim.Adam)(model.parameters(), lr=0.1, fused=True)
    lean_adam.load_state_dict(stock.state_dict())
    assert lean_adam.state_dict()["state"][0]["step"] == 1
    assert isinstance(lean_adam, torch.optim.Adam)


def test_the_step_leaves_no_autograd_history_on_the_weights() -> None:
    """torch's decorator turns autograd off around a step; the lean step must too."""
    model = torch.nn.Linear(3, 1)
    optimizer = lean(torch.optim.SGD)(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    assert all(p.grad_fn is None and p.is_leaf for p in model.parameters())


def test_training_a_model_never_imports_torch_dynamo() -> None:
    """The import is 0.8 s of the first trial of every search; nothing in training needs it."""
    probe = (
        "import sys, torch\n"
        "from siamese.train.loop import fit\n"
        "from siamese.config import TrainConfig, DataConfig\n"
        "config = TrainConfig(epochs=2, batch_size=16, device='cpu', optimizer='adam',\n"
        "    data=DataConfig(source='shapes', train_pairs=64, val_pairs=32))\n"
        "fit(config)\n"
        "print('dynamo imported:', 'torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dynamo imported: False" in done.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_a_lean_optimizer_pickles_like_torch_optims(kind: str) -> None:
    import pickle

    model = torch.nn.Linear(3, 1)
    config = TrainConfig(optimizer=kind)
    optimizer = make_optimizer(config, list(model.parameters()), capturable=False)
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    again = pickle.loads(pickle.dumps(optimizer))
    assert type(again) is type(optimizer) and isinstance(again, STOCK[kind][0])
    assert str(again.state_dict()) == str(optimizer.state_dict())
