"""The environment a test gives a CLI subprocess."""

from __future__ import annotations

import os

KEPT = ("SIAMESE_LAB_CACHE",)  # the tests' own cache folder (conftest): never the user's


def clean_env() -> dict[str, str]:
    """This process's environment without the MLflow and siamese-lab settings a test or the
    developer's shell may have set (a store URI, a home, a PostgreSQL URL), except KEPT."""
    return {
        k: v
        for k, v in os.environ.items()
        if k in KEPT or not k.startswith(("MLFLOW_", "SIAMESE_LAB"))
    }
