"""Where everything goes, resolved once: the home folder, the MLflow target, the study storage.

The command line builds one `LabEnv` from its flags and the process environment when it
starts (never at import time) and hands it to every command; the library takes it whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from search import gc_policy
from siamese.errors import SiameseInputError
from tracking.store import DEFAULT_EXPERIMENT, TrackingTarget, check_store_folder, resolve_target

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker

HOME_VARIABLE = "SIAMESE_LAB_HOME"
TRACKING_VARIABLE = "MLFLOW_TRACKING_URI"
DEFAULT_HOME_NAME = ".siamese-lab"


# Characters a path in an sqlite:/// URI cannot carry as they are.
URI_UNSAFE = "?#%"


# The folders `ensure_home` made in this process, deepest first (see remove_made_homes).
_made_folders: list[Path] = []


def forget_made_homes() -> None:
    """A new command starts: the folders earlier ones made are theirs."""
    _made_folders.clear()


def remove_made_homes() -> None:
    """Removes the home folders this command made, where they are still empty: a command
    refused as bad input leaves nothing behind. A folder anything was written into stays
    (os.rmdir never removes contents, another process's included), and so do its parents."""
    while _made_folders:
        folder = _made_folders.pop(0)
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            _made_folders.clear()
            return


@dataclass(frozen=True)
class LabEnv:
    """`home` holds the embedded stores and checkpoints; `tracking_uri` and `storage_url`,
    when set, point elsewhere (a server, a shared database)."""

    home: Path
    tracking_uri: str | None = None
    storage_url: str | None = None
    experiment: str = DEFAULT_EXPERIMENT

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], user_home: Path | None = None) -> LabEnv:
        home = environ.get(HOME_VARIABLE) or (user_home or Path.home()) / DEFAULT_HOME_NAME
        return cls(Path(home), environ.get(TRACKING_VARIABLE) or None)

    def with_overrides(self, **values: object) -> LabEnv:
        """This env with the given non-None fields replaced (a flag the user typed)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]

    @property
    def _where(self) -> str:
        return f"the home folder {self.home} (--home or {HOME_VARIABLE})"

    def check_home(self) -> None:
        """A home that is a file is bad input, whether or not the command would make it; so
        is one the embedded MLflow store's URI cannot name (sqlite:///HOME/mlflow.db: a ?
        starts its query, so the database went to the folder before it, outside the home)."""
        if self.home.exists() and not self.home.is_dir():
            raise SiameseInputError(
                f"{self._where}: is a file; expected a folder (made if missing)"
            )
        unsafe = sorted(set(URI_UNSAFE) & set(str(self.home.resolve())))
        if unsafe and self.embedded_tracking:
            raise SiameseInputError(
                f"{self._where}: contains {' '.join(unsafe)}, which the MLflow store's URI "
                "cannot hold; expected a path without ? # %"
            )

    def ensure_home(self) -> Path:
        """The home folder, made if missing; one line (bad input) where it cannot be."""
        self.check_home()
        where = self._where
        missing = [p for p in (self.home, *self.home.parents) if not p.exists()]
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SiameseInputError(
                f"{where}: cannot be made ({exc.strerror or exc}); expected a folder this user "
                "can write"
            ) from exc
        _made_folders.extend(missing)  # deepest first
        if not os.access(self.home, os.W_OK | os.X_OK):
            raise SiameseInputError(f"{where}: not writable by this user")
        return self.home

    @property
    def embedded_tracking(self) -> bool:
        return self.tracking_uri is None

    def check_tracking_uri(self) -> None:
        """The user's tracking URI, checked as a tracker would (for a `search --no-track`,
        whose study records it for a later resume that tracks)."""
        if self.tracking_uri:
            self.tracking_target()

    def tracking_target(
        self, recorded_uri: str | None = None, experiment: str | None = None
    ) -> TrackingTarget:
        """The user's URI, else one a study recorded, else the home folder's SQLite store;
        the experiment a study recorded, else the user's."""
        if self.tracking_uri:
            check_store_folder(self.tracking_uri)
        uri = self.tracking_uri or recorded_uri
        return resolve_target(self.home, uri, experiment or self.experiment)

    def tracker(
        self, recorded_uri: str | None = None, experiment: str | None = None
    ) -> MlflowTracker:
        # MLflow and its store are loaded here, not at import: a second or two, and about a
        # million objects the collector would walk again and again meanwhile.
        with gc_policy.loading():
            from tracking.mlflow_tracker import MlflowTracker

            self.ensure_home()
            return MlflowTracker(self.tracking_target(recorded_uri, experiment))

    def checkpoint_dir(self, *parts: str) -> Path:
        return self.home.joinpath("checkpoints", *parts)

    def default_storage_urls(self) -> tuple[str, str]:
        """Where the home's studies live: the journal file, then (for studies made before
        0.2.0) the SQLite file a single-process search used to create."""
        root = self.home.resolve()
        return f"journal:{root / 'optuna-journal.log'}", f"sqlite:///{root / 'optuna.db'}"

    def study_storage_url(self, processes: int = 1, study_name: str | None = None) -> str:
        """--storage, else the home's one study storage: a journal file, safe for one process
        and for several. A study that an older version left in the home's SQLite file stays
        there (`processes` > 1 on it is then refused, naming the file)."""
        if self.storage_url:
            return self.storage_url
        journal, legacy = self.default_storage_urls()
        if study_name is not None and _holds_study(legacy, study_name):
            return legacy
        return journal


def _holds_study(sqlite_url: str, name: str) -> bool:
    if not Path(sqlite_url.removeprefix("sqlite:///")).is_file():
        return False
    from search.storage import open_storage, study_exists  # here: importing Optuna takes a second

    return study_exists(open_storage(sqlite_url), name)
