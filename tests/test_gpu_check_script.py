"""`bench/gpu_check.sh` on a CPU-only machine, the way a bare GPU machine runs it: python3
with the core's dependencies and no pytest, optuna, mlflow or SQLAlchemy (made unimportable
here), the project found through PYTHONPATH=. only. It detects no CUDA, uses tiny sizes and
says which path each line took."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_checks import CHECKS

ROOT = Path(__file__).resolve().parents[1]
# What a bare GPU machine lacks: importing any of them there fails.
ABSENT = ("pytest", "optuna", "mlflow", "sqlalchemy")
ARMS = (
    "seed-style loop",
    "fit eager",
    "fit graph, statistics every 4th",
    "fit graph, statistics every step",
)

pytestmark = pytest.mark.slow


def _without(names: tuple[str, ...], folder: Path) -> Path:
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('no {name} here')\n")
    return folder


def _line(output: str, start: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(start)]
    assert lines, f"no line starting {start!r} in:\n{output}"
    return lines[0]


@pytest.mark.timeout(1800)  # minutes on 2 shared cores: the checks and seven arms, tiny sizes
def test_gpu_check_runs_on_a_cpu_without_optuna_or_mlflow(tmp_path: Path) -> None:
    absent = _without(ABSENT, tmp_path / "absent")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(absent)}
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "available False" in output and f"gpu checks: 0 of {len(CHECKS)} failed" in output
    assert "Traceback" not in output, output
    for arm in ARMS:
        assert "path: eager: cpu" in _line(output, arm) or arm == "seed-style loop"
    population = _line(output, "population K=1")
    assert "path: eager: cpu" in population, population
    assert "population: FAILED" not in output, output
    assert "tracking overhead: skipped" in output  # mlflow cannot be imported
    assert "population search: skipped" in output  # nor optuna (and there is no CUDA)
