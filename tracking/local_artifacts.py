"""Artifacts into a store on this machine's disk: a hard link instead of a copy.

A run's checkpoints are ~23 MB each (weights plus optimizer state), best and last, and the
embedded store keeps its artifacts beside the checkpoint folder on the same disk. Copying
them doubles the disk a search uses and takes time at every run's end; a hard link costs
neither. It is safe because checkpoints are never changed in place: every save writes a new
file and renames it over the old name, so the linked artifact keeps the bytes it was logged
with. Any other store (an MLflow server, another disk) gets MLflow's ordinary upload.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from siamese.files import link_atomically


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """The folder behind a run's artifact URI when it is a plain local path or file:// URI."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(url2pathname(parsed.path))  # also C:/... on Windows
    if parsed.scheme == "" and artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None


def link_artifact(artifact_root: Path, local_path: Path, artifact_dir: str | None) -> bool:
    """Hard-links `local_path` to `artifact_root/artifact_dir/name`, replacing an artifact of
    that name atomically (a resumed run logs its newer file); False when the two are on
    different file systems or linking is not allowed, so the caller copies instead."""
    dest_dir = artifact_root / artifact_dir if artifact_dir else artifact_root
    return link_atomically(local_path, dest_dir / local_path.name)
