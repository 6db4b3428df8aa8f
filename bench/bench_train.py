"""Trainer throughput against a plain seed-style loop, side by side in one process.

The plain loop is the original's style: a CPU Dataset/DataLoader of pairs, `.to(device)` per
batch, `loss.item()` every step, one validation pass per epoch. Ours is `siamese.fit` (data
resident on the device, statistics kept on the device, CUDA graph on a GPU, and with
`--precision auto`, its default, bf16 autocast where the chip computes bf16 natively; the
plain loop stays float32: `--precision fp32` compares like with like). Both train the
same network on the same pairs; the arms alternate over several rounds and the best round of
each is compared, so a noisy neighbour hurts both alike. Prints pairs/s and the ratio.

    python bench/bench_train.py                       # CPU
    python bench/bench_train.py --precision fp32      # both arms in float32
    python bench/bench_train.py --device cuda --pairs 16384
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import DataLoader, Dataset

from siamese import DataConfig, PairData, TrainConfig, fit, prepare_data
from siamese.config import PRECISIONS
from siamese.model import SiameseNet
from siamese.train.precision import resolve_precision


class PairDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    def __init__(self, images: torch.Tensor, left, right, labels) -> None:  # type: ignore[no-untyped-def]
        self.images, self.left, self.right, self.labels = images, left, right, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[self.left[i]], self.images[self.right[i]], self.labels[i]


def plain_loop(config: TrainConfig, data: PairData, device: torch.device) -> float:
    """Seconds for config.epochs epochs of the seed-style loop (train + validation)."""
    torch.manual_seed(config.seed)
    model = SiameseNet(config.head, config.dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def loader(split, pairs, shuffle: bool) -> DataLoader:  # type: ignore[no-untyped-def]
        dataset = PairDataset(
            torch.as_tensor(split.images),
            torch.as_tensor(pairs.left),
            torch.as_tensor(pairs.right),
            torch.as_tensor(pairs.labels),
        )
        return DataLoader(dataset, batch_size=config.batch_size, shuffle=shuffle, drop_last=shuffle)

    train, val = loader(data.train, data.train_pairs, True), loader(data.val, data.val_pairs, False)
    started = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        for left, right, same in train:
            left, right, same = left.to(device), right.to(device), same.to(device)
            optimizer.zero_grad()
            loss = model.loss(model(left, right), same)
            loss.backward()
            optimizer.step()
            _ = loss.item()
        model.eval()
        with torch.no_grad():
            for left, right, same in val:
                out = model(left.to(device), right.to(device))
                _ = model.loss(out, same.to(device)).item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def ours(config: TrainConfig, data: PairData) -> float:
    started = time.perf_counter()
    fit(config, data)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="fit's; the plain loop's is fp32"
    )
    args = parser.parse_args()
    data_config = DataConfig(task="same-class", train_pairs=args.pairs, val_pairs=512)
    config = TrainConfig(
        head="abs",
        lr=1e-3,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        data=data_config,
    )
    data = prepare_data(data_config)
    device = torch.device(args.device)
    ours(config, data)  # warm-up: allocator, kernels, CUDA graph
    plain, mine = [], []
    for _ in range(args.rounds):
        plain.append(plain_loop(config, data, device))
        mine.append(ours(config, data))
    trained = args.pairs // args.batch_size * args.batch_size * args.epochs
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "pairs_per_epoch": args.pairs,
        "epochs": args.epochs,
        "plain_pairs_per_s": round(trained / min(plain)),
        "ours_pairs_per_s": round(trained / min(mine)),
        "ratio_ours_over_plain": round(min(plain) / min(mine), 3),
        "ours_precision": resolve_precision(args.precision, device),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
