"""Early stopping against the full run, side by side, on a set of known-healthy and
known-failing configurations (heads x optimizers x learning rates, several seeds).

Each configuration is trained to its end without early stopping, then again with it, one
after the other in this process, on the default search's work (digits, 1024 training pairs,
256 validation pairs, 3 epochs, batch 32). Printed per configuration and seed: the full
run's best val_auc and diagnosis; with early stopping, the step it stopped at (as a share of
epoch 1) and its verdict, or that it ran to the end; the wall time of each. Then the
summary: how early the failing runs stopped, that no healthy one did, the time saved.

"Healthy" and "failing" are claims that the full run checks (a healthy configuration
reaches val_auc >= 0.7, a failing one ends with a failed diagnosis below it); what counts is
the full run. The exit status is 1 when a stopped run would have learned (its full run
reached 0.7), or a failing configuration whose full run failed was not stopped in epoch 1.
A claim that did not hold is listed, not an error: some seeds of a slow configuration do
not reach 0.7 in 3 epochs.

    python bench/bench_early_stop.py                       # the whole set, seeds 0-2
    python bench/bench_early_stop.py --seeds 0 --only seed,adam
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from siamese import DataConfig, PairData, TrainConfig, diagnose, fit, prepare_data
from siamese.config import SEED_PRESET

HEALTHY_AUC = 0.7
BASE = TrainConfig(epochs=3, device="cpu", data=DataConfig(train_pairs=1024, val_pairs=256))


def _c(head: str, optimizer: str, lr: float, momentum: float = 0.0, **kw: Any) -> dict[str, Any]:
    return {"head": head, "optimizer": optimizer, "lr": lr, "momentum": momentum, **kw}


# name -> (overrides, data overrides). Healthy: they learn, some slowly or after a spike.
HEALTHY = {
    "sq adam 1e-3 (the default)": (_c("sq", "adam", 1e-3), {}),
    "fixed preset (sq, dropout 0.3)": (_c("sq", "adam", 1e-3, dropout=0.3), {}),
    "abs adam 1e-3": (_c("abs", "adam", 1e-3), {}),
    "contrastive adam 1e-3": (_c("contrastive", "adam", 1e-3), {}),
    "contrastive rmsprop 1e-4": (_c("contrastive", "rmsprop", 1e-4, 0.5), {}),
    "sq adam 1e-2 (loss spike first)": (_c("sq", "adam", 1e-2), {}),
    "sq rmsprop 1e-3 (loss spike first)": (_c("sq", "rmsprop", 1e-3, 0.5), {}),
    "abs rmsprop 1e-3 (huge first steps)": (_c("abs", "rmsprop", 1e-3, 0.5), {}),
    "relu2 adam 1e-3 (slow)": (_c("relu2", "adam", 1e-3), {}),
    "sq adam 1e-5 (slow)": (_c("sq", "adam", 1e-5), {}),
    "abs sgd 1e-3 m0.9 (slow)": (_c("abs", "sgd", 1e-3, 0.9), {}),
    "relu2 sgd 1e-3 m0.9 (slow)": (_c("relu2", "sgd", 1e-3, 0.9), {}),
    "sq sgd 1e-2 m0.9 (slow)": (_c("sq", "sgd", 1e-2, 0.9), {}),
    # The quickstart's trial 10: 17x the initial loss in epoch 1, then val_auc 0.96.
    "contrastive rmsprop 6.4e-4 m0.2 (loss spike first)": (
        _c("contrastive", "rmsprop", 6.4e-4, 0.2),
        {},
    ),
}
# Failing: the original network and each of its causes, and the ways a search fails.
FAILING = {
    "seed preset (relu2 sgd 1e-6 m0.9)": (dict(SEED_PRESET), {}),
    "sq sgd 1e-6 m0.9 (stalled)": (_c("sq", "sgd", 1e-6, 0.9), {}),
    "abs sgd 1e-5 m0.9 (stalled)": (_c("abs", "sgd", 1e-5, 0.9), {}),
    "sq sgd 10 (NaN)": (_c("sq", "sgd", 10.0, 0.9), {}),
    "relu2 adam 1e-2 (dead head)": (_c("relu2", "adam", 1e-2), {}),
    "relu2 rmsprop 1e-3 (dead head)": (_c("relu2", "rmsprop", 1e-3, 0.5), {}),
    "contrastive rmsprop 1e-2 (dead units)": (_c("contrastive", "rmsprop", 1e-2, 0.5), {}),
    "same-image bug (sq adam 1e-3)": (_c("sq", "adam", 1e-3), {"inject_bug": "same-image"}),
    # The quickstart's trial 5: its convolutions stop getting gradient a third into epoch 1.
    "abs adamw 0.068 dropout 0.4 (dead convolutions)": (
        _c("abs", "adamw", 0.068, dropout=0.4),
        {},
    ),
}


@dataclass
class Row:
    name: str
    expected: str  # healthy | failing
    seed: int
    full_auc: float
    full_label: str
    full_failed: bool
    full_s: float
    stop: dict[str, Any] | None
    stop_reason: str
    early_auc: float
    early_s: float

    @property
    def learned(self) -> bool:
        return self.full_auc >= HEALTHY_AUC

    @property
    def claim_holds(self) -> bool:
        if self.expected == "healthy":
            return self.learned
        return self.full_failed and not self.learned

    @property
    def stopped_in_epoch_1(self) -> bool:
        return self.stop is not None and int(self.stop["epoch"]) == 1

    @property
    def ok(self) -> bool:
        """Never stopped when it would have learned; stopped in epoch 1 when it is one of the
        failing configurations and its full run failed."""
        if self.stop is not None:
            return not self.learned and self.stopped_in_epoch_1
        return not (self.expected == "failing" and self.claim_holds)


def _best(history: Any) -> float:
    best = history.best
    return best.val_auc if best is not None else float("nan")


def _timed(config: TrainConfig, data: PairData) -> tuple[Any, float]:
    started = time.perf_counter()
    history = fit(config, data).history
    return history, time.perf_counter() - started


def run_one(
    name: str, expected: str, overrides: dict[str, Any], data_kw: dict[str, Any], seed: int
) -> Row:
    data_config = replace(BASE.data, seed=seed, **data_kw)
    config = replace(BASE, seed=seed, data=data_config, **overrides)
    data = prepare_data(data_config)
    full, full_s = _timed(config, data)  # side by side: the same process, one after the other
    early, early_s = _timed(replace(config, early_stop=True), data)
    verdict = diagnose(full)
    return Row(
        name,
        expected,
        seed,
        _best(full),
        verdict.label,
        verdict.failed,
        full_s,
        early.early_stop,
        early.stop_reason,
        _best(early),
        early_s,
    )


def _stopped(row: Row) -> str:
    if row.stop is None:
        return f"not stopped ({row.stop_reason})"
    return f"step {row.stop['step']}/{row.stop['epoch_steps']} ({row.stop['fraction']:.0%}) of epoch {row.stop['epoch']}"


def print_table(rows: list[Row]) -> None:
    print(
        "| configuration | claim | seed | full run: best val_auc, diagnosis | full s | "
        "with early stop: stopped at | its verdict | s | saved s | ok |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        verdict = r.stop["verdict"] if r.stop else "-"
        print(
            f"| {r.name} | {r.expected} | {r.seed} | {r.full_auc:.3f} {r.full_label} | "
            f"{r.full_s:.1f} | {_stopped(r)} | {verdict} | {r.early_s:.1f} | "
            f"{r.full_s - r.early_s:.1f} | {'yes' if r.ok else 'NO'} |",
            flush=True,
        )


def print_summary(rows: list[Row]) -> None:
    failing = [r for r in rows if r.expected == "failing"]
    healthy = [r for r in rows if r.expected == "healthy"]
    failed = [r for r in failing if r.claim_holds]
    fractions = [float(r.stop["fraction"]) for r in failed if r.stop]
    print()
    print(
        f"failing configurations whose full run failed: {sum(r.stopped_in_epoch_1 for r in failed)}"
        f" of {len(failed)} stopped in epoch 1",
        end="",
    )
    if fractions:
        print(
            f" (at {min(fractions):.0%} to {max(fractions):.0%} of it, "
            f"median {statistics.median(fractions):.0%})"
        )
    else:
        print()
    learned = [r for r in rows if r.learned]
    print(
        f"runs whose full run learned (val_auc >= {HEALTHY_AUC}): {len(learned)}, stopped: ", end=""
    )
    print(sum(r.stop is not None for r in learned))
    print(
        f"healthy configurations stopped: {sum(r.stop is not None for r in healthy)} of {len(healthy)}"
    )
    for group, name in ((failing, "failing"), (healthy, "healthy")):
        full, early = sum(r.full_s for r in group), sum(r.early_s for r in group)
        if full:
            print(
                f"{name}: {full:.0f} s trained to the end, {early:.0f} s with early stopping "
                f"({early / full:.2f}x, {full - early:.0f} s saved)"
            )
    full, early = sum(r.full_s for r in rows), sum(r.early_s for r in rows)
    print(f"whole set: {full:.0f} s -> {early:.0f} s ({early / max(full, 1e-9):.2f}x)")
    for r in rows:
        if not r.claim_holds:
            print(
                f"claim did not hold: {r.name} seed {r.seed} ({r.expected}: full run "
                f"{r.full_auc:.3f} {r.full_label}; {_stopped(r)})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--only", default="", help="comma-separated substrings of names")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = [w for w in args.only.split(",") if w]
    cases = [(n, "healthy", *c) for n, c in HEALTHY.items()]
    cases += [(n, "failing", *c) for n, c in FAILING.items()]
    cases = [c for c in cases if not wanted or any(w in c[0] for w in wanted)]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"{time.strftime('%Y-%m-%d')} torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    rows: list[Row] = []
    for seed in seeds:
        for name, expected, overrides, data_kw in cases:
            rows.append(run_one(name, expected, overrides, data_kw, seed))
            print(
                f"  {rows[-1].name} seed {seed}: {_stopped(rows[-1])}", file=sys.stderr, flush=True
            )
    print_table(rows)
    print_summary(rows)
    sys.exit(0 if all(r.ok for r in rows) else 1)


if __name__ == "__main__":
    main()
