"""How long the read-only commands take at the command line (issue 11, item 4: under 2 s):
each a fresh process, several times, best and median wall time per command.

Without --home it first makes a small home the way a user would (untimed): a 4-trial,
1-epoch search, `promote --study`, and `data export` for the pairs `predict` scores.
`--before DIR` runs the same commands from another checkout of the project (e.g. an older
commit, `git archive COMMIT | tar -x -C DIR`), alternating with this one, so both see the
same load; a command runs from the checkout it is timed for (the current directory comes
first on sys.path). One row is not read-only, for comparison: `promote --run` registering a
new model (`bench-TIME-ROUND-ARM`) in the home each round.

    python bench/bench_readonly.py --rounds 5
    python bench/bench_readonly.py --rounds 5 --home /tmp/ro-home --pairs /tmp/ro-pairs/pairs.csv
    python bench/bench_readonly.py --rounds 5 --before /tmp/ro-before
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

STUDY = "siamese-lab"
ROOT = Path(__file__).resolve().parents[1]


def lab(
    home: Path, *args: str, check: bool = True, repo: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIAMESE_LAB_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "search.cli", *args]
    return subprocess.run(command, env=env, check=check, capture_output=True, text=True, cwd=repo)


def make_home(home: Path, pairs_dir: Path) -> Path:
    lab(home, "search", "--trials", "4", "--epochs", "1", "--device", "cpu")
    lab(home, "promote", "--study", STUDY)
    lab(home, "data", "export", "--out", str(pairs_dir))
    return pairs_dir / "pairs.csv"


def commands(home: Path, pairs_csv: Path, scratch: Path) -> dict[str, list[str]]:
    promoted = json.loads(lab(home, "promote", "--study", STUDY, "--json").stdout)
    run_id = promoted["run_id"]
    checkpoint = next((home / "checkpoints").rglob("best.pt"))
    pairs = ["--pairs", str(pairs_csv)]
    fresh = f"bench-{int(time.time())}-{{round}}"  # a new model name each call and round
    return {
        "--help": ["--help"],
        "report": ["report", "--study", STUDY],
        "report --json": ["report", "--study", STUDY, "--json"],
        "diagnose": ["diagnose", run_id[:8]],
        "promote --study (holder)": ["promote", "--study", STUDY],
        "predict models:/@champion": ["predict", "--model", "models:/siamese@champion", *pairs],
        "predict runs:/ID/model": ["predict", "--model", f"runs:/{run_id}/model", *pairs],
        "predict CHECKPOINT.pt": ["predict", "--model", str(checkpoint), *pairs],
        # Not read-only: registers a new model each round (MLflow is imported for that).
        "promote --run (registers)": ["promote", "--run", run_id, "--name", fresh],
        # A new folder each round: export refuses one that exists.
        "data export": ["data", "export", "--out", str(scratch / "export-{round}")],
    }


def timed(home: Path, args: list[str], repo: Path) -> float:
    started = time.perf_counter()
    done = lab(home, *args, check=False, repo=repo)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{repo}: {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--home", type=Path, help="a home with a promoted study (default: made)")
    parser.add_argument("--pairs", type=Path, help="pairs.csv for predict (with --home)")
    parser.add_argument("--before", type=Path, help="another checkout, timed alternately")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-readonly-"))
    if args.home is None:
        home = scratch / "home"
        pairs_csv = make_home(home, scratch / "pairs")
    else:
        home = args.home
        pairs_csv = args.pairs or make_home(home, scratch / "pairs")
    table = commands(home, pairs_csv, scratch)
    repos = {"after": ROOT} if args.before is None else {"before": args.before, "after": ROOT}
    times: dict[tuple[str, str], list[float]] = {(n, arm): [] for n in table for arm in repos}
    for round_ in range(args.rounds):  # commands and arms alternate: a busy moment hits all
        for name, command in table.items():
            for arm, repo in repos.items():
                out = [a.format(round=f"{round_}-{arm}") for a in command]
                times[name, arm].append(timed(home, out, repo))
    print(f"{'command':<28} {'arm':<6} {'best_s':>7} {'median_s':>8}  rounds_s")
    for (name, arm), found in times.items():
        rounds = " ".join(f"{t:.2f}" for t in found)
        best, median = min(found), statistics.median(found)
        print(f"{name:<28} {arm:<6} {best:>7.2f} {median:>8.2f}  {rounds}")


if __name__ == "__main__":
    main()
