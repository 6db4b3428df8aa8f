"""K trials as K sequential `fit` calls against one population of K, side by side in one call.

Both arms train the same K configs (seeds and learning rates differ) on the same pairs, with
validation every epoch; they alternate over the rounds and the best round of each is
compared, so a noisy neighbour hurts both alike. Prints one JSON line per K: pairs/s of each
arm (training pairs of all K members over the wall time), their ratio, and the path the
population's steps took (graph or eager) and how (vmapped or member by member).

    python bench/bench_population.py                          # CPU, tiny: K = 1, 4, 8
    python bench/bench_population.py --vmapped                # the GPU's program, on the CPU
    python bench/bench_population.py --device cuda --pairs 2048 --ks 1,8,32,128 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from siamese import DataConfig, PairData, TrainConfig, fit, prepare_data
from siamese.train.population import Population


def members(base: TrainConfig, k: int) -> list[TrainConfig]:
    return [replace(base, seed=i, lr=base.lr * (1 + i % 4) / 2) for i in range(k)]


def sequential(configs: list[TrainConfig], data: PairData) -> float:
    started = time.perf_counter()
    for config in configs:
        fit(config, data)
    return time.perf_counter() - started


def population(
    configs: list[TrainConfig], data: PairData, vmapped: bool | None
) -> tuple[float, str]:
    started = time.perf_counter()
    trained = Population(
        configs, data, [[] for _ in configs], [None] * len(configs), vmapped=vmapped
    )
    results = trained.run()
    return time.perf_counter() - started, results[0].history.step_path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ks", default="1,4,8", help="population sizes, comma-separated")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--val-pairs", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vmapped", action="store_true", help="one vmapped program on the CPU too")
    args = parser.parse_args()
    data_config = DataConfig(train_pairs=args.pairs, val_pairs=args.val_pairs)
    base = TrainConfig(
        head="abs",
        lr=1e-3,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        data=data_config,
    )
    data = prepare_data(data_config)
    vmapped = True if args.vmapped else None
    device = torch.device(args.device)
    population(members(base, 1), data, vmapped)  # warm-up: allocator, kernels, graph
    for k in (int(x) for x in args.ks.split(",")):
        configs = members(base, k)
        plain, ours, path = [], [], ""
        for _ in range(args.rounds):
            plain.append(sequential(configs, data))
            seconds, path = population(configs, data, vmapped)
            ours.append(seconds)
        trained = k * (args.pairs // args.batch_size) * args.batch_size * args.epochs
        print(
            json.dumps(
                {
                    "device": torch.cuda.get_device_name(device)
                    if device.type == "cuda"
                    else "cpu",
                    "threads": torch.get_num_threads(),
                    "k": k,
                    "pairs_per_epoch": args.pairs,
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "sequential_pairs_per_s": round(trained / min(plain)),
                    "population_pairs_per_s": round(trained / min(ours)),
                    "ratio_population_over_sequential": round(min(plain) / min(ours), 3),
                    "population_path": path,
                    "population_program": "vmapped"
                    if (vmapped or device.type == "cuda")
                    else "member by member",
                    "torch": torch.__version__,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
