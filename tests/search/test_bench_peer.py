"""bench/bench_search_peer.py runs both arms and reports what it promises (a smoke run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two searches in fresh processes

ROOT = Path(__file__).resolve().parents[2]


def test_the_peer_benchmark_times_both_arms_and_counts_what_each_logged() -> None:
    tiny = ["--rounds", "1", "--trials", "2", "--epochs", "1", "--train-pairs", "64"]
    done = subprocess.run(
        [sys.executable, "bench/bench_search_peer.py", *tiny, "--val-pairs", "32"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert re.search(r"ratio ours/peer \d+\.\d\dx", done.stdout), done.stdout
    peer = re.search(r"peer: best val_auc \S+; logged (\d+) runs", done.stdout)
    ours = re.search(r"ours: best val_auc \S+; logged (\d+) runs, (\d+) metric points", done.stdout)
    assert peer and ours, done.stdout
    assert int(peer.group(1)) == 2  # MLflowCallback: one run per trial
    assert int(ours.group(1)) == 3  # the study's run and one per trial
    assert int(ours.group(2)) > 2  # curves, not only a final value
