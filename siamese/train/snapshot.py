"""A copy of a run's state that training cannot change, for the epoch a lean keeper holds
between writes (siamese.train.keeper).

Its tensors may go into those of a copy no longer needed (`into`, kept in `Spares`): a
search trial takes one such copy per epoch (23 MB: the weights and the optimizer's state),
and fresh allocations of that size cost page faults, not just the memcpy (deepcopy took 5-7
ms a copy inside a search, a copy into the last one's tensors 1-2 ms; bench/RESULTS.md)."""

from __future__ import annotations

import copy
import threading
from typing import Any, NamedTuple

import torch

_IMMUTABLE = (str, bytes, int, float, bool, type(None))


def snapshot(value: Any, into: Any = None) -> Any:
    """`value` with a copy of every tensor it holds (dicts, lists and tuples copied too, so
    none of it is shared with the live state). A tensor of `into` at the same place, of the
    same shape, dtype and device, receives the copy instead of a new one: `into` must be a
    snapshot nothing else uses any more. Tensors shared within `value` stay shared, and a
    tensor of `into` receives one copy at most."""
    return _copy(value, into, _Memo({}, set()))


class _Memo(NamedTuple):
    copied: dict[int, torch.Tensor]  # id of a tensor of `value` -> its copy
    used: set[int]  # ids of the tensors of `into` that hold a copy already


def _copy(value: Any, into: Any, memo: _Memo) -> Any:
    if isinstance(value, torch.Tensor):
        return _copy_tensor(value, into, memo)
    if isinstance(value, dict):
        spare = into if isinstance(into, dict) else {}
        return {key: _copy(item, spare.get(key), memo) for key, item in value.items()}
    if isinstance(value, list | tuple):
        same_length = isinstance(into, list | tuple) and len(into) == len(value)
        spares = into if same_length else [None] * len(value)
        items = [_copy(item, spare, memo) for item, spare in zip(value, spares, strict=True)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, _IMMUTABLE):
        return value
    return copy.deepcopy(value)


def _copy_tensor(value: torch.Tensor, into: Any, memo: _Memo) -> torch.Tensor:
    if id(value) in memo.copied:
        return memo.copied[id(value)]
    source = value.detach()
    if _fits(into, source) and id(into) not in memo.used:
        memo.used.add(id(into))
        result = into.copy_(source)
    else:
        result = source.clone()
    memo.copied[id(value)] = result
    return result


def _fits(into: Any, source: torch.Tensor) -> bool:
    return (
        isinstance(into, torch.Tensor)
        and into.shape == source.shape
        and into.dtype == source.dtype
        and into.device == source.device
        and into.layout == torch.strided == source.layout
        and not into.requires_grad
        and into.data_ptr() != source.data_ptr()
    )


class Spares:
    """A snapshot nothing uses any more, for the next one to copy into. One is enough: a
    search's trials run one after another in a process, so each trial's copy goes into the
    tensors of the trial before's. It stays in memory meanwhile (23 MB for this network)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: Any = None

    def give(self, payload: Any) -> None:
        """`payload` is spent: nothing reads or keeps it from here on."""
        with self._lock:
            self._spent = payload

    def take(self) -> Any:
        """The spent snapshot (None if there is none), which is then the caller's alone."""
        with self._lock:
            spent, self._spent = self._spent, None
            return spent


# The process's: every keeper gives to and takes from it (siamese.train.keeper).
SPENT = Spares()
