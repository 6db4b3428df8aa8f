"""The report's parameter importances are Optuna's PED-ANOVA, computed without importing
scikit-learn; scikit-learn still imports afterwards in the same process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from search.report import build_report
storage = JournalStorage(JournalFileBackend(sys.argv[1]))
report = build_report(optuna.load_study(study_name="s", storage=storage))
loaded = "sklearn" in sys.modules
import sklearn.ensemble  # put back: whatever imports it later gets it
print(json.dumps({"importances": report.importances, "sklearn_loaded": loaded}))
"""


def _study(path: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(path)))
    sampler = optuna.samplers.RandomSampler(seed=3)
    study = optuna.create_study(
        study_name="s", storage=storage, direction="maximize", sampler=sampler
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        head = trial.suggest_categorical("head", ["sq", "abs"])
        return -abs(lr - 1e-3) * 100 + (0.1 if head == "sq" else 0.0)

    study.optimize(objective, n_trials=12)
    return study


def test_importances_are_ped_anovas_without_scikit_learn(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    expected = get_param_importances(_study(journal), evaluator=PedAnovaImportanceEvaluator())
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(journal)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["sklearn_loaded"] is False
    assert found["importances"] == {k: float(v) for k, v in expected.items()}
    assert set(found["importances"]) == {"lr", "head"}
