"""What tracking costs a user at the command line: `siamese-lab train` against
`siamese-lab train --no-track`, each a fresh process, alternating, median of the rounds.

Unlike bench_tracking.py (one process, warm), this includes what a tracked process pays once:
importing MLflow and its SQLite store, and the first torch.export and requirement scan of
the model it logs. The home folder's MLflow store is created by an untimed first run, as it
is once per machine.

    python bench/bench_tracking_cli.py --rounds 3
    python bench/bench_tracking_cli.py --rounds 3 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_train(home: Path, extra: list[str]) -> float:
    command = [sys.executable, "-m", "search.cli", "train", "--device", "cpu", *extra]
    env = {**os.environ, "SIAMESE_LAB_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-tracking-cli-"))
    run = ["--epochs", str(args.epochs)]
    timed_train(home, run)  # creates the MLflow store in the home folder: once per machine
    plain: list[float] = []
    tracked: list[float] = []
    for _ in range(args.rounds):
        plain.append(timed_train(home, [*run, "--no-track"]))
        tracked.append(timed_train(home, run))
    untracked_s, tracked_s = statistics.median(plain), statistics.median(tracked)
    print(
        json.dumps(
            {
                "epochs": args.epochs,
                "rounds": args.rounds,
                "untracked_s": round(untracked_s, 2),
                "tracked_s": round(tracked_s, 2),
                "overhead_s": round(tracked_s - untracked_s, 2),
                "overhead_pct": round(100 * (tracked_s / untracked_s - 1), 1),
                "untracked_rounds_s": [round(t, 1) for t in plain],
                "tracked_rounds_s": [round(t, 1) for t in tracked],
            }
        )
    )


if __name__ == "__main__":
    main()
