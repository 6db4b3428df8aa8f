"""The read-only commands import only what they need (issue 11, item 4: each answers in
under 2 s on 2 CPU cores, where importing MLflow alone takes 1-2 s and torch.export's loader
2 more). Each command runs in a fresh process against a real home - a tracked converged run
registered as the champion, a study whose best trial is that run, test pairs - and the
heavy modules it imported are checked. Wall times are benchmarked (bench/bench_readonly.py),
never asserted: machines are noisy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution, FloatDistribution

from search.cli import cli
from search.env import LabEnv
from search.setup import ATTR, StudySetup
from search.storage import RUN_ID_ATTR, open_storage

ROOT = Path(__file__).resolve().parents[2]
# One epoch of the default network on digits converges (a registry model needs that).
SMALL = ["--train-pairs", "256", "--val-pairs", "128", "--device", "cpu", "--epochs", "1"]
STUDY = "lab"
# What none of these commands may import unless it is named as needed below: MLflow and its
# database layer, torch's export loader and compiler, Optuna, scikit-learn, plotting.
HEAVY = (
    "mlflow",
    "sqlalchemy",
    "alembic",
    "torch",
    "torch._dynamo",
    "torch.export.pt2_archive",
    "optuna",
    "sklearn",
    "pandas",
    "matplotlib",
)


@dataclass(frozen=True)
class Home:
    path: Path
    run_id: str
    pairs_csv: Path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    path = tmp_path_factory.mktemp("readonly") / "home"
    trained = CliRunner().invoke(cli, ["train", "--home", str(path), *SMALL, "--json"])
    assert trained.exit_code == 0, trained.output
    run = json.loads(trained.stdout)
    run_id = run["run_id"]
    assert run["model_uri"], f"the run did not converge: {run['diagnosis']['label']}"
    promoted = CliRunner().invoke(cli, ["promote", "--run", run_id, "--home", str(path)])
    assert promoted.exit_code == 0 and "now @champion" in promoted.output, promoted.output
    _study_with_best_trial(path, run_id)
    pairs = path.parent / "pairs"
    exported = CliRunner().invoke(cli, ["data", "export", "--out", str(pairs)])
    assert exported.exit_code == 0, exported.output
    return Home(path, run_id, pairs / "pairs.csv")


def _study_with_best_trial(home: Path, run_id: str) -> None:
    """A study as `search` leaves one: its setup, and three completed trials (enough for
    parameter importances), the best of them converged and tracked as `run_id`."""
    journal, _legacy = LabEnv(home).default_storage_urls()
    study = optuna.create_study(
        study_name=STUDY, storage=open_storage(journal), direction="maximize"
    )
    setup = StudySetup({}, {}, "tpe", "median", 0, None, "siamese-lab", None, None)
    study.set_user_attr(ATTR, asdict(setup))
    space = {
        "lr": FloatDistribution(1e-6, 1e-1, log=True),
        "head": CategoricalDistribution(["sq", "abs", "contrastive"]),
    }
    trials = [(0.9, 1e-3, "sq", run_id), (0.7, 1e-4, "abs", None), (0.5, 1e-6, "contrastive", None)]
    for value, lr, head, tracked in trials:
        attrs = {"verdict": "converged", "diagnosis": "converged"}
        if tracked:
            attrs[RUN_ID_ATTR] = tracked
        params = {"lr": lr, "head": head}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=space, value=value, user_attrs=attrs
            )
        )


def _imported_by(home: Home, args: list[str], cwd: Path | None = None) -> tuple[str, list[str]]:
    """Runs the command in a fresh process; its stdout and the HEAVY modules it imported."""
    probe = (
        "import sys\nfrom search.cli import cli\ncode = 0\n"
        f"try:\n    cli({args!r})\nexcept SystemExit as exit:\n    code = exit.code\n"
        f"print('exit:', code, 'imported:', *(m for m in {HEAVY!r} if m in sys.modules))"
    )
    env = {**os.environ, "SIAMESE_LAB_HOME": str(home.path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output, _, last = done.stdout.rstrip().rpartition("\n")
    assert last.startswith("exit: 0 imported:"), done.stdout[-2000:] + done.stderr[-3000:]
    return output, last.removeprefix("exit: 0 imported:").split()


def _only(imported: list[str], *needed: str) -> None:
    """Of HEAVY, the command imported nothing but `needed`."""
    extra = sorted(set(imported) - set(needed))
    assert not extra, f"imported {extra} (needed: {list(needed)})"


def test_diagnose_reads_the_store_without_mlflow_or_torch(home: Home) -> None:
    output, imported = _imported_by(home, ["diagnose", home.run_id[:8]])
    assert f"run {home.run_id} (" in output and "Diagnosis:" in output
    _only(imported)


def test_promote_decides_without_mlflow_when_there_is_nothing_to_register(home: Home) -> None:
    output, imported = _imported_by(home, ["promote", "--run", home.run_id])
    assert f"run {home.run_id} already is siamese@champion" in output
    _only(imported)


def test_promote_a_study_imports_optuna_alone(home: Home) -> None:
    output, imported = _imported_by(home, ["promote", "--study", STUDY])
    assert f"run {home.run_id} already is siamese@champion" in output
    _only(imported, "optuna")


def test_report_imports_optuna_alone(home: Home) -> None:
    # The importances are PED-ANOVA's (numpy); Optuna's package would also import
    # scikit-learn for its fANOVA, which the report keeps it from (search.report).
    output, imported = _imported_by(home, ["report", "--study", STUDY])
    assert f"# Study `{STUDY}`" in output and "## Parameter importances" in output
    _only(imported, "optuna")


@pytest.mark.parametrize("model", ["models:/siamese@champion", "runs:/{run}/model"])
def test_predict_scores_a_logged_model_from_its_checkpoint(home: Home, model: str) -> None:
    # torch to score; neither MLflow nor torch.export's loader (which imports dynamo).
    args = ["predict", "--model", model.format(run=home.run_id), "--pairs", str(home.pairs_csv)]
    output, imported = _imported_by(home, args)
    assert "pairs right at the threshold" in output
    _only(imported, "torch")


def test_data_export_needs_no_torch_mlflow_optuna_or_sklearn(home: Home, tmp_path: Path) -> None:
    # The digits are scikit-learn's data file, read without importing it (siamese.data.sources).
    output, imported = _imported_by(home, ["data", "export", "--out", str(tmp_path / "out")])
    assert output.startswith("wrote 20 test pairs")
    _only(imported)


def test_an_untracked_train_imports_torch_and_nothing_else_heavy(home: Home) -> None:
    # Not read-only, but the same rule: the digits and the validation AUC need no
    # scikit-learn, an untracked run no MLflow, one run no Optuna. torch.optim imports
    # torch._dynamo for its first optimizer.
    output, imported = _imported_by(home, ["train", *SMALL, "--no-track"])
    assert "Diagnosis:" in output
    _only(imported, "torch", "torch._dynamo")
