"""The CUDA path on the CPU: graph capture emulated, the CUDA calls patched (issue 10, part 1).

`FakeGraph` keeps a CUDA graph's contract: capturing records the step without running it,
and a replay runs the recorded step against the tensors that existed when it was recorded
(the addresses a real graph holds), with the gradients written afresh, whatever the runner's
attributes point to by then."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import MethodType
from typing import Any

import pytest
import torch
from torch import Tensor

from siamese import DataConfig, PairData, TrainConfig, fit, prepare_data, with_overrides
from siamese.model import build_model
from siamese.train import (
    Callback,
    EpochRecord,
    History,
    gpu,
    load_checkpoint,
    save_checkpoint,
    step,
)
from siamese.train.loop import _Run
from siamese.train.step import StepRunner, load_optimizer_state, make_optimizer

# Small: 8 steps an epoch at batch 16, so the graph is captured in epoch 1 and replayed after.
TINY = DataConfig(train_pairs=128, val_pairs=64)


@pytest.fixture(scope="module")
def tiny_data() -> PairData:
    return prepare_data(TINY)


def _tensors(owner: object) -> dict[str, Any]:
    """An object's tensor attributes and lists of tensors, as they are now."""
    return {
        name: value
        for name, value in vars(owner).items()
        if isinstance(value, Tensor)
        or (isinstance(value, list) and value and all(isinstance(v, Tensor) for v in value))
    }


class FakeGraph:
    def __init__(self, runner: StepRunner, step_fn: Callable[[], None]) -> None:
        self.runner, self.step_fn = runner, step_fn
        self.recorded = _tensors(runner)
        self.replays = 0

    def replay(self) -> None:
        current = _tensors(self.runner)
        vars(self.runner).update(self.recorded)
        try:
            # Captured with the gradients unset: a replay writes them, never adds to them.
            self.runner.optimizer.zero_grad(set_to_none=True)
            self.step_fn()
        finally:
            vars(self.runner).update(current)
        self.replays += 1


def fake_capture(step_fn: Callable[[], None], device: torch.device) -> FakeGraph:
    assert isinstance(step_fn, partial) and isinstance(step_fn.func, MethodType)
    runner = step_fn.func.__self__  # the runner's own step: replayed against its tensors
    assert isinstance(runner, StepRunner)
    return FakeGraph(runner, step_fn)


@pytest.fixture
def emulated_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps on the CPU go through the graph path, with FakeGraph for the CUDA graph."""
    monkeypatch.setattr(step, "uses_graph", lambda device: True)
    monkeypatch.setattr(gpu, "capture_graph", fake_capture)


def _config(**changes: Any) -> TrainConfig:
    # SGD: the same optimizer whether or not it is built for a graph (no capturable flag).
    values: dict[str, Any] = dict(
        head="abs", optimizer="sgd", lr=0.02, epochs=3, batch_size=16, device="cpu"
    )
    return TrainConfig(**{**values, **changes, "data": TINY})


def _trained(config: TrainConfig, data: PairData) -> _Run:
    run = _Run(config, data, [], None)
    run.measure_initial()
    run.loop()
    return run


# Defect 1: the statistics a captured step writes.


@pytest.mark.usefixtures("emulated_graphs")
def test_a_graphed_run_reports_the_statistics_of_every_epoch(tiny_data: PairData) -> None:
    """The graph captured in epoch 1 writes into the sums it was recorded with: replaced
    each epoch, they read back as zeros from epoch 2 on (train_loss 0, grad norms 0)."""
    graphed = _trained(_config(epochs=2), tiny_data)
    assert graphed.runner.path == "graph" and graphed.history.step_path == "graph"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step, "uses_graph", lambda device: False)
        eager = _trained(_config(epochs=2), tiny_data)
    assert eager.history.step_path == "eager: cpu"
    for ours, reference in zip(graphed.history.records, eager.history.records, strict=True):
        assert ours.train_loss > 0 and ours.update_ratio > 0 and ours.grad_norm["conv1"] > 0
        assert ours.train_loss == pytest.approx(reference.train_loss, rel=1e-4)
        assert ours.update_ratio == pytest.approx(reference.update_ratio, rel=1e-3)
        assert ours.grad_norm == pytest.approx(reference.grad_norm, rel=1e-3)


def test_the_sums_are_the_same_tensors_every_epoch(tiny_data: PairData) -> None:
    run = _Run(_config(), tiny_data, [], None)
    runner = run.runner
    before = [runner.loss_sum, runner.grad_sums, runner.ratio_sum, runner.stat_steps]
    runner.run(torch.arange(16))
    runner.reset_sums()
    after = [runner.loss_sum, runner.grad_sums, runner.ratio_sum, runner.stat_steps]
    assert all(a is b for a, b in zip(before, after, strict=True))
    assert all(float(t.abs().sum()) == 0 for t in after) and runner.steps == 0


# Defect 5: statistics sampled in a graph as well.


@pytest.mark.usefixtures("emulated_graphs")
@pytest.mark.parametrize("every", [1, 4])
def test_graphed_statistics_are_sampled_every_nth_step(tiny_data: PairData, every: int) -> None:
    run = _Run(_config(epochs=1), tiny_data, [], None)
    runner = StepRunner(run.model, run.optimizer, run.train, run.config, stats_every=every)
    steps = 12
    for index in range(steps):
        runner.run(torch.arange(16) + index)
    graphs = {k: v for k, v in runner.graphs.items() if isinstance(v, FakeGraph)}
    assert sorted(graphs) == ([True] if every == 1 else [False, True])
    replayed = range(step.GRAPH_WARMUP_STEPS, steps)
    assert sum(g.replays for g in graphs.values()) == len(replayed)
    assert graphs[True].replays == sum(1 for s in replayed if s % every == 0)
    assert float(runner.stat_steps) == len(range(0, steps, every))


# Defect 4: which path ran, and why.


def _failing_capture(step_fn: Callable[[], None], device: torch.device) -> gpu.Replayable:
    raise RuntimeError("emulated: operation not permitted when stream is capturing")


@pytest.fixture
def failing_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step, "uses_graph", lambda device: True)
    monkeypatch.setattr(gpu, "capture_graph", _failing_capture)


@pytest.mark.usefixtures("failing_capture")
def test_a_failed_capture_is_recorded_and_training_goes_on(tiny_data: PairData) -> None:
    with pytest.warns(UserWarning, match="capture failed"):
        result = fit(_config(epochs=2), tiny_data)
    path = result.history.step_path
    assert path.startswith("eager: capture failed: RuntimeError: emulated"), path
    assert [math.isfinite(r.train_loss) for r in result.history.records] == [True, True]
    assert History.from_dict(result.history.to_dict()).step_path == path


def test_a_history_without_a_step_path_still_loads() -> None:
    raw = History(config={}).to_dict()
    del raw["step_path"]  # written before step paths were recorded
    assert History.from_dict(raw).step_path == ""


# Defect 2: the run's device is current for the whole run.


def test_fit_runs_on_its_device_from_first_step_to_last_callback(
    monkeypatch: pytest.MonkeyPatch, tiny_data: PairData
) -> None:
    current: list[torch.device] = []
    seen: list[tuple[str, str | None]] = []

    @contextlib.contextmanager
    def scope(device: torch.device) -> Iterator[None]:
        current.append(device)
        try:
            yield
        finally:
            current.pop()

    def where(event: str) -> None:
        seen.append((event, str(current[-1]) if current else None))

    def capture(step_fn: Callable[[], None], device: torch.device) -> FakeGraph:
        where("capture")
        return fake_capture(step_fn, device)

    class Where(Callback):
        def on_fit_start(self, history: History) -> None:
            where("start")

        def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
            where("epoch")
            return None

        def on_fit_end(self, history: History) -> None:
            where("end")

    monkeypatch.setattr(gpu, "device_scope", scope)
    monkeypatch.setattr(gpu, "capture_graph", capture)
    monkeypatch.setattr(step, "uses_graph", lambda device: True)
    fit(_config(epochs=1), tiny_data, callbacks=[Where()])
    events = ["start", "capture", "capture", "epoch", "end"]  # two graphs: stats sampled
    assert seen == [(event, "cpu") for event in events] and not current


@contextlib.contextmanager
def _recorded(events: list[str], name: str, device: object = None) -> Iterator[None]:
    events.append(f"enter {name} {device}")
    yield
    events.append(f"leave {name}")


def test_a_cuda_device_is_current_inside_its_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "device", lambda d: _recorded(events, "device", d))
    with gpu.device_scope(torch.device("cuda:1")):
        events.append("run")
    with gpu.device_scope(torch.device("cpu")):  # nothing to make current
        events.append("cpu run")
    assert events == ["enter device cuda:1", "run", "leave device", "cpu run"]


class _NoGraph:
    def replay(self) -> None:
        raise AssertionError("a capture must not replay")

    def __str__(self) -> str:
        return "graph"


def test_a_graph_is_captured_on_the_runs_device(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d: events.append(f"sync {d}"))
    recorded = _NoGraph()
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: recorded)
    monkeypatch.setattr(torch.cuda, "device", lambda d: _recorded(events, "device", d))
    monkeypatch.setattr(torch.cuda, "graph", lambda g: _recorded(events, "capture", g))
    made = gpu.capture_graph(lambda: events.append("step"), torch.device("cuda:1"))
    assert made is recorded
    assert events == [
        "sync cuda:1",
        "enter device cuda:1",
        f"enter capture {recorded}",
        "step",
        "leave capture",
        "leave device",
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("cuda:1", ["cuda:1"]), ("cuda", []), ("auto", []), ("cpu", []), (None, [])],
)
def test_a_worker_makes_its_gpu_current(
    monkeypatch: pytest.MonkeyPatch, spec: str | None, expected: list[str]
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(str(d)))
    gpu.make_current(spec)
    assert calls == expected


# Defect 3: an optimizer state saved on one device, resumed on another.


def _stepped(config: TrainConfig, capturable: bool = False) -> tuple[Any, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = make_optimizer(config, list(model.parameters()), capturable=capturable)
    _step(model, optimizer)
    return model, optimizer


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    torch.stack([p.square().sum() for p in model.parameters()]).sum().backward()
    optimizer.step()


def _as_on_a_gpu(state: dict[str, Any]) -> dict[str, Any]:
    """The state a CUDA run saves: its groups capturable, not fused or foreach."""
    for group in state["param_groups"]:
        group.update({"capturable": True, "fused": None, "foreach": None})
    return state


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop"])
def test_a_gpu_optimizer_state_steps_on_the_cpu(name: str) -> None:
    config = TrainConfig(optimizer=name, lr=1e-3, device="cpu")
    model, optimizer = _stepped(config)
    saved = _as_on_a_gpu(optimizer.state_dict())
    ours = make_optimizer(config, list(model.parameters()), capturable=False)
    load_optimizer_state(ours, saved)
    assert not any(group.get("capturable") for group in ours.param_groups)
    _step(model, ours)  # was: AssertionError: If capturable=True, params and state_steps ...


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_a_cpu_optimizer_state_is_capturable_on_a_gpu(name: str) -> None:
    config = TrainConfig(optimizer=name, lr=1e-3, device="cpu")
    model, optimizer = _stepped(config)
    assert any(g.get("fused") or g.get("foreach") for g in optimizer.param_groups)
    ours = make_optimizer(config, list(model.parameters()), capturable=True)  # a GPU's
    wanted = [{k: g.get(k) for k in step.DEVICE_FLAGS} for g in ours.param_groups]
    load_optimizer_state(ours, optimizer.state_dict())
    assert [{k: g.get(k) for k in step.DEVICE_FLAGS} for g in ours.param_groups] == wanted
    assert ours.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_a_gpu_checkpoint_resumes_on_the_cpu(tmp_path: Path, tiny_data: PairData) -> None:
    config = _config(optimizer="adam", lr=1e-3, epochs=1)
    fit(config, tiny_data, checkpoint_dir=tmp_path)
    payload = load_checkpoint(tmp_path / "last.pt")
    _as_on_a_gpu(payload["optimizer"])
    payload["config"]["device"] = "cuda"
    save_checkpoint(tmp_path / "last.pt", payload)
    resumed = fit(with_overrides(config, epochs=2), tiny_data, resume_from=tmp_path / "last.pt")
    assert [r.epoch for r in resumed.history.records] == [1, 2]
    assert math.isfinite(resumed.history.records[-1].train_loss)
