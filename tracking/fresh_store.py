"""A new embedded MLflow store, made in one go.

MLflow makes a new SQLite store by running its schema migrations, about 70 transactions
that SQLite each syncs to disk: 4-6 s before the first run of a fresh home. Here they run
on a temporary file beside the store with SQLite's syncing off, the file is synced once
and only then given the store's name. A crash meanwhile leaves no store (the next start
makes it again), never a half-made one; nothing else changes: the same migrations make
the same schema, and the store is opened as before. The first store a machine makes is
kept as a template (tracking.store_template): later ones are a copy of it, not a second's
migrations.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from siamese.files import fsync_dir
from tracking.store_template import copy_template, keep_template

SQLITE_PREFIX = "sqlite:///"
_log = logging.getLogger(__name__)


def sqlite_path(uri: str) -> Path | None:
    """The file behind a `sqlite:///PATH` URI; None for anything else (a server, memory)."""
    if not uri.startswith(SQLITE_PREFIX) or "?" in uri:
        return None
    path = uri.removeprefix(SQLITE_PREFIX)
    return Path(path) if path and path != ":memory:" else None


def make_store_at_once(uri: str) -> bool:
    """Creates the SQLite store `uri` names when it does not exist yet; True when it did.
    The caller holds the store's lock (tracking.store.store_lock). Anything unexpected
    (another MLflow without these helpers, a file system without links) leaves the store
    to MLflow, which then makes it its own slower way."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return False
    try:
        from mlflow.store.db import utils
    except ImportError:  # pragma: no cover - MLflow is a dependency
        return False
    initialize = getattr(utils, "_initialize_tables", None)
    make_engine = getattr(utils, "create_sqlalchemy_engine", None)
    if initialize is None or make_engine is None:
        return False
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.new")
    try:
        copied = copy_template(tmp)
        if not copied:
            _build(tmp, make_engine, initialize)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        if not copied:  # from the private file: nothing can have opened it yet
            keep_template(tmp)
        os.link(tmp, path)  # never over a store another process made meanwhile
        fsync_dir(path.parent)
    except FileExistsError:
        return False
    except Exception as exc:  # MLflow then makes it the slow way; say why once
        _log.debug("could not pre-make the MLflow store %s: %s", path, exc)
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _build(path: Path, make_engine: Any, initialize: Any) -> None:
    from sqlalchemy import event

    engine = make_engine(f"{SQLITE_PREFIX}{path}")

    def unsynced(dbapi_connection: Any, _record: Any) -> None:
        # Neither setting is stored in the file: the store opens with SQLite's defaults.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA journal_mode=MEMORY")
        cursor.close()

    event.listen(engine, "connect", unsynced)
    try:
        initialize(engine)
    finally:
        engine.dispose()
