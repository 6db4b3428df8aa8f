"""Training throughput side by side in one process, each line saying which path its steps
took: the seed-style loop, `fit` eager, `fit` with its CUDA graph (statistics sampled every
4th step, and on every step: what the statistics cost), and a population of K trials.

    PYTHONPATH=. python3 bench/bench_gpu.py              # CUDA when present, else tiny CPU sizes

Needs torch, numpy, scikit-learn and pillow only. The arms alternate over the rounds and the
best round of each counts, so a noisy neighbour hurts them alike. Pairs/s counts every pair
trained (K members x pairs for a population) over the whole run, validation included, as
`bench/bench_train.py` does; the ratio is against the seed-style loop.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch

from bench.bench_train import plain_loop
from siamese import DataConfig, PairData, TrainConfig, fit, prepare_data
from siamese.train import step

# An arm: trains once, returns (seconds, pairs trained, the path its steps took).
Arm = Callable[[], tuple[float, int, str]]


@dataclass(frozen=True)
class Sizes:
    pairs: int
    epochs: int
    batch_size: int
    rounds: int
    population: tuple[int, ...]  # K values
    population_pairs: int  # per member: K x a big epoch would take minutes
    val_pairs: int


GPU_SIZES = Sizes(8192, 2, 32, 3, (1, 8, 32, 128), 2048, 512)
CPU_SIZES = Sizes(256, 1, 16, 1, (1, 2, 4), 128, 64)  # tiny: the script's own test


@contextlib.contextmanager
def trainer_settings(graphs: bool = True, stats_every: int = step.STATS_EVERY) -> Iterator[None]:
    before = step.GRAPHS_ENABLED, step.STATS_EVERY
    step.GRAPHS_ENABLED, step.STATS_EVERY = graphs, stats_every
    try:
        yield
    finally:
        step.GRAPHS_ENABLED, step.STATS_EVERY = before


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trained_pairs(config: TrainConfig) -> int:
    return config.data.train_pairs // config.batch_size * config.batch_size * config.epochs


def seed_loop_arm(config: TrainConfig, data: PairData) -> Arm:
    def arm() -> tuple[float, int, str]:
        seconds = plain_loop(config, data, torch.device(config.device))
        return seconds, _trained_pairs(config), "eager (DataLoader, .to per batch, .item per step)"

    return arm


def fit_arm(config: TrainConfig, data: PairData, graphs: bool, stats_every: int) -> Arm:
    def arm() -> tuple[float, int, str]:
        with trainer_settings(graphs, stats_every):
            started = time.perf_counter()
            history = fit(config, data).history
            _synchronize(torch.device(config.device))
        return time.perf_counter() - started, _trained_pairs(config), history.step_path

    return arm


def population_arm(config: TrainConfig, data: PairData, k: int) -> Arm:
    from siamese.train.population import fit_population

    # Each member its own trial: own seed and learning rate, as a search would ask for.
    configs = [replace(config, seed=i, lr=config.lr * (0.5 + i / max(k, 1))) for i in range(k)]

    def arm() -> tuple[float, int, str]:
        started = time.perf_counter()
        results = fit_population(configs, data, checkpoint_every_s=None)
        _synchronize(torch.device(config.device))
        return (
            time.perf_counter() - started,
            k * _trained_pairs(config),
            results[0].history.step_path,
        )

    return arm


def run_rounds(arms: list[tuple[str, Arm]], rounds: int) -> dict[str, tuple[float, str]]:
    """Label -> (pairs/s of its best round, its step path). The arms take turns in every
    round; the first round also warms kernels, the allocator and the graphs."""
    runs: dict[str, list[tuple[float, int, str]]] = {label: [] for label, _ in arms}
    for index in range(rounds):
        for label, arm in arms:
            runs[label].append(arm())
        print(f"round {index + 1} of {rounds} done", flush=True)
    best = {label: min(results) for label, results in runs.items()}
    return {label: (pairs / seconds, path) for label, (seconds, pairs, path) in best.items()}


def _arms(device: str, sizes: Sizes) -> list[tuple[str, Arm]]:
    data_config = DataConfig(task="same-class", train_pairs=sizes.pairs, val_pairs=sizes.val_pairs)
    config = TrainConfig(
        head="abs", lr=1e-3, epochs=sizes.epochs, batch_size=sizes.batch_size, device=device
    )
    config = replace(config, data=data_config)
    data = prepare_data(data_config)
    every = step.STATS_EVERY
    return [
        ("seed-style loop", seed_loop_arm(config, data)),
        ("fit eager", fit_arm(config, data, graphs=False, stats_every=every)),
        (f"fit graph, statistics every {every}th step", fit_arm(config, data, True, every)),
        ("fit graph, statistics every step", fit_arm(config, data, True, 1)),
    ]


def _population_arms(device: str, sizes: Sizes) -> list[tuple[str, Arm]]:
    pairs, val_pairs = sizes.population_pairs, sizes.val_pairs
    data_config = DataConfig(task="same-class", train_pairs=pairs, val_pairs=val_pairs)
    config = TrainConfig(head="abs", lr=1e-3, epochs=1, batch_size=sizes.batch_size, device=device)
    config = replace(config, data=data_config)
    data = prepare_data(data_config)
    return [(f"population K={k}", population_arm(config, data, k)) for k in sizes.population]


def _print(measured: dict[str, tuple[float, str]], plain: float) -> None:
    for label, (rate, path) in measured.items():
        print(f"{label:<40} {rate:>9.0f} pairs/s  {rate / plain:5.2f}x  path: {path}", flush=True)


def _populations(device: str, sizes: Sizes, rounds: int) -> dict[str, tuple[float, str]]:
    """The population lines; a failure there is printed whole and leaves the lines above."""
    if importlib.util.find_spec("siamese.train.population") is None:
        print("population: not available (no siamese/train/population.py)")
        return {}
    print(f"population: {sizes.population_pairs} pairs x 1 epoch per member", flush=True)
    try:
        return run_rounds(_population_arms(device, sizes), rounds)
    except Exception:
        print("population: FAILED")
        traceback.print_exc(file=sys.stdout)
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when present)")
    parser.add_argument("--rounds", type=int, help="rounds per arm (default: 3 on a GPU)")
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = GPU_SIZES if device.startswith("cuda") else CPU_SIZES
    rounds = args.rounds or sizes.rounds
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    print(
        f"pairs/s on {device} ({name}, torch {torch.__version__}): {sizes.pairs} pairs x "
        f"{sizes.epochs} epoch(s) at batch {sizes.batch_size}, best of {rounds} round(s)",
        flush=True,
    )
    measured = run_rounds(_arms(device, sizes), rounds)
    plain = measured["seed-style loop"][0]
    _print(measured, plain)
    populations = _populations(device, sizes, rounds)
    _print(populations, plain)
    summary = {label: round(rate) for label, (rate, _) in {**measured, **populations}.items()}
    print(json.dumps({"device": name, "torch": torch.__version__, "pairs_per_s": summary}))
    failed = importlib.util.find_spec("siamese.train.population") is not None and not populations
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
