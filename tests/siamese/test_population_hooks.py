"""A population member's callbacks get the hooks `fit` gives (checkpoint files included),
in its order; a member that a callback stops, fails or interrupts ends alone (on Ctrl-C,
with all the others), and its weights no longer change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.gpu_checks import interrupted_after
from siamese import PairData, fit, prepare_data
from siamese.train import Callback, EpochRecord, History, load_checkpoint
from siamese.train.population import fit_population
from tests.siamese.test_population import TINY, assert_same_history, assert_same_weights, cfg


@pytest.fixture(scope="module")
def tiny() -> PairData:
    return prepare_data(TINY)


class Recorder(Callback):
    """Every hook call, in order; stops its run with `stop` after epoch `at`."""

    def __init__(
        self,
        stop: str | None = None,
        at: int = 1,
        raises: BaseException | None = None,
        raises_at_start: int | None = None,
    ):
        self.stop, self.at, self.raises = stop, at, raises
        self.raises_at_start = raises_at_start  # the epoch whose on_epoch_start raises `raises`
        self.calls: list[tuple[Any, ...]] = []

    def on_fit_start(self, history: History) -> None:
        self.calls.append(("start",))

    def on_epoch_start(self, epoch: int) -> None:
        self.calls.append(("steps", epoch))
        if epoch == self.raises_at_start and self.raises is not None:
            raise self.raises

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        self.calls.append(("epoch", record.epoch))
        if record.epoch == self.at and self.raises is not None and self.raises_at_start is None:
            raise self.raises
        return self.stop if record.epoch >= self.at else None

    def on_checkpoint(self, path: Path, kind: str, epoch: int) -> None:
        self.calls.append((kind, epoch))

    def on_fit_end(self, history: History) -> None:
        self.calls.append(("end", history.stop_reason))


def test_a_pruned_member_stops_and_its_weights_stop_changing(
    tiny: PairData, tmp_path: Path
) -> None:
    pruned, going = cfg(optimizer="sgd", seed=1), cfg(optimizer="sgd", lr=0.02, seed=2)
    pruner, watcher = Recorder(stop="pruned", at=1), Recorder()
    results = fit_population(
        [pruned, going],
        tiny,
        [[pruner], [watcher]],
        [tmp_path / "p", tmp_path / "g"],
        checkpoint_every_s=None,
    )
    first, second = results
    assert first.history.stop_reason == "pruned" and len(first.history.records) == 1
    hooks = [("start",), ("steps", 1), ("epoch", 1), ("last", 1), ("best", 1), ("end", "pruned")]
    assert pruner.calls == hooks
    # Its weights are its epoch-1 checkpoint's: the second epoch did not move them.
    assert_same_weights(
        first.model.state_dict(), load_checkpoint(tmp_path / "p" / "last.pt")["model"], 0.0
    )
    alone = Recorder(stop="pruned", at=1)
    theirs = fit(pruned, tiny, callbacks=[alone], checkpoint_dir=tmp_path / "alone")
    assert_same_history(first.history, theirs.history, rel=1e-6)
    # The same hooks in the same order as fit's (fit reports an epoch's files before it)
    assert [call for call in alone.calls if call not in {("last", 1), ("best", 1)}] == [
        call for call in hooks if call not in {("last", 1), ("best", 1)}
    ]
    assert second.history.stop_reason == "completed" and len(second.history.records) == 2
    assert watcher.calls[-1] == ("end", "completed")
    assert [call for call in watcher.calls if call[0] == "steps"] == [("steps", 1), ("steps", 2)]


def test_a_failing_callback_ends_its_member_alone(tiny: PairData) -> None:
    broken, fine = Recorder(raises=OSError("tracking server gone")), Recorder()
    results = fit_population(
        [cfg(optimizer="sgd", seed=1), cfg(optimizer="sgd", seed=2)], tiny, [[broken], [fine]]
    )
    assert results[0].history.stop_reason == "error"
    assert isinstance(results[0].error, OSError) and broken.calls[-1] == ("end", "error")
    assert results[1].error is None and results[1].history.stop_reason == "completed"
    assert fine.calls[-1] == ("end", "completed") and len(results[1].history.records) == 2


def test_a_member_whose_epoch_start_fails_takes_no_more_steps(tiny: PairData) -> None:
    """Its hook failed before epoch 2's steps: it ends with epoch 1's weights, as a fit run
    whose callback raised there would, and the other member trains on."""
    failing = Recorder(raises=OSError("tracking server gone"), raises_at_start=2)
    first, second = cfg(optimizer="sgd", seed=1), cfg(optimizer="sgd", seed=2)
    results = fit_population([first, second], tiny, [[failing], [Recorder()]])
    assert results[0].history.stop_reason == "error" and len(results[0].history.records) == 1
    assert failing.calls[-2:] == [("steps", 2), ("end", "error")]
    one_epoch = fit(replace(first, epochs=1), tiny)
    assert_same_weights(results[0].model.state_dict(), one_epoch.model.state_dict(), 1e-6)
    assert results[1].history.stop_reason == "completed" and len(results[1].history.records) == 2
    with pytest.raises(OSError, match="server gone"):  # fit: the same hook fails the run
        fit(first, tiny, callbacks=[Recorder(raises=OSError("server gone"), raises_at_start=2)])


def test_ctrl_c_ends_every_member_and_is_raised(tiny: PairData) -> None:
    stopper, other = Recorder(raises=KeyboardInterrupt()), Recorder()
    with pytest.raises(KeyboardInterrupt):
        fit_population(
            [cfg(optimizer="sgd", seed=1), cfg(optimizer="sgd", seed=2)], tiny, [[stopper], [other]]
        )
    assert stopper.calls[-1] == ("end", "interrupted") and other.calls[-1] == ("end", "interrupted")


def test_checkpoint_files_are_written_at_the_interval_and_at_the_end(
    tiny: PairData, tmp_path: Path
) -> None:
    config = cfg(optimizer="sgd")
    every, at_end = Recorder(), Recorder()
    fit_population([config], tiny, [[every]], [tmp_path / "a"], checkpoint_every_s=0)
    fit_population([config], tiny, [[at_end]], [tmp_path / "b"], checkpoint_every_s=None)
    assert [c for c in every.calls if c[0] == "last"] == [("last", 1), ("last", 2)]
    written = [c for c in at_end.calls if c[0] in ("best", "last")]
    assert ("last", 2) in written and len(written) == 2  # its best and last, once each
    assert at_end.calls[-1] == ("end", "completed")


@pytest.mark.parametrize("lean", [False, True], ids=["train", "search trial"])
def test_ctrl_c_mid_epoch_keeps_each_members_last_finished_epoch(
    tiny: PairData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lean: bool
) -> None:
    """No file was due yet (a GPU population writes every 300 s): the epoch each member
    finished last is written from the copy kept on the device, not the weights the
    interrupted epoch has moved since, and resumes to where fit goes straight."""
    configs = [cfg(optimizer="sgd", seed=1, epochs=3), cfg(optimizer="sgd", seed=2, epochs=3)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    # 2 steps an epoch: epoch 3's first has changed the weights when Ctrl-C lands.
    with interrupted_after(5), pytest.raises(KeyboardInterrupt):
        fit_population(configs, tiny, None, dirs, checkpoint_every_s=None, lean_checkpoints=lean)
    for config, folder in zip(configs, dirs, strict=True):
        last = load_checkpoint(folder / "last.pt")
        assert last["epoch"] == 2 and last.get("resumable", True) is True
        assert (folder / "best.pt").is_file()
        resumed = fit(config, tiny, resume_from=folder / "last.pt")
        straight = fit(config, tiny)
        assert_same_history(resumed.history, straight.history, rel=1e-6)
        assert_same_weights(resumed.model.state_dict(), straight.model.state_dict(), 1e-6)


def test_a_member_whose_callback_fails_keeps_its_last_epoch_as_fit_does(
    tiny: PairData, tmp_path: Path
) -> None:
    """No file was due yet: the failing member's last epoch is written from the device's
    copy (it had no file at all), and the other member trains on to its end."""
    failing, other = (
        Recorder(raises=RuntimeError("the tracking server went away"), at=3),
        Recorder(),
    )
    configs = [cfg(optimizer="sgd", seed=1, epochs=4), cfg(optimizer="sgd", seed=2, epochs=4)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    results = fit_population(configs, tiny, [[failing], [other]], dirs, checkpoint_every_s=None)
    assert isinstance(results[0].error, RuntimeError) and results[1].error is None
    assert load_checkpoint(dirs[0] / "last.pt")["epoch"] == 3
    assert load_checkpoint(dirs[1] / "last.pt")["epoch"] == 4
    # Epoch 3's weights: those a clean three-epoch population ends with.
    fit_population([replace(configs[0], epochs=3)], tiny, None, [tmp_path / "c"])
    kept, clean = load_checkpoint(dirs[0] / "last.pt"), load_checkpoint(tmp_path / "c" / "last.pt")
    assert all(torch.equal(kept["model"][n], t) for n, t in clean["model"].items())
