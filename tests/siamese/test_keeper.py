"""A lean keeper (a search trial's checkpoints): a run that ends on its own keeps its best
weights only, written once from memory, and never writes its final epoch's full state; a
run that is interrupted keeps everything a resume needs, the final epoch included. With an
interval, it writes at most that often, and holds frozen copies of what it has not written."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from siamese import DataConfig, PairData, TrainConfig, fit
from siamese.train import Callback, EpochRecord, History, load_checkpoint
from siamese.train import keeper as keeper_module
from siamese.train.keep import keep_weights_only
from siamese.train.keeper import CheckpointKeeper
from siamese.train.snapshot import Spares
from tests.siamese.test_train import StopAfter

CONFIG = TrainConfig(
    epochs=3,
    device="cpu",
    precision="fp32",
    data=DataConfig(train_pairs=384, val_pairs=192),
)


def _record(epoch: int, val_auc: float) -> EpochRecord:
    return EpochRecord(epoch, 0.5, 0.5, 0.5, val_auc, {}, 1e-3, 0.0, 0.0, 0.1, 0.5, 1.0, 1.0)


class _Training:
    """A run's live state: one weight tensor that each epoch changes in place."""

    def __init__(self) -> None:
        self.weight = torch.zeros(3)

    def state(self) -> dict[str, Any]:
        return {
            "model": {"w": self.weight},  # the live tensor, as state_dict() gives it
            "optimizer": {"state": {0: {"exp_avg": self.weight * 2}}, "param_groups": []},
            "config": {},
            "history": {},
            "rng": {"torch": torch.ones(2, dtype=torch.uint8)},
        }


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, bool]]:
    """(file name, epoch, resumable) of every checkpoint the keeper writes."""
    files: list[tuple[str, int, bool]] = []
    real_save = keeper_module.save_checkpoint

    def recording_save(path: Path, payload: dict[str, Any], durable: bool = True) -> None:
        files.append((path.name, int(payload["epoch"]), payload.get("resumable", True)))
        real_save(path, payload, durable)

    monkeypatch.setattr(keeper_module, "save_checkpoint", recording_save)
    return files


def _train(keeper: CheckpointKeeper, training: _Training, aucs: list[float]) -> None:
    """Epochs as fit runs them: the previous epoch written before the weights change."""
    for epoch, auc in enumerate(aucs, start=1):
        keeper.write_pending()
        training.weight += 1.0  # the epoch's training, in place
        keeper.save(_record(epoch, auc), training.state)


def test_a_finished_run_writes_its_best_weights_once_and_never_its_final_full_state(
    tmp_path: Path, written: list[tuple[str, int, bool]]
) -> None:
    keeper, training = CheckpointKeeper(tmp_path, lambda *_: None, lean=True), _Training()
    _train(keeper, training, [0.7, 0.9, 0.8])
    assert written == [("last.pt", 1, True), ("last.pt", 2, True)]  # epoch 3's: not yet
    keeper.finish("completed")
    assert written[2:] == [("best.pt", 2, False)]  # from memory; epoch 3 never written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    best = load_checkpoint(tmp_path / "best.pt")
    # Epoch 2's weights, not the live tensor's after epoch 3 (the copy was taken then).
    assert best["epoch"] == 2 and torch.equal(best["model"]["w"], torch.full((3,), 2.0))
    assert best["optimizer"] == {} and best["resumable"] is False


def test_an_interrupted_run_writes_its_final_epoch_in_full(
    tmp_path: Path, written: list[tuple[str, int, bool]]
) -> None:
    keeper, training = CheckpointKeeper(tmp_path, lambda *_: None, lean=True), _Training()
    _train(keeper, training, [0.7, 0.9, 0.8])
    keeper.finish("interrupted")
    assert written[-1] == ("last.pt", 3, True)
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert last["epoch"] == 3 and torch.equal(last["model"]["w"], torch.full((3,), 3.0))
    assert last["optimizer"]["state"][0]["exp_avg"].tolist() == [6.0, 6.0, 6.0]
    assert best["epoch"] == 2 and best.get("resumable", True) is True


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_within_its_interval_a_keeper_writes_nothing_yet_ctrl_c_keeps_each_epoch_as_it_was(
    tmp_path: Path, written: list[tuple[str, int, bool]]
) -> None:
    clock, training = _Clock(), _Training()
    keeper = CheckpointKeeper(tmp_path, lambda *_: None, lean=True, every_s=30.0, clock=clock)
    _train(keeper, training, [0.7, 0.9, 0.8])  # epoch 2 the best, epoch 3 the last
    keeper.write_pending()  # epoch 4 begins...
    training.weight += 1.0  # ...and changes the live weights before Ctrl-C
    assert written == []
    keeper.finish("interrupted")
    assert sorted(written) == [("best.pt", 2, True), ("last.pt", 3, True)]
    # Each as it was at its epoch's end, not the live tensors' values now (4.0).
    _assert_kept_as_they_were(tmp_path, last_epoch=3, best_epoch=2)


def _assert_kept_as_they_were(folder: Path, last_epoch: int, best_epoch: int) -> None:
    """last.pt and best.pt hold _Training's state at the end of those epochs (epoch e:
    weights e, exp_avg 2e), in full."""
    last, best = load_checkpoint(folder / "last.pt"), load_checkpoint(folder / "best.pt")
    assert torch.equal(last["model"]["w"], torch.full((3,), float(last_epoch)))
    assert last["optimizer"]["state"][0]["exp_avg"].tolist() == [2.0 * last_epoch] * 3
    assert torch.equal(best["model"]["w"], torch.full((3,), float(best_epoch)))


def test_held_epochs_reuse_spent_copies_and_ctrl_c_still_keeps_each_as_it_was(
    tmp_path: Path, written: list[tuple[str, int, bool]]
) -> None:
    """Each epoch start freezes the last epoch into the copy of one written or superseded
    since (no 23 MB allocation per epoch), never into the best epoch's, still held."""
    clock, training, spares = _Clock(), _Training(), Spares()
    keeper = CheckpointKeeper(
        tmp_path, lambda *_: None, lean=True, every_s=30.0, clock=clock, spares=spares
    )
    frozen: list[torch.Tensor] = []
    for epoch, auc in enumerate([0.9, 0.5, 0.4, 0.3, 0.2], start=1):
        keeper.write_pending()
        if keeper._pending is not None:
            frozen.append(keeper._pending.payload["model"]["w"])
        training.weight += 1.0
        keeper.save(_record(epoch, auc), training.state)
    # Epochs 1-4 frozen as epochs 2-5 began: epoch 1 is held as the best; 2's copy, spent
    # when epoch 3 superseded it, took 3's; 3's (that same tensor) then took 4's.
    assert frozen[2] is frozen[1] and frozen[3] is frozen[1] and frozen[0] is not frozen[1]
    keeper.write_pending()  # epoch 6 begins...
    training.weight += 1.0  # ...and changes the live weights before Ctrl-C
    keeper.finish("interrupted")
    assert sorted(written) == [("best.pt", 1, True), ("last.pt", 5, True)]
    _assert_kept_as_they_were(tmp_path, last_epoch=5, best_epoch=1)


def test_the_next_run_freezes_into_the_copies_the_last_one_let_go(tmp_path: Path) -> None:
    """A search's trials end one after another: the held epochs of one become the copies
    the next one's first held epoch goes into."""
    clock, spares = _Clock(), Spares()
    frozen: list[torch.Tensor] = []
    for trial, aucs in enumerate([[0.9, 0.8], [0.7, 0.6]]):
        folder, training = tmp_path / f"trial-{trial}", _Training()
        keeper = CheckpointKeeper(
            folder, lambda *_: None, lean=True, every_s=30.0, clock=clock, spares=spares
        )
        for epoch, auc in enumerate(aucs, start=1):
            keeper.write_pending()
            if keeper._pending is not None:
                frozen.append(keeper._pending.payload["model"]["w"])
            training.weight += float(10 * trial + epoch)
            keeper.save(_record(epoch, auc), training.state)
        keeper.finish("completed")  # epoch 1, the best, held until now: let go
        assert load_checkpoint(folder / "best.pt")["model"]["w"].tolist() == [10 * trial + 1] * 3
    assert frozen[1] is frozen[0]


def test_a_weights_only_file_that_fails_leaves_the_full_state_to_the_error_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As fit does: `finish("completed")` raises, then `finish("error")`. The last epoch,
    held in memory, was let go before its weights-only file was written: lost with it."""
    real_save, failed = keeper_module.save_checkpoint, list[str]()

    def fails_once(path: Path, payload: dict[str, Any], durable: bool = True) -> None:
        if payload.get("resumable") is False and not failed:
            failed.append(path.name)
            raise OSError(5, "Input/output error")
        real_save(path, payload, durable)

    keeper, training = CheckpointKeeper(tmp_path, lambda *_: None, lean=True), _Training()
    _train(keeper, training, [0.7, 0.9])  # epoch 1 on disk, epoch 2 held
    monkeypatch.setattr(keeper_module, "save_checkpoint", fails_once)
    with pytest.raises(OSError):
        keeper.finish("completed")
    keeper.finish("error")
    last = load_checkpoint(tmp_path / "last.pt")
    assert failed == ["best.pt"] and last["epoch"] == 2
    assert torch.equal(last["model"]["w"], torch.full((3,), 2.0))
    assert last["optimizer"]["state"][0]["exp_avg"].tolist() == [4.0, 4.0, 4.0]


def test_a_keeper_writes_once_its_interval_has_passed(
    tmp_path: Path, written: list[tuple[str, int, bool]]
) -> None:
    clock, training = _Clock(), _Training()
    keeper = CheckpointKeeper(tmp_path, lambda *_: None, lean=True, every_s=30.0, clock=clock)
    _train(keeper, training, [0.9, 0.8])
    clock.now = 31.0
    _train_more(keeper, training, 3, [0.7])
    # Epoch 2 as epoch 3 began, and the best epoch it had held back (1) with it.
    assert sorted(written) == [("best.pt", 1, True), ("last.pt", 2, True)]
    clock.now = 40.0  # 9 s after that write: epoch 3 waits
    keeper.write_pending()
    assert len(written) == 2
    keeper.finish("completed")
    assert written[2:] == [("best.pt", 1, False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_ctrl_c_while_held_files_are_written_waits_for_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal that lands while the first held file is written (as `search --jobs`'s
    SIGTERM follows a Ctrl-C) is acted on once both are: it never costs the last.pt a retry
    resumes from, nor the best epoch."""
    real_save = keeper_module.save_checkpoint

    def save_then_ctrl_c(path: Path, payload: dict[str, Any], durable: bool = True) -> None:
        real_save(path, payload, durable)
        os.kill(os.getpid(), signal.SIGINT)

    clock, training = _Clock(), _Training()
    keeper = CheckpointKeeper(tmp_path, lambda *_: None, lean=True, every_s=30.0, clock=clock)
    _train(keeper, training, [0.9, 0.8])  # both held: epoch 1 the best, epoch 2 the last
    clock.now = 31.0
    monkeypatch.setattr(keeper_module, "save_checkpoint", save_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        keeper.write_pending()
    monkeypatch.setattr(keeper_module, "save_checkpoint", real_save)
    keeper.finish("interrupted")  # as fit does then: nothing is left to write
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def _train_more(
    keeper: CheckpointKeeper, training: _Training, first: int, aucs: list[float]
) -> None:
    for epoch, auc in enumerate(aucs, start=first):
        keeper.write_pending()
        training.weight += 1.0
        keeper.save(_record(epoch, auc), training.state)


def test_a_run_without_a_finite_auc_keeps_its_last_epoch_weights_only(tmp_path: Path) -> None:
    keeper, training = CheckpointKeeper(tmp_path, lambda *_: None, lean=True), _Training()
    _train(keeper, training, [math.nan, math.nan])
    keeper.finish("completed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 2 and kept["resumable"] is False


def test_what_tracking_is_told_is_the_file_that_stays(tmp_path: Path) -> None:
    told: list[tuple[str, str, int]] = []
    keeper = CheckpointKeeper(tmp_path, lambda p, kind, e: told.append((p.name, kind, e)), True)
    _train(keeper, _Training(), [0.9])
    keeper.finish("pruned")
    assert told == [("best.pt", "best", 1)]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_a_lean_fit_keeps_what_a_full_fit_shrunk_afterwards_keeps(
    tmp_path: Path, small_data: PairData
) -> None:
    full, lean = tmp_path / "full", tmp_path / "lean"
    fit(CONFIG, small_data, checkpoint_dir=full)
    keep_weights_only(full)  # the way a finished trial was kept before
    result = fit(CONFIG, small_data, checkpoint_dir=lean, lean_checkpoints=True)
    assert sorted(p.name for p in lean.iterdir()) == sorted(p.name for p in full.iterdir())
    kept = sorted(full.iterdir())[0].name
    assert load_checkpoint(lean / kept)["epoch"] == load_checkpoint(full / kept)["epoch"]
    expected = _weights(full / kept)
    for name, tensor in _weights(lean / kept).items():
        assert torch.equal(tensor, expected[name]), name
    assert result.best_checkpoint == lean / "best.pt"


class _InterruptAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        if record.epoch == self.epoch:
            raise KeyboardInterrupt
        return None


@pytest.mark.parametrize("every_s", [0.0, 1e9], ids=["every epoch", "held in memory"])
def test_a_lean_fit_interrupted_resumes_to_the_same_end(
    tmp_path: Path, small_data: PairData, every_s: float
) -> None:
    with pytest.raises(KeyboardInterrupt):
        fit(
            CONFIG,
            small_data,
            [_InterruptAt(2)],
            tmp_path / "a",
            lean_checkpoints=True,
            checkpoint_every_s=every_s,
        )
    last = load_checkpoint(tmp_path / "a" / "last.pt")
    assert last["epoch"] == 2 and last["optimizer"]  # epoch 2's, in full
    resumed = fit(CONFIG, small_data, resume_from=tmp_path / "a" / "last.pt")
    straight = fit(CONFIG, small_data)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name


def test_a_lean_fit_pruned_in_its_first_epoch_writes_one_small_file(
    tmp_path: Path, small_data: PairData, written: list[tuple[str, int, bool]]
) -> None:
    fit(CONFIG, small_data, [StopAfter(1)], tmp_path, lean_checkpoints=True)
    assert written == [("best.pt", 1, False)]
