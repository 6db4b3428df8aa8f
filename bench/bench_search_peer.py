"""`siamese-lab search` against a search as users write it today, side by side in one call.

The peer (bench/peer_search.py): Optuna TPE + median pruner, optuna-integration's
MLflowCallback, a plain PyTorch loop. Ours: `siamese-lab search` with its defaults (the
seed baseline as trial 0, early stopping, curves, checkpoints, diagnosis, parent run). Same
pairs (written once to an .npz the peer reads), same trial count, epochs and pairs; each
arm is a fresh process with fresh stores, timed from start to exit; the arms alternate
over the rounds so a noisy neighbour hurts both alike. Prints each round, the ratio of the
median wall times (and of CPU times: user and system seconds of each process), the best
validation AUC each found and what each logged; for ours also when its first trial started
after launch and what share of its trials' time went outside training (a trial's Optuna
start to end, less its epochs' time: training steps, the checks inside an epoch and the
validation pass that both arms pay).

    python bench/bench_search_peer.py                 # 8 trials x 2 epochs x 1024 pairs
    python bench/bench_search_peer.py --rounds 1 --trials 2 --train-pairs 256   # a smoke run
    git worktree add /tmp/before COMMIT && python bench/bench_search_peer.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import os
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


@dataclass
class Timing:
    wall: float  # seconds from start to exit
    cpu: float  # user + system seconds of the process
    launched: float  # time.time() at the start


def timed(command: list[str], folder: Path, cwd: Path = ROOT) -> Timing:
    before, launched, started = os.times(), time.time(), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    seconds, after = time.perf_counter() - started, os.times()
    if done.returncode != 0:
        sys.exit(f"{command[1]} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    (folder / "output.txt").write_text(done.stdout + done.stderr)
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return Timing(seconds, cpu, launched)


@dataclass
class Trials:
    first_start: float  # seconds from launch to the first trial's start
    wall: float  # the trials' time, start to end, summed
    training: float  # their epochs' time, summed


def our_trials(folder: Path, launched: float) -> Trials:
    """From our study (Optuna's journal: each trial's start and end) and its runs (MLflow:
    each epoch's `seconds`)."""
    import mlflow
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / "optuna-journal.log")))
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    wall = training = 0.0
    for trial in trials:
        if trial.datetime_start is None or trial.datetime_complete is None:
            continue
        wall += (trial.datetime_complete - trial.datetime_start).total_seconds()
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            training += sum(m.value for m in client.get_metric_history(run_id, "seconds"))
    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start is not None]
    return Trials(min(starts) - launched, wall, training)


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
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier commit: its `search` runs as a third arm, 'before'",
    )
    args = parser.parse_args()
    roots = {"ours": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pairs = root / "pairs.npz"
        write_pairs(args, pairs)
        names = ["peer", *roots]
        times: dict[str, list[Timing]] = {name: [] for name in names}
        trials: dict[str, list[Trials]] = {name: [] for name in roots}
        last: dict[str, Path] = {}
        for round_ in range(args.rounds):
            shift = round_ % len(names)  # each arm goes first in turn
            for arm in names[shift:] + names[:shift]:
                folder = root / f"{arm}-{round_}"
                folder.mkdir()
                command = (
                    peer_command(args, pairs, folder)
                    if arm == "peer"
                    else ours_command(args, folder)
                )
                times[arm].append(timed(command, folder, roots.get(arm, ROOT)))
                last[arm] = folder
                if arm in roots:
                    trials[arm].append(our_trials(folder, times[arm][-1].launched))
            print(f"round {round_ + 1}: " + "; ".join(_round(a, times, trials) for a in names))
        report(args, times, trials, last)


def _round(arm: str, times: dict[str, list[Timing]], trials: dict[str, list[Trials]]) -> str:
    now, peer = times[arm][-1], times["peer"][-1]
    line = f"{arm} {now.wall:.1f} s (cpu {now.cpu:.1f})"
    if arm in trials:
        mine = trials[arm][-1]
        outside = mine.wall - mine.training
        line += (
            f", {now.wall / peer.wall:.2f}x the peer, first trial at {mine.first_start:.1f} s, "
            f"outside training {outside:.1f} s of the trials' {mine.wall:.1f} s "
            f"({outside / mine.wall:.1%})"
        )
    return line


def report(
    args: argparse.Namespace,
    times: dict[str, list[Timing]],
    trials: dict[str, list[Trials]],
    last: dict[str, Path],
) -> None:
    print(
        f"work: {args.trials} trials x {args.epochs} epochs x {args.train_pairs} train pairs, "
        f"{args.val_pairs} val pairs, digits, median pruner, {args.rounds} round(s)"
    )
    wall = {arm: statistics.median(t.wall for t in done) for arm, done in times.items()}
    cpu = {arm: statistics.median(t.cpu for t in done) for arm, done in times.items()}
    for arm in trials:
        print(
            f"wall time (median): peer {wall['peer']:.1f} s, {arm} {wall[arm]:.1f} s, "
            f"ratio {arm}/peer {wall[arm] / wall['peer']:.2f}x; cpu time: peer "
            f"{cpu['peer']:.1f} s, {arm} {cpu[arm]:.1f} s, ratio {cpu[arm] / cpu['peer']:.2f}x"
        )
    for arm, done in trials.items():
        first = statistics.median(t.first_start for t in done)
        share = statistics.median((t.wall - t.training) / t.wall for t in done)
        print(
            f"{arm} (median): first trial started {first:.1f} s after launch; "
            f"outside training {share:.1%} of the trials' time"
        )
    for arm, folder in last.items():
        metric = "val_auc" if arm == "peer" else "best_val_auc"
        what = count_logged(f"sqlite:///{folder / 'mlflow.db'}", metric)
        print(
            f"{arm}: best val_auc {what.best_auc:.4f}; logged {what.runs} runs, "
            f"{what.metric_points} metric points, {what.checkpoints} checkpoints, "
            f"{what.models} models"
        )


if __name__ == "__main__":
    main()
