"""An empty MLflow store kept per machine, so that a new home's store is a file copy.

MLflow's migrations take most of a second even unsynced (alembic parses about 70 scripts
and runs them one by one), and a search pays them before its first trial. Their result
depends only on MLflow's version and its migration scripts, so the first store made on a
machine is kept under the user's cache folder (SIAMESE_LAB_CACHE, else XDG_CACHE_HOME/
siamese-lab, else ~/.cache/siamese-lab), named after both, and later stores start as a copy
of it. A template that does not pass SQLite's own check or holds no schema revision is
removed and made again; a cache that cannot be written or cleaned costs the migrations,
nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import sqlite3
from pathlib import Path

CACHE_ENV = "SIAMESE_LAB_CACHE"
CACHE_FOLDER = "siamese-lab"
_log = logging.getLogger(__name__)


def cache_root() -> Path:
    if folder := os.environ.get(CACHE_ENV):
        return Path(folder)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / CACHE_FOLDER


def template_path() -> Path | None:
    """Where the empty store of this MLflow (version and migration scripts) is kept."""
    try:
        import mlflow
        from mlflow.store import db_migrations
    except ImportError:  # pragma: no cover - MLflow is a dependency
        return None
    versions = Path(db_migrations.__file__).parent / "versions"
    scripts = sorted(p.name for p in versions.glob("*.py"))
    digest = hashlib.sha256("\n".join(scripts).encode()).hexdigest()[:12]
    return cache_root() / f"mlflow-{mlflow.__version__}-{digest}.db"


def _is_store(path: Path) -> bool:
    """A whole SQLite file (its quick check, a few ms for 1 MB) with one schema revision in
    it, what the migrations leave at the end. Read-only: a vanished file is not made."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            if db.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                return False
            return len(db.execute("SELECT version_num FROM alembic_version").fetchall()) == 1
    except sqlite3.Error:
        return False


def copy_template(dest: Path) -> bool:
    """`dest` as a copy of the kept empty store; False when there is none (or a bad one,
    which is removed where it can be)."""
    template = template_path()
    if template is None or not template.is_file():
        return False
    if not _is_store(template):
        with contextlib.suppress(OSError):
            template.unlink()
        return False
    try:
        shutil.copyfile(template, dest)
    except OSError as exc:
        _log.debug("could not copy the MLflow store template %s: %s", template, exc)
        return False
    return True


def keep_template(made: Path) -> None:
    """Keeps a copy of `made`, a store the migrations just made and nothing has opened
    since, for the next ones."""
    template = template_path()
    if template is None or template.exists():
        return
    tmp = template.with_name(f".{template.name}.{secrets.token_hex(8)}.new")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, template)  # whole or absent, whoever else writes it meanwhile
    except OSError as exc:
        _log.debug("could not keep the MLflow store template %s: %s", template, exc)
    finally:
        with contextlib.suppress(OSError):  # e.g. the cache folder's place is a file
            tmp.unlink(missing_ok=True)
