"""The trainer's CUDA-only calls, each behind a small seam: a CPU test patches or emulates
them (DESIGN.md: GPU code must be testable without a GPU), and nothing else in the trainer
calls `torch.cuda` for the device, the graph or a synchronisation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import torch


class Replayable(Protocol):
    """What a captured step is to the trainer: something to replay (a `torch.cuda.CUDAGraph`,
    or a CPU test's emulation of one)."""

    def replay(self) -> None: ...


def device_scope(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """`device` current for everything inside: `torch.cuda.graph` captures on the *current*
    device, and its side stream, autocast and index-less tensors use it too. Without this a
    run on cuda:1 would start its capture on GPU 0, fail, and train eagerly."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def make_current(spec: str | None) -> None:
    """A local worker's GPU as its process's current device, before anything touches CUDA,
    so that the worker never opens a context on GPU 0 next to the one it trains on."""
    if spec is not None and spec.startswith("cuda:"):  # not None, auto, cpu or plain cuda
        torch.cuda.set_device(torch.device(spec))


def capture_graph(step: Callable[[], None], device: torch.device) -> Replayable:
    """`step` recorded as a CUDA graph on `device` (recorded, not run). Its own memory pool:
    the tensors it allocates while capturing stay its own, whatever else is captured."""
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device), torch.cuda.graph(graph):
        step()
    return graph
