"""`siamese-lab search` against a search as users write it today, side by side in one call.

The peer (bench/peer_search.py): Optuna TPE + median pruner, optuna-integration's
MLflowCallback, a plain PyTorch loop. Ours: `siamese-lab search` with its defaults (the
seed baseline as trial 0, early stopping, curves, checkpoints, diagnosis, parent run). Same
pairs (written once to an .npz the peer reads), same trial count, epochs and pairs; each
arm is a fresh process with fresh stores, timed from start to exit; the arms alternate
over the rounds so a noisy neighbour hurts both alike. Prints each round, the ratio of the
median wall times, the best validation AUC each found and what each logged.

    python bench/bench_search_peer.py                 # 8 trials x 2 epochs x 1024 pairs
    python bench/bench_search_peer.py --rounds 1 --trials 2 --train-pairs 256   # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamese import DataConfig, prepare_data

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Logged:
    runs: int
    metric_points: int
    checkpoints: int
    models: int
    best_auc: float


def write_pairs(args: argparse.Namespace, path: Path) -> None:
    data = prepare_data(
        DataConfig(train_pairs=args.train_pairs, val_pairs=args.val_pairs, seed=args.seed)
    )
    arrays: dict[str, np.ndarray] = {}
    for name, split, pairs in (
        ("train", data.train, data.train_pairs),
        ("val", data.val, data.val_pairs),
    ):
        arrays[f"{name}_images"] = np.asarray(split.images, dtype=np.float32)
        arrays[f"{name}_left"], arrays[f"{name}_right"] = pairs.left, pairs.right
        arrays[f"{name}_labels"] = pairs.labels
    np.savez(path, **arrays)


def peer_command(args: argparse.Namespace, pairs: Path, folder: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bench" / "peer_search.py"),
        f"--pairs={pairs}",
        f"--tracking-uri=sqlite:///{folder / 'mlflow.db'}",
        f"--trials={args.trials}",
        f"--epochs={args.epochs}",
        f"--seed={args.seed}",
    ]


def ours_command(args: argparse.Namespace, folder: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "search.cli",
        "search",
        f"--home={folder}",
        f"--trials={args.trials}",
        f"--epochs={args.epochs}",
        f"--train-pairs={args.train_pairs}",
        f"--val-pairs={args.val_pairs}",
        f"--seed={args.seed}",
        "--device=cpu",
    ]


def timed(command: list[str], folder: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{command[1]} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    (folder / "output.txt").write_text(done.stdout + done.stderr)
    return seconds


def count_logged(uri: str, auc_metric: str) -> Logged:
    """What landed in the MLflow store: runs, metric points, checkpoint files, models."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=10_000)
    points = checkpoints = models = 0
    best = float("nan")
    for run in runs:
        for key in run.data.metrics:
            points += len(client.get_metric_history(run.info.run_id, key))
        checkpoints += len(client.list_artifacts(run.info.run_id, "checkpoints"))
        models += "siamese_lab.model_uri" in run.data.tags
        value = run.data.metrics.get(auc_metric)
        if value is not None and not value <= best:
            best = value
    return Logged(len(runs), points, checkpoints, models, best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-pairs", type=int, default=1024)
    parser.add_argument("--val-pairs", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pairs = root / "pairs.npz"
        write_pairs(args, pairs)
        times: dict[str, list[float]] = {"peer": [], "ours": []}
        last: dict[str, Path] = {}
        for round_ in range(args.rounds):
            arms = ["peer", "ours"] if round_ % 2 == 0 else ["ours", "peer"]
            for arm in arms:
                folder = root / f"{arm}-{round_}"
                folder.mkdir()
                command = (
                    peer_command(args, pairs, folder)
                    if arm == "peer"
                    else ours_command(args, folder)
                )
                times[arm].append(timed(command, folder))
                last[arm] = folder
            print(
                f"round {round_ + 1}: peer {times['peer'][-1]:.1f} s, "
                f"ours {times['ours'][-1]:.1f} s",
                flush=True,
            )
        report(args, times, last)


def report(args: argparse.Namespace, times: dict[str, list[float]], last: dict[str, Path]) -> None:
    peer, ours = statistics.median(times["peer"]), statistics.median(times["ours"])
    print(
        f"work: {args.trials} trials x {args.epochs} epochs x {args.train_pairs} train pairs, "
        f"{args.val_pairs} val pairs, digits, median pruner, {args.rounds} round(s)"
    )
    print(
        f"wall time (median): peer {peer:.1f} s, ours {ours:.1f} s, ratio ours/peer {ours / peer:.2f}x"
    )
    logged = {
        "peer": count_logged(f"sqlite:///{last['peer'] / 'mlflow.db'}", "val_auc"),
        "ours": count_logged(f"sqlite:///{last['ours'] / 'mlflow.db'}", "best_val_auc"),
    }
    for arm, what in logged.items():
        print(
            f"{arm}: best val_auc {what.best_auc:.4f}; logged {what.runs} runs, "
            f"{what.metric_points} metric points, {what.checkpoints} checkpoints, "
            f"{what.models} models"
        )


if __name__ == "__main__":
    main()
