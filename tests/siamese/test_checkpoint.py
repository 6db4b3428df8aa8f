import errno
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch

from siamese import CheckpointError, ConfigError, DataConfig, PairData, TrainConfig, fit
from siamese.files import link_atomically
from siamese.train import Callback, load_checkpoint, save_checkpoint
from siamese.train.history import EpochRecord
from siamese.train.keeper import CheckpointKeeper
from tests.siamese.test_train import StopAfter


def cfg(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192))


def test_checkpoint_round_trip(tmp_path: Path, small_data: PairData) -> None:
    result = fit(cfg(2), small_data, checkpoint_dir=tmp_path)
    assert (
        result.last_checkpoint == tmp_path / "last.pt"
        and result.best_checkpoint == tmp_path / "best.pt"
    )
    payload = load_checkpoint(tmp_path / "last.pt")
    assert payload["epoch"] == 2 and payload["config"] == cfg(2).to_dict()
    assert len(payload["history"]["records"]) == 2
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(payload["model"][name], tensor)
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_resume_ends_where_the_uninterrupted_run_would(
    tmp_path: Path, small_data: PairData
) -> None:
    straight = fit(cfg(3), small_data, checkpoint_dir=tmp_path / "a")
    fit(
        cfg(3), small_data, callbacks=[StopAfter(1)], checkpoint_dir=tmp_path / "b"
    )  # "killed" after epoch 1
    resumed = fit(
        cfg(3), small_data, checkpoint_dir=tmp_path / "b", resume_from=tmp_path / "b" / "last.pt"
    )
    assert [r.epoch for r in resumed.history.records] == [1, 2, 3]
    assert resumed.history.records[-1].train_loss == straight.history.records[-1].train_loss
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_resume_refuses_a_different_config(tmp_path: Path, small_data: PairData) -> None:
    fit(cfg(1), small_data, checkpoint_dir=tmp_path)
    other = TrainConfig(
        epochs=2, lr=0.1, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192)
    )
    with pytest.raises(ConfigError, match="lr"):
        fit(other, small_data, resume_from=tmp_path / "last.pt")


def test_corrupt_checkpoint_is_rejected_naming_the_file(
    tmp_path: Path, small_data: PairData
) -> None:
    fit(cfg(1), small_data, checkpoint_dir=tmp_path)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        load_checkpoint(tmp_path / "cut.pt")


class Payload:
    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (print, ("this must never run",))


def test_unsafe_checkpoint_is_refused_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "siamese-lab-checkpoint/1", "x": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*refused"):
        load_checkpoint(path)


def test_foreign_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a siamese-lab checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")


def _payload() -> dict[str, Any]:
    return {"model": {}, "optimizer": {}, "epoch": 1, "config": {}, "history": {}, "rng": {}}


# What signal.signal accepts as a handler.
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
SetHandler = Callable[[Handler], object]


@pytest.fixture
def sigint_handler() -> Iterator[SetHandler]:
    """Sets SIGINT's handler for one test. Python installs its KeyboardInterrupt handler only
    when SIGINT is not ignored at start-up, and a shell ignores it for background jobs."""
    previous = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_during_a_write_lands_after_it(
    tmp_path: Path, sigint_handler: SetHandler
) -> None:
    from siamese.train.checkpoint import signals_deferred

    sigint_handler(signal.default_int_handler)
    finished = False
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # arrives "during" the write below
        save_checkpoint(tmp_path / "last.pt", _payload())
        finished = True
    assert finished
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_an_ignored_interrupt_stays_ignored_after_a_write(
    tmp_path: Path, sigint_handler: SetHandler
) -> None:
    from siamese.train.checkpoint import signals_deferred

    sigint_handler(signal.SIG_IGN)  # e.g. `nohup cmd &`: the process was told to ignore Ctrl-C
    with signals_deferred():  # raises nothing when it hands the held signal back
        os.kill(os.getpid(), signal.SIGINT)
        save_checkpoint(tmp_path / "last.pt", _payload())
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


class _Inodes(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def on_checkpoint(self, path: Path, kind: str, epoch: int) -> None:
        self.seen.append((kind, epoch, path.stat().st_ino))


def test_best_is_a_second_name_for_the_epoch_just_saved_not_a_second_write(
    tmp_path: Path, small_data: PairData
) -> None:
    inodes = _Inodes()
    fit(cfg(3), small_data, checkpoint_dir=tmp_path, callbacks=[inodes])
    last_inode = {epoch: ino for kind, epoch, ino in inodes.seen if kind == "last"}
    best = [(epoch, ino) for kind, epoch, ino in inodes.seen if kind == "best"]
    assert best and all(ino == last_inode[epoch] for epoch, ino in best)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == best[-1][0]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_saving_last_again_leaves_the_linked_best_as_it_was(tmp_path: Path) -> None:
    payload: dict[str, Any] = {"model": {}, "optimizer": {}, "config": {}, "history": {}, "rng": {}}
    save_checkpoint(tmp_path / "last.pt", {**payload, "epoch": 1})
    assert link_atomically(tmp_path / "last.pt", tmp_path / "best.pt")
    save_checkpoint(tmp_path / "last.pt", {**payload, "epoch": 2})
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def test_linking_the_same_file_twice_leaves_nothing_behind(tmp_path: Path) -> None:
    payload = {"model": {}, "optimizer": {}, "config": {}, "history": {}, "rng": {}, "epoch": 1}
    save_checkpoint(tmp_path / "last.pt", payload)
    assert link_atomically(tmp_path / "last.pt", tmp_path / "best.pt")
    assert link_atomically(tmp_path / "last.pt", tmp_path / "best.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_without_hard_links_best_is_written_in_full(
    tmp_path: Path, small_data: PairData, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    inodes = _Inodes()
    fit(cfg(2), small_data, checkpoint_dir=tmp_path, callbacks=[inodes])
    last_inode = {epoch: ino for kind, epoch, ino in inodes.seen if kind == "last"}
    best = [(epoch, ino) for kind, epoch, ino in inodes.seen if kind == "best"]
    assert best and all(ino != last_inode[epoch] for epoch, ino in best)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == best[-1][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no leftovers


def _with_best_epoch(path: Path, epoch: int) -> dict[str, Any]:
    """Rewrites a checkpoint's history so that `epoch` is its best one, whatever the real
    run measured: the resume tests must not depend on which epoch happened to win."""
    payload = load_checkpoint(path)
    for record in payload["history"]["records"]:
        record["val_auc"] = 0.99 if record["epoch"] == epoch else 0.5
    payload["best_val_auc"] = 0.99
    save_checkpoint(path, payload)
    return payload


def test_resume_repairs_a_best_checkpoint_left_stale_by_a_crash(
    tmp_path: Path, small_data: PairData
) -> None:
    fit(cfg(2), small_data, checkpoint_dir=tmp_path)
    last = _with_best_epoch(tmp_path / "last.pt", 2)
    # The crash window: last.pt (epoch 2, the best) was saved, best.pt was not yet linked.
    save_checkpoint(tmp_path / "best.pt", {**last, "epoch": 1})
    # Resumed with nothing left to train: only the resume itself can put best.pt right.
    fit(cfg(2), small_data, checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


def test_resume_into_a_new_folder_brings_the_best_checkpoint_along(
    tmp_path: Path, small_data: PairData
) -> None:
    fit(cfg(2), small_data, checkpoint_dir=tmp_path / "a")
    resumed = fit(  # nothing left to train: the folder gets its best.pt from the resume
        cfg(2), small_data, checkpoint_dir=tmp_path / "b", resume_from=tmp_path / "a" / "last.pt"
    )
    best = resumed.history.best
    assert best is not None and resumed.best_checkpoint == tmp_path / "b" / "best.pt"
    assert load_checkpoint(tmp_path / "b" / "best.pt")["epoch"] == best.epoch


def test_resume_into_a_new_folder_links_an_earlier_best_and_reports_it(
    tmp_path: Path, small_data: PairData
) -> None:
    fit(cfg(2), small_data, checkpoint_dir=tmp_path / "a")
    last = _with_best_epoch(tmp_path / "a" / "last.pt", 1)
    save_checkpoint(tmp_path / "a" / "best.pt", {**last, "epoch": 1})
    inodes = _Inodes()
    fit(
        cfg(2),
        small_data,
        checkpoint_dir=tmp_path / "b",
        callbacks=[inodes],
        resume_from=tmp_path / "a" / "last.pt",
    )
    old_best, new_best = tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt"
    assert new_best.stat().st_ino == old_best.stat().st_ino
    assert ("best", 1, new_best.stat().st_ino) in inodes.seen  # so tracking uploads it


def test_resume_does_not_trust_a_best_checkpoint_of_another_run(
    tmp_path: Path, small_data: PairData
) -> None:
    fit(cfg(2), small_data, checkpoint_dir=tmp_path / "a")
    last = _with_best_epoch(tmp_path / "a" / "last.pt", 1)
    save_checkpoint(tmp_path / "a" / "best.pt", {**last, "epoch": 7})  # not epoch 1's file
    fit(cfg(3), small_data, checkpoint_dir=tmp_path / "a", resume_from=tmp_path / "a" / "last.pt")
    # Nothing holds epoch 1 any more: the resumed run's own next epoch becomes best.pt.
    assert load_checkpoint(tmp_path / "a" / "best.pt")["epoch"] == 3


def test_the_digest_covers_every_value_and_is_rewritten_on_each_save(tmp_path: Path) -> None:
    from siamese.train.integrity import DIGEST_KEY, payload_digest

    payload = {
        **_payload(),
        "model": {"w": torch.arange(6.0).reshape(2, 3).t(), "b": torch.tensor(1.5)},
        "rng": {"torch": torch.ones(3, dtype=torch.bfloat16)},
        "history": {"records": [{"val_auc": 0.75, "betas": (0.9, 0.999)}]},
    }
    save_checkpoint(tmp_path / "last.pt", payload)
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded[DIGEST_KEY].startswith("sha256:")
    assert loaded[DIGEST_KEY] == payload_digest(loaded)  # tuples read back as tuples or lists
    changed = {**loaded, "history": {"records": [{"val_auc": 0.76, "betas": (0.9, 0.999)}]}}
    assert payload_digest(changed) != loaded[DIGEST_KEY]  # not only tensors: the history too
    save_checkpoint(tmp_path / "last.pt", changed)  # carries the old digest: replaced
    assert load_checkpoint(tmp_path / "last.pt")["history"]["records"][0]["val_auc"] == 0.76


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files fsynced from now on (folders left out), in order."""
    names: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not target.is_dir():
            names.append(target.name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return names


def test_a_run_fsyncs_its_last_checkpoint_once_at_the_end_not_every_epoch(
    tmp_path: Path, small_data: PairData, synced: list[str]
) -> None:
    fit(cfg(3), small_data, checkpoint_dir=tmp_path)
    assert synced == ["last.pt"]  # 3 epochs written, one fsync: when the run stopped
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_an_explicit_durable_save_fsyncs_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    save_checkpoint(tmp_path / "a.pt", _payload(), durable=False)
    assert calls == []
    save_checkpoint(tmp_path / "b.pt", _payload())
    assert len(calls) == 2  # the file, then its folder (the rename)


def _run_state() -> dict[str, Any]:
    return {"model": {"w": torch.zeros(2)}, "optimizer": {}, "config": {}, "history": {}, "rng": {}}


def _record(epoch: int, val_auc: float) -> EpochRecord:
    return EpochRecord(epoch, 0.5, 0.5, 0.5, val_auc, {}, 1e-3, 0.0, 0.0, 0.1, 0.5, 1.0, 1.0)


@pytest.mark.parametrize(
    "aucs,expected", [((0.9, 0.8), ["last.pt", "best.pt"]), ((0.8, 0.9), ["last.pt"])]
)
def test_the_end_of_a_run_fsyncs_an_earlier_epochs_best_checkpoint_too(
    tmp_path: Path, aucs: tuple[float, float], expected: list[str], synced: list[str]
) -> None:
    """best.pt links the last.pt of its epoch; when a later epoch did worse, that file is no
    longer last.pt, and was written without an fsync like every epoch's."""
    keeper = CheckpointKeeper(tmp_path, lambda path, kind, epoch: None)
    for epoch, auc in enumerate(aucs, start=1):
        keeper.save(_record(epoch, auc), _run_state)
    synced.clear()  # the saves' own fsyncs (best.pt's first link) are not the question
    keeper.settle()
    assert synced == expected
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == aucs.index(max(aucs)) + 1
