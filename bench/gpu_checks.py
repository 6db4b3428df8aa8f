"""The GPU checks: the trainer's CUDA path run for real (issue 10), as plain functions.

They need nothing but python3 and the core's own dependencies (torch, numpy, scikit-learn,
pillow): no pytest, optuna or mlflow, and the project need not be installed:

    PYTHONPATH=. python3 bench/gpu_checks.py

`tests/siamese/test_cuda.py` runs the same functions under pytest (marked gpu). Without CUDA
they run on the CPU with tiny sizes, so the script itself can be tested anywhere; a check
that needs a GPU then says it was skipped. Each check returns one line saying what it saw,
or raises AssertionError saying what went wrong. The exit status is 1 when one failed.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from siamese import DataConfig, PairData, TrainConfig, diagnose, fit, prepare_data
from siamese.config import OPTIMIZERS, SEED_PRESET
from siamese.train import Callback, EpochRecord, History, load_checkpoint, step
from siamese.train.loop import _Run
from siamese.train.population import fit_population
from siamese.train.population_step import PopulationStep

GPU_DATA = DataConfig(task="same-class", train_pairs=2048, val_pairs=512)
# On the CPU: small enough to run in seconds, big enough that the graph path (emulated
# nowhere here: the CPU trains eagerly) still sees several steps an epoch.
CPU_DATA = DataConfig(task="same-class", train_pairs=128, val_pairs=64)


@dataclass(frozen=True)
class Setup:
    device: str  # "cuda" or "cpu"
    data: PairData
    data_config: DataConfig
    batch_size: int
    epochs: int

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def expected_path(self) -> str:
        return "graph" if self.cuda else "eager: cpu"

    def config(self, **changes: Any) -> TrainConfig:
        values: dict[str, Any] = {"head": "abs", "lr": 1e-3, "epochs": self.epochs}
        values.update(batch_size=self.batch_size, device=self.device)
        return TrainConfig(**{**values, **changes, "data": self.data_config})


def make_setup(device: str | None = None) -> Setup:
    """CUDA when present (the real sizes), else the CPU with tiny ones."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        return Setup(device, prepare_data(GPU_DATA), GPU_DATA, batch_size=32, epochs=3)
    return Setup(device, prepare_data(CPU_DATA), CPU_DATA, batch_size=16, epochs=2)


@contextlib.contextmanager
def stats_every(n: int) -> Iterator[None]:
    """The trainer's statistics sampled every `n`th step while inside (1: every step)."""
    before, step.STATS_EVERY = step.STATS_EVERY, n
    try:
        yield
    finally:
        step.STATS_EVERY = before


def _trained(setup: Setup, **changes: Any) -> History:
    run = _Run(setup.config(**changes), setup.data, [], None)
    run.measure_initial()
    run.loop()
    assert run.train.images.device.type == torch.device(setup.device).type
    return run.history


def _statistics_in_every_epoch(history: History) -> None:
    """The sums a captured step writes are read back in every epoch, not zeros from the
    second on (issue 10, defect 1)."""
    for r in history.records:
        assert math.isfinite(r.train_loss) and r.train_loss > 0, f"epoch {r.epoch}: {r}"
        zero = sorted(layer for layer, norm in r.grad_norm.items() if not norm > 0)
        assert not zero, f"epoch {r.epoch}: gradient norms of {zero} are {r.grad_norm}"
        assert r.update_ratio > 0, f"epoch {r.epoch}: update ratio {r.update_ratio}"


def check_graph_learns_with_statistics(setup: Setup) -> str:
    history = _trained(setup)
    path = history.step_path
    assert path == setup.expected_path, f"steps ran as {path!r}, not {setup.expected_path!r}"
    _statistics_in_every_epoch(history)
    best = max(r.val_auc for r in history.records)
    if setup.cuda:
        assert best > 0.85, f"best val_auc {best:.3f}"
        assert diagnose(history).verdict == "converged", diagnose(history).kinds
    epochs = len(history.records)
    return f"steps: {path}; statistics in all {epochs} epochs; best val_auc {best:.3f}"


def check_sampled_statistics_agree(setup: Setup) -> str:
    """Statistics on every step and on every 4th measure the same run (defect 5): the
    step with statistics and the one without are two graphs of the same update."""
    with stats_every(1):
        every = _trained(setup, epochs=2)
    with stats_every(4):
        sampled = _trained(setup, epochs=2)
    for history in (every, sampled):
        assert history.step_path == setup.expected_path, history.step_path
        _statistics_in_every_epoch(history)
    for a, b in zip(every.records, sampled.records, strict=True):
        assert math.isclose(a.train_loss, b.train_loss, rel_tol=0.05), (a.train_loss, b.train_loss)
        ratio = b.update_ratio / a.update_ratio
        assert 0.5 < ratio < 2, (
            f"epoch {a.epoch}: update ratio {b.update_ratio} vs {a.update_ratio}"
        )
    return f"steps: {sampled.step_path}; every step and every 4th agree over 2 epochs"


def check_every_optimizer(setup: Setup) -> str:
    paths = []
    for name in OPTIMIZERS:
        lr = 1e-2 if name == "sgd" else 1e-3
        history = fit(setup.config(optimizer=name, lr=lr, epochs=1), setup.data).history
        assert history.step_path == setup.expected_path, f"{name}: steps ran as {history.step_path}"
        assert math.isfinite(history.records[0].train_loss), f"{name}: {history.records[0]}"
        paths.append(f"{name} {history.step_path}")
    return "; ".join(paths)


def check_seed_preset_still_fails(setup: Setup) -> str:
    history = fit(setup.config(**{**SEED_PRESET, "epochs": 2}), setup.data).history
    verdict = diagnose(history)
    assert verdict.failed, verdict.kinds
    if setup.cuda:  # its statistics are read on a GPU too: the update ratio shows the stall
        assert {"collapsed", "stalled"} <= set(verdict.kinds), verdict.kinds
    return f"steps: {history.step_path}; diagnosed {verdict.kinds}"


def check_resume_across_devices(setup: Setup) -> str:
    """A GPU checkpoint resumes on the CPU, and a CPU one on the GPU in a graph (defect 3)."""
    if not setup.cuda:
        return "skipped: no CUDA"
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for first, then in ((setup.device, "cpu"), ("cpu", setup.device)):
            folder = Path(tmp) / f"{first}-to-{then}".replace(":", "")
            config = setup.config(optimizer="adam", epochs=1, device=first)
            fit(config, setup.data, checkpoint_dir=folder)
            again = replace(config, epochs=2, device=then)
            history = fit(again, setup.data, resume_from=folder / "last.pt").history
            wanted = "eager: cpu" if then == "cpu" else "graph"
            assert history.step_path == wanted, f"{first} -> {then}: {history.step_path}"
            assert [r.epoch for r in history.records] == [1, 2]
            _statistics_in_every_epoch(history)
            done.append(f"{first} -> {then}: {history.step_path}")
    return "; ".join(done)


class _CurrentDevice(Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        self.seen.append(torch.cuda.current_device())
        return None


def check_the_runs_gpu_is_current(setup: Setup) -> str:
    """`--device cuda:N`: GPU N is current for the whole run, its capture included
    (defect 2); the last GPU here, so that on a machine with several it is not GPU 0."""
    if not setup.cuda:
        return "skipped: no CUDA"
    index = torch.cuda.device_count() - 1
    before = torch.cuda.current_device()
    seen = _CurrentDevice()
    config = setup.config(epochs=2, device=f"cuda:{index}")
    history = fit(config, setup.data, callbacks=[seen]).history
    assert seen.seen == [index, index], f"current device during the run: {seen.seen}"
    assert history.step_path == "graph", history.step_path
    assert torch.cuda.current_device() == before, "the run left its device current"
    return f"cuda:{index} current in every epoch; steps: {history.step_path}"


@contextlib.contextmanager
def interrupted_after(steps: int) -> Iterator[None]:
    """Ctrl-C, as the population's step number `steps` ends (its weights already moved)."""
    real_run, taken = PopulationStep.run, [0]

    def run(self: PopulationStep, batch_indices: torch.Tensor) -> None:
        real_run(self, batch_indices)
        taken[0] += 1
        if taken[0] == steps:
            raise KeyboardInterrupt

    PopulationStep.run = run  # type: ignore[method-assign]
    try:
        yield
    finally:
        PopulationStep.run = real_run  # type: ignore[method-assign]


def check_population_ctrl_c_keeps_each_last_epoch(setup: Setup) -> str:
    """Ctrl-C in a population's third epoch, with no file due: each member's last.pt holds
    its second epoch (copied on the device as each epoch ends), to the weights an
    uninterrupted two-epoch population ends with."""
    # SGD: a step moves the weights in proportion to their gradient, so the GPU's reordered
    # sums stay ~1e-6 apart, where Adam moves a weight with a noise gradient a whole step.
    sgd = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "dropout": 0.0, "epochs": 3}
    configs = [setup.config(seed=s, **sgd) for s in (1, 2)]
    steps = setup.data_config.train_pairs // setup.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        cut = [Path(tmp) / f"cut-{k}" for k in range(2)]
        whole = [Path(tmp) / f"whole-{k}" for k in range(2)]
        with interrupted_after(2 * steps + 1), contextlib.suppress(KeyboardInterrupt):
            fit_population(configs, setup.data, None, cut, checkpoint_every_s=None)
            raise AssertionError("the population was not interrupted")
        two = [replace(c, epochs=2) for c in configs]
        fit_population(two, setup.data, None, whole, checkpoint_every_s=None)
        worst = 0.0
        for kept_in, ended_in in zip(cut, whole, strict=True):
            kept, ended = (
                load_checkpoint(kept_in / "last.pt"),
                load_checkpoint(ended_in / "last.pt"),
            )
            assert kept["epoch"] == ended["epoch"] == 2, (kept["epoch"], ended["epoch"])
            for name, tensor in ended["model"].items():
                # One more step (epoch 3's first) moves the fc weights ~1e-3 of their norm.
                gap = float((kept["model"][name] - tensor).norm() / tensor.norm().clamp_min(1e-12))
                assert gap <= 1e-4, f"{name}: {gap:.1e} of its norm apart"
                worst = max(worst, gap)
    return f"both members' last.pt at epoch 2 (weights at most {worst:.1e} of their norm apart)"


CHECKS: list[Callable[[Setup], str]] = [
    check_graph_learns_with_statistics,
    check_sampled_statistics_agree,
    check_every_optimizer,
    check_seed_preset_still_fails,
    check_resume_across_devices,
    check_the_runs_gpu_is_current,
    check_population_ctrl_c_keeps_each_last_epoch,
]


def run_checks(setup: Setup) -> list[str]:
    """Every check, each reported whole (a failure with its full traceback); the names of
    those that failed."""
    failed = []
    for check in CHECKS:
        started = time.perf_counter()
        try:
            line = check(setup)
        except Exception:
            failed.append(check.__name__)
            print(f"FAIL {check.__name__} ({time.perf_counter() - started:.1f} s)", flush=True)
            traceback.print_exc(file=sys.stdout)
            continue
        status = "SKIP" if line.startswith("skipped") else "PASS"
        print(
            f"{status} {check.__name__} ({time.perf_counter() - started:.1f} s): {line}", flush=True
        )
    return failed


def describe(device: str) -> str:
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    return f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when present)")
    setup = make_setup(parser.parse_args().device)
    sizes = f"{setup.data_config.train_pairs} pairs, batch {setup.batch_size}"
    print(f"gpu checks on {setup.device} ({describe(setup.device)}; {sizes})", flush=True)
    failed = run_checks(setup)
    print(f"gpu checks: {len(failed)} of {len(CHECKS)} failed {failed or ''}".rstrip())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
