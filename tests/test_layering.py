"""DESIGN.md's dependency direction: search -> tracking -> siamese, never upwards."""

import subprocess
import sys


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_core_imports_no_optuna_mlflow_or_click() -> None:
    loaded = _imported_after(
        "import siamese, siamese.train, siamese.data, siamese.diagnosis, siamese.model"
    )
    assert "torch" in loaded  # the import really happened
    assert not loaded & {"optuna", "mlflow", "click"}
