"""The embedded store links checkpoints instead of copying them, and copies when it cannot."""

import errno
import os
from pathlib import Path

import pytest

from tracking import embedded_target
from tracking.local_artifacts import local_artifact_dir
from tracking.mlflow_tracker import MlflowTracker


def _artifact_file(tracker: MlflowTracker, run_id: str, name: str) -> Path:
    root = local_artifact_dir(tracker.client.get_run(run_id).info.artifact_uri)
    assert root is not None, "the embedded store keeps artifacts on local disk"
    return root / name


def test_a_checkpoint_on_the_same_disk_is_linked_not_copied(tmp_path: Path) -> None:
    tracker = MlflowTracker(embedded_target(tmp_path / "home"))
    run_id = tracker.start_run("r", {}, {})
    local = tmp_path / "home" / "checkpoints" / "best.pt"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"weights" * 1000)
    tracker.log_artifact(run_id, local, "checkpoints")
    stored = _artifact_file(tracker, run_id, "checkpoints/best.pt")
    assert stored.stat().st_ino == local.stat().st_ino  # one file on disk, not two
    assert tracker.list_artifacts(run_id) == ["checkpoints/best.pt"]


def _log_a_checkpoint(tmp_path: Path) -> tuple[MlflowTracker, str, Path, Path]:
    """A fresh embedded store, one run, one small file logged: (tracker, run, local, stored)."""
    tracker = MlflowTracker(embedded_target(tmp_path / "home"))
    run_id = tracker.start_run("r", {}, {})
    local = tmp_path / "best.pt"
    local.write_bytes(b"weights")
    tracker.log_artifact(run_id, local, "checkpoints")
    return tracker, run_id, local, _artifact_file(tracker, run_id, "checkpoints/best.pt")


def test_logging_the_stored_artifact_itself_keeps_it(tmp_path: Path) -> None:
    tracker, run_id, _, stored = _log_a_checkpoint(tmp_path)
    tracker.log_artifact(run_id, stored, "checkpoints")  # the very same file
    assert stored.read_bytes() == b"weights"
    assert sorted(p.name for p in stored.parent.iterdir()) == ["best.pt"]


def test_when_linking_fails_the_artifact_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    _, _, local, stored = _log_a_checkpoint(tmp_path)
    assert stored.read_bytes() == b"weights"
    assert stored.stat().st_ino != local.stat().st_ino


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///srv/mlartifacts/1/abc/artifacts", Path("/srv/mlartifacts/1/abc/artifacts")),
        ("file:///srv/my%20store/artifacts", Path("/srv/my store/artifacts")),
        ("/srv/mlartifacts/1/abc/artifacts", Path("/srv/mlartifacts/1/abc/artifacts")),
        ("mlflow-artifacts:/1/abc/artifacts", None),
        ("s3://bucket/1/abc/artifacts", None),
        ("file://otherhost/srv/artifacts", None),
    ],
)
def test_only_local_artifact_uris_are_linked(uri: str, expected: Path | None) -> None:
    assert local_artifact_dir(uri) == expected
