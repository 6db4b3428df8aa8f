"""torch.optim's optimizers without the torch.compile hooks that cost a search 0.8 s.

Every method of a torch.optim optimizer that training calls (the constructor's
`add_param_group`, `step`, `zero_grad`, `state_dict`, `load_state_dict`) sits under a
decorator that first imports torch._dynamo, for torch.compile's sake: 0.75-0.8 s of
interpreter work holding the GIL on 2 CPU cores, paid inside a search's first trial (the
default search's largest overhead outside training; bench/RESULTS.md). The trainer never
compiles, so these subclasses call the very methods those decorators wrap, reached through
the `__wrapped__` that functools.wraps sets, and keep the one thing a decorator adds that
matters eagerly: `step` runs with autograd off (on when the optimizer is `differentiable`).
Updates, state and state_dict are torch's own, bit for bit (tests/siamese/test_lean_optim.py).
Where a torch release stops wrapping a method, that method is used as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import torch

Opt = TypeVar("Opt", bound=torch.optim.Optimizer)
# The methods whose decorators import torch._dynamo (torch 2.13), besides `step`.
UNDECORATED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def undecorated(method: Callable[..., Any]) -> Callable[..., Any]:
    """The function under every functools.wraps layer of `method`."""
    while hasattr(method, "__wrapped__"):
        method = method.__wrapped__
    return method


@cache
def lean(optimizer_class: type[Opt]) -> type[Opt]:
    """`optimizer_class` with its methods called without their torch.compile decorators."""
    plain_step = undecorated(optimizer_class.step)

    def step(self: torch.optim.Optimizer, closure: Callable[[], float] | None = None) -> Any:
        with torch.set_grad_enabled(bool(self.defaults["differentiable"])):
            return plain_step(self, closure)

    methods: dict[str, Any] = {"step": step, "__module__": __name__}
    methods.update({name: undecorated(getattr(optimizer_class, name)) for name in UNDECORATED})
    return type(optimizer_class.__name__, (optimizer_class,), methods)


# The trainer's four, under their own names here: pickle finds a class by module and name,
# as it finds torch's (an optimizer pickles as torch.optim's do, in any process).
SGD = lean(torch.optim.SGD)
Adam = lean(torch.optim.Adam)
AdamW = lean(torch.optim.AdamW)
RMSprop = lean(torch.optim.RMSprop)
