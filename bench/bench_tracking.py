"""What tracking costs: the same run untracked and tracked (real MLflow SQLite store),
alternating in one process, median of several rounds each.

Reports the whole-run overhead (start, per-epoch metrics, and the end: checkpoints, curves,
diagnosis, model) and, separately, the overhead inside the training loop alone. Process
start-up (importing MLflow, torch.export's first compile) is paid once per process and is
excluded by a warm-up round of each arm.

    python bench/bench_tracking.py                   # default run: 5 epochs x 2048 pairs
    python bench/bench_tracking.py --epochs 10 --pairs 4096
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from siamese import DataConfig, PairData, TrainConfig, fit, prepare_data
from siamese.train import Callback, History
from tracking import TrackingCallback, embedded_target, tracked_run
from tracking.mlflow_tracker import MlflowTracker


class LoopTimer(Callback):
    """Time from the first step to the last epoch's end: the training loop alone."""

    def on_fit_start(self, history: History) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, record, history):  # type: ignore[no-untyped-def]
        self.ended = time.perf_counter()
        return None


def untracked(config: TrainConfig, data: PairData, root: Path) -> tuple[float, float]:
    timer = LoopTimer()
    started = time.perf_counter()
    fit(config, data, callbacks=[timer], checkpoint_dir=Path(tempfile.mkdtemp(dir=root)))
    return time.perf_counter() - started, timer.ended - timer.started


def tracked(
    config: TrainConfig, data: PairData, root: Path, tracker: MlflowTracker
) -> tuple[float, float]:
    timer = LoopTimer()
    started = time.perf_counter()
    with tracked_run(tracker, "bench", config, config.device) as run_id:
        callbacks = [timer, TrackingCallback(tracker, run_id)]
        fit(config, data, callbacks=callbacks, checkpoint_dir=Path(tempfile.mkdtemp(dir=root)))
    return time.perf_counter() - started, timer.ended - timer.started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    data_config = DataConfig(task="same-class", train_pairs=args.pairs, val_pairs=512)
    config = TrainConfig(head="abs", epochs=args.epochs, device=args.device, data=data_config)
    data = prepare_data(data_config)
    root = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    tracker = MlflowTracker(embedded_target(root / "home"))
    untracked(config, data, root)  # warm-up rounds: allocator, MLflow schema, torch.export
    tracked(config, data, root, tracker)
    plain: list[tuple[float, float]] = []
    logged: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        plain.append(untracked(config, data, root))
        logged.append(tracked(config, data, root, tracker))
    whole_plain = statistics.median(t for t, _ in plain)
    whole_logged = statistics.median(t for t, _ in logged)
    loop_plain = statistics.median(t for _, t in plain)
    loop_logged = statistics.median(t for _, t in logged)
    print(
        json.dumps(
            {
                "epochs": args.epochs,
                "pairs_per_epoch": args.pairs,
                "rounds": args.rounds,
                "untracked_s": round(whole_plain, 2),
                "tracked_s": round(whole_logged, 2),
                "whole_run_overhead_pct": round(100 * (whole_logged / whole_plain - 1), 1),
                "training_loop_overhead_pct": round(100 * (loop_logged / loop_plain - 1), 1),
                "end_of_run_s": round((whole_logged - loop_logged) - (whole_plain - loop_plain), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
