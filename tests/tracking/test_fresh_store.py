"""A fresh home's MLflow store is made in one go: MLflow's own migrations on a temporary
file with SQLite's syncing off, then given the store's name; the store it opens is MLflow's."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tracking.fresh_store import make_store_at_once, sqlite_path
from tracking.store import embedded_target


def _schema(path: Path) -> dict[str, list[str]]:
    """Each table's and index's definition, its lines sorted (MLflow's migrations write a
    table's constraints in an order that varies from one run to the next)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    return {name: sorted(line.strip(" ,") for line in sql.splitlines()) for name, sql in rows}


def _revision(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchall()


@pytest.fixture
def migrations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every run of MLflow's migrations: the file and SQLite's sync setting they ran with."""
    from mlflow.store.db import utils

    runs: list[dict[str, Any]] = []
    original = utils._initialize_tables

    def recording(engine: Any) -> None:
        with engine.connect() as connection:
            synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar()
        runs.append({"file": Path(str(engine.url.database)), "synchronous": synchronous})
        original(engine)

    monkeypatch.setattr(utils, "_initialize_tables", recording)
    return runs


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder of this test's own, found the way a user's is."""
    path = tmp_path / "cache"
    monkeypatch.delenv("SIAMESE_LAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    return path


def test_a_fresh_home_gets_mlflows_schema_made_unsynced_once(
    tmp_path: Path, cache: Path, migrations: list[dict[str, Any]]
) -> None:
    import mlflow

    from tracking.mlflow_tracker import MlflowTracker

    target = embedded_target(tmp_path / "home")
    store = sqlite_path(target.uri)
    assert store is not None
    tracker = MlflowTracker(target)
    assert len(migrations) == 1, "opening the store made it again"
    made = migrations[0]
    assert made["file"].parent == store.parent and made["file"] != store
    assert made["synchronous"] == 0  # OFF, for the temporary file only
    assert not made["file"].exists(), "the temporary file is left behind"
    with sqlite3.connect(store) as db:  # nothing of that setting is stored in the file
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    theirs = tmp_path / "mlflow-made.db"
    mlflow.MlflowClient(f"sqlite:///{theirs}").search_experiments()
    assert _schema(store) == _schema(theirs)
    assert _revision(store) == _revision(theirs)
    names = {e.name for e in tracker.client.search_experiments()}
    assert names == {"Default", "siamese-lab"}


def test_an_existing_store_is_left_alone(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"not touched")
    assert make_store_at_once(f"sqlite:///{store}") is False
    assert store.read_bytes() == b"not touched"
    assert list(tmp_path.iterdir()) == [store]


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:5000", "sqlite://", "sqlite:///:memory:", "postgresql://x/y"]
)
def test_only_a_sqlite_file_is_made(uri: str) -> None:
    assert sqlite_path(uri) is None
    assert make_store_at_once(uri) is False


def test_the_second_store_on_a_machine_is_a_copy_of_the_first(
    tmp_path: Path, cache: Path, migrations: list[dict[str, Any]]
) -> None:
    from tracking.mlflow_tracker import MlflowTracker
    from tracking.store_template import template_path

    first = MlflowTracker(embedded_target(tmp_path / "first"))
    template = template_path()
    assert template is not None and template.parent == cache / "siamese-lab"
    assert template.is_file(), "the first store was not kept"
    second = MlflowTracker(embedded_target(tmp_path / "second"))
    assert len(migrations) == 1, "the second store ran the migrations again"
    paths = [sqlite_path(t.uri) for t in (first, second)]
    assert paths[0] is not None and paths[1] is not None
    assert _schema(paths[1]) == _schema(paths[0])
    assert _revision(paths[1]) == _revision(paths[0])
    # A copy, not a link: the template stays empty while the store fills.
    run_id = second.start_run("trial-0", {"lr": 0.1}, {})
    second.flush()
    assert second.get_run(run_id).params == {"lr": "0.1"}
    with sqlite3.connect(template) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)


def _half_a_store(tmp_path: Path) -> bytes:
    """The first half of a real store: SQLite's header and schema pages, no more."""
    whole = tmp_path / "whole.db"
    mlflow_made = f"sqlite:///{whole}"
    import mlflow

    mlflow.MlflowClient(mlflow_made).search_experiments()
    data = whole.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize("broken", ["not sqlite", "half a store"])
def test_a_broken_template_is_made_again(
    tmp_path: Path, cache: Path, migrations: list[dict[str, Any]], broken: str
) -> None:
    from tracking.mlflow_tracker import MlflowTracker
    from tracking.store_template import template_path

    template = template_path()
    assert template is not None
    content = b"half a file" if broken == "not sqlite" else _half_a_store(tmp_path)
    migrations.clear()  # MLflow's own store for the half above ran them
    template.parent.mkdir(parents=True)
    template.write_bytes(content)
    tracker = MlflowTracker(embedded_target(tmp_path / "home"))
    assert len(migrations) == 1, "the broken template was used"
    assert {e.name for e in tracker.client.search_experiments()} == {"Default", "siamese-lab"}
    assert _revision(template) == _revision(tmp_path / "home" / "mlflow.db")


def test_a_cache_that_cannot_be_written_costs_only_the_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrations: list[dict[str, Any]]
) -> None:
    from tracking.mlflow_tracker import MlflowTracker

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("SIAMESE_LAB_CACHE", str(blocked))
    for home in ("a", "b"):
        (tmp_path / home).mkdir()
        uri = embedded_target(tmp_path / home).uri
        assert make_store_at_once(uri) is True, "the store was made, yet said it was not"
        tracker = MlflowTracker(embedded_target(tmp_path / home))
        assert {e.name for e in tracker.client.search_experiments()} == {"Default", "siamese-lab"}
    assert len(migrations) == 2
    assert blocked.read_text() == "a file where the cache folder would be"
