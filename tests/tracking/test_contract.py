"""One contract, two trackers: the in-memory twin must behave like the MLflow one."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import tracking.memory as memory_module
from siamese.errors import SiameseInputError
from siamese.model import SiameseNet
from siamese.scoring import PairScorer
from tracking import FAILED, FINISHED, KILLED, InMemoryTracker, Tracker, embedded_target
from tracking.base import MIN_RUN_ID_PREFIX


@pytest.fixture(params=["memory", "mlflow"])
def tracker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tracker]:
    if request.param == "memory":
        yield InMemoryTracker()
        return
    from tracking.mlflow_tracker import MlflowTracker

    yield MlflowTracker(embedded_target(tmp_path / "home"))


def test_run_lifecycle_params_and_tags(tracker: Tracker) -> None:
    run_id = tracker.start_run("r1", {"lr": 0.001, "head": "sq", "target": None}, {"k": "v"})
    run = tracker.get_run(run_id)
    assert run.status == "RUNNING" and run.name == "r1"
    assert run.params == {"lr": "0.001", "head": "sq", "target": "None"}
    tracker.set_tags(run_id, {"diagnosis.verdict": "converged"})
    tracker.end_run(run_id, FINISHED)
    run = tracker.get_run(run_id)
    assert (
        run.status == FINISHED
        and run.tags["k"] == "v"
        and run.tags["diagnosis.verdict"] == "converged"
    )


@pytest.mark.parametrize("status", [FAILED, KILLED])
def test_final_statuses(tracker: Tracker, status: str) -> None:
    run_id = tracker.start_run("r", {}, {})
    tracker.end_run(run_id, status)
    assert tracker.get_run(run_id).status == status


def test_metric_history_is_one_point_per_step(tracker: Tracker) -> None:
    run_id = tracker.start_run("r", {}, {})
    for epoch in (1, 2, 3):
        tracker.log_metrics(
            run_id, {"val_auc": 0.5 + epoch / 10, "train_loss": 1.0 / epoch}, step=epoch
        )
    tracker.end_run(run_id, FINISHED)  # flushes asynchronous writes
    assert tracker.metric_history(run_id, "val_auc") == [(1, 0.6), (2, 0.7), (3, 0.8)]
    assert tracker.get_run(run_id).metrics["train_loss"] == pytest.approx(1 / 3)


def test_artifacts_round_trip(tracker: Tracker, tmp_path: Path) -> None:
    run_id = tracker.start_run("r", {}, {})
    local = tmp_path / "best.pt"
    local.write_bytes(b"weights")
    tracker.log_artifact(run_id, local, "checkpoints")
    tracker.log_text(run_id, "hello", "diagnosis.txt")
    assert tracker.list_artifacts(run_id) == ["checkpoints/best.pt", "diagnosis.txt"]
    got = tracker.download_artifact(run_id, "checkpoints/best.pt", tmp_path / "dl")
    assert got.read_bytes() == b"weights"


def test_a_logged_checkpoint_keeps_its_bytes_when_the_file_is_saved_again(
    tracker: Tracker, tmp_path: Path
) -> None:
    """Checkpoints are saved by writing a new file and renaming it over the old name; what
    was logged before must not change with it (the MLflow tracker hard-links)."""
    run_id = tracker.start_run("r", {}, {})
    local = tmp_path / "best.pt"
    local.write_bytes(b"epoch 1")
    tracker.log_artifact(run_id, local, "checkpoints")
    newer = tmp_path / "best.pt.tmp"
    newer.write_bytes(b"epoch 2")
    os.replace(newer, local)
    got = tracker.download_artifact(run_id, "checkpoints/best.pt", tmp_path / "dl")
    assert got.read_bytes() == b"epoch 1"
    tracker.log_artifact(run_id, local, "checkpoints")  # logged again: the newer file wins
    got = tracker.download_artifact(run_id, "checkpoints/best.pt", tmp_path / "dl2")
    assert got.read_bytes() == b"epoch 2"


def test_nested_runs(tracker: Tracker) -> None:
    parent = tracker.start_run("study", {}, {})
    children = {tracker.start_run(f"trial-{i}", {}, {}, parent_run_id=parent) for i in range(3)}
    tracker.start_run("unrelated", {}, {})
    assert {r.run_id for r in tracker.child_runs(parent)} == children


def test_a_renamed_run_shows_its_new_name(tracker: Tracker) -> None:
    run_id = tracker.start_run("trial-3", {}, {"optuna.trial_number": "3"})
    tracker.rename_run(run_id, "trial-3 · PRUNED · diverged")
    tracker.end_run(run_id, FINISHED)
    run = tracker.get_run(run_id)
    assert run.name == "trial-3 · PRUNED · diverged"
    assert run.tags["optuna.trial_number"] == "3"


def test_log_model_returns_a_uri_and_an_artifact(tracker: Tracker) -> None:
    run_id = tracker.start_run("r", {}, {})
    scorer = PairScorer(SiameseNet("sq", 0.0)).eval()
    uri = tracker.log_model(run_id, scorer)
    tracker.end_run(run_id, FINISHED)
    assert uri
    if uri.startswith("models:/"):
        import mlflow

        from tracking.mlflow_tracker import MlflowTracker

        assert isinstance(tracker, MlflowTracker)
        with tracker.using_store():
            loaded = mlflow.pytorch.load_model(uri)
        pairs = torch.rand(3, 2, 40, 50)
        assert torch.allclose(loaded(pairs), scorer(pairs), atol=1e-5)


# ---------------------------------------------------------------- run ids by prefix


def _other_prefix(run_ids: list[str], length: int = 8) -> str:
    """A hex prefix of `length` characters that starts none of `run_ids`."""
    for first in "0123456789abcdef":
        candidate = first * length
        if not any(r.startswith(candidate) for r in run_ids):
            return candidate
    raise AssertionError("every candidate prefix is taken")


def test_a_full_run_id_or_a_unique_prefix_resolves_in_any_case(tracker: Tracker) -> None:
    run_id = tracker.start_run("r", {}, {})
    others = [tracker.start_run(f"other-{i}", {}, {}) for i in range(2)]
    child = tracker.start_run("trial-0", {}, {}, parent_run_id=others[0])
    assert tracker.resolve_run_id(run_id) == run_id
    assert tracker.resolve_run_id(f"  {run_id.upper()}\n") == run_id
    assert tracker.resolve_run_id(run_id[:8]) == run_id
    assert tracker.resolve_run_id(run_id[:8].upper()) == run_id
    assert tracker.resolve_run_id(run_id[:MIN_RUN_ID_PREFIX]) == run_id
    assert tracker.resolve_run_id(child[:8]) == child  # nested runs too


def test_a_short_or_non_hex_run_id_is_refused(tracker: Tracker) -> None:
    run_id = tracker.start_run("r", {}, {})
    short = run_id[: MIN_RUN_ID_PREFIX - 1]  # a real run's, but too short to be a prefix
    for given in (short, "", "zzzzzzzz", "run-1234", "12345678-1234-1234", "0x123456"):
        with pytest.raises(SiameseInputError, match="expected a run id") as refused:
            tracker.resolve_run_id(given)
        assert repr(given) in str(refused.value)


def test_an_unknown_prefix_is_not_found(tracker: Tracker) -> None:
    run_ids = [tracker.start_run(f"r{i}", {}, {}) for i in range(2)]
    unknown = _other_prefix(run_ids)
    with pytest.raises(SiameseInputError, match="not found") as refused:
        tracker.resolve_run_id(unknown)
    assert repr(unknown) in str(refused.value) and tracker.uri in str(refused.value)


def test_run_ids_starting_with_finds_each_run_by_its_own_prefix(tracker: Tracker) -> None:
    run_ids = [tracker.start_run(f"r{i}", {}, {}) for i in range(3)]
    tracker.end_run(run_ids[0], FAILED)  # finished runs are found too
    for run_id in run_ids:
        prefix = run_id[:MIN_RUN_ID_PREFIX]
        found = tracker.run_ids_starting_with(prefix)
        assert run_id in found and all(r.startswith(prefix) for r in found)
        assert found == sorted(found)
    assert tracker.run_ids_starting_with(_other_prefix(run_ids)) == []


def _memory_tracker_with_ids(
    monkeypatch: pytest.MonkeyPatch, run_ids: list[str]
) -> InMemoryTracker:
    """Run ids cannot be chosen in MLflow; in the twin they come from uuid4, patched here."""
    chosen = iter(uuid.UUID(hex=r) for r in run_ids)
    monkeypatch.setattr(memory_module.uuid, "uuid4", lambda: next(chosen))
    tracker = InMemoryTracker()
    for i in range(len(run_ids)):
        tracker.start_run(f"r{i}", {}, {})
    assert sorted(tracker.runs) == sorted(run_ids)
    return tracker


def test_a_shared_prefix_is_ambiguous_and_lists_every_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = "abcdef01" + "0" * 24, "abcdef02" + "0" * 24
    tracker = _memory_tracker_with_ids(monkeypatch, [first, second, "1" * 32])
    with pytest.raises(SiameseInputError, match="ambiguous") as refused:
        tracker.resolve_run_id("ABCDEF")
    assert first in str(refused.value) and second in str(refused.value)
    assert "1" * 32 not in str(refused.value)
    # one more character tells them apart
    assert tracker.resolve_run_id("abcdef01") == first
    assert tracker.resolve_run_id("abcdef02") == second
    assert tracker.run_ids_starting_with("abcdef") == [first, second]


def test_run_ids_starting_with_keeps_to_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    run_ids = [f"abcdef{i:02x}" + "0" * 24 for i in range(12)]
    tracker = _memory_tracker_with_ids(monkeypatch, run_ids)
    assert tracker.run_ids_starting_with("abcdef", limit=3) == run_ids[:3]
    assert len(tracker.run_ids_starting_with("abcdef")) == 10


def test_the_in_memory_tracker_takes_its_artifact_folder_with_it(tmp_path: Path) -> None:
    """Each one held a checkpoint or two (45 MB) in a temp folder that outlived it: a test
    run left thousands of them."""
    import gc

    tracker = InMemoryTracker()
    run_id = tracker.start_run("r", {}, {})
    (tmp_path / "best.pt").write_bytes(b"weights")
    tracker.log_artifact(run_id, tmp_path / "best.pt", "checkpoints")
    folder = tracker._artifacts
    assert (folder / run_id / "checkpoints" / "best.pt").is_file()
    del tracker
    gc.collect()
    assert not folder.exists()
