from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from siamese import DataConfig, PairData, interrupts, prepare_data


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _test_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The tests' own cache folder for MLflow's empty-store template, not the user's; their
    CLI subprocesses inherit it."""
    os.environ["SIAMESE_LAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    # and a default home of their own (see _not_the_users_home), for fixtures made before it
    os.environ["SIAMESE_LAB_HOME"] = str(tmp_path_factory.mktemp("default-home"))


@pytest.fixture(autouse=True)
def _not_the_users_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that names no home writes into a folder of its own, never the user's
    ~/.siamese-lab (a resume from outside a home continues in the default one)."""
    monkeypatch.setenv("SIAMESE_LAB_HOME", str(tmp_path / "default-home"))


@pytest.fixture(autouse=True)
def _no_remembered_signal() -> Iterator[None]:
    """A signal one test sent (a SIGTERM to a tracked run) is not the next test's."""
    yield
    interrupts.forget()


@pytest.fixture(scope="session")
def small_data() -> PairData:
    """Digits, small enough for a CPU test to train a few epochs in seconds."""
    return prepare_data(DataConfig(train_pairs=384, val_pairs=192))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated siamese-lab home folder for CLI tests."""
    path = tmp_path / "home"
    monkeypatch.setenv("SIAMESE_LAB_HOME", str(path))
    return path
