"""Silent corruption (issue 9 item 8): one flipped bit inside a tensor's bytes in a
checkpoint. torch checks no checksum when it loads, so the file loads and a resume would
train on the damaged weights; the digest stored with the checkpoint catches it, and a
resume falls back on a sound best.pt, or stops with one line naming the file."""

from __future__ import annotations

import logging
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from search.cli import cli
from siamese import DataConfig, PairData, TrainConfig, fit
from siamese.errors import CorruptCheckpointError
from siamese.train import load_checkpoint
from siamese.train.checkpoint import FORMAT


def cfg(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, device="cpu", data=DataConfig(train_pairs=384, val_pairs=192))


def flip_a_bit_in_the_largest_tensor(path: Path) -> None:
    """Flips one bit in the middle of the largest tensor's bytes (the fc weight or its
    optimizer state), in place: the zip's directory and CRC fields stay as they were."""
    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda e: e.file_size)
    assert "/data/" in entry.filename and entry.compress_type == zipfile.ZIP_STORED
    with open(path, "r+b") as handle:
        handle.seek(entry.header_offset + 26)  # the local header: name and extra lengths
        name_len, extra_len = struct.unpack("<HH", handle.read(4))
        where = entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2
        handle.seek(where)
        byte = handle.read(1)[0]
        handle.seek(where)
        handle.write(bytes([byte ^ 0x10]))


def tensors(payload: dict[str, Any]) -> list[torch.Tensor]:
    state = payload["optimizer"]["state"]
    moments = [t for k in sorted(state) for t in state[k].values() if isinstance(t, torch.Tensor)]
    return [*payload["model"].values(), *moments]


def corrupt_message(path: Path) -> str:
    return re.escape(f"{path}: its tensors do not match their digest: the file is corrupt")


def test_a_flipped_bit_loads_silently_in_torch_but_not_here(
    tmp_path: Path, small_data: PairData
) -> None:
    fit(cfg(1), small_data, checkpoint_dir=tmp_path)
    path = tmp_path / "damaged.pt"
    shutil.copyfile(tmp_path / "last.pt", path)  # a copy: best.pt is a hard link to last.pt
    flip_a_bit_in_the_largest_tensor(path)
    raw = torch.load(path, weights_only=True)  # what the fault is: torch does not notice
    sound = load_checkpoint(tmp_path / "last.pt")
    pairs = zip(tensors(raw), tensors(sound), strict=True)
    changed = [i for i, (a, b) in enumerate(pairs) if not torch.equal(a, b)]
    assert len(changed) == 1  # one weight (or its Adam moment) differs, by one bit
    with pytest.raises(CorruptCheckpointError, match=corrupt_message(path)):
        load_checkpoint(path)


def test_resume_from_a_corrupt_last_falls_back_on_a_sound_best_and_says_so(
    tmp_path: Path, small_data: PairData, caplog: pytest.LogCaptureFixture
) -> None:
    straight = fit(cfg(2), small_data, checkpoint_dir=tmp_path / "a")
    folder = tmp_path / "b"
    fit(cfg(1), small_data, checkpoint_dir=folder)
    shutil.copyfile(folder / "last.pt", tmp_path / "epoch1.pt")
    fit(cfg(2), small_data, checkpoint_dir=folder, resume_from=folder / "last.pt")
    (tmp_path / "epoch1.pt").replace(folder / "best.pt")  # best.pt: epoch 1, its own file
    flip_a_bit_in_the_largest_tensor(folder / "last.pt")
    with caplog.at_level(logging.WARNING):
        resumed = fit(cfg(2), small_data, checkpoint_dir=folder, resume_from=folder / "last.pt")
    assert resumed.resumed_from == folder / "best.pt"
    said = [r.getMessage() for r in caplog.records if "resuming from" in r.getMessage()]
    assert len(said) == 1 and re.search(corrupt_message(folder / "last.pt"), said[0])
    assert f"resuming from {folder / 'best.pt'} (epoch 1) instead" in said[0]
    # Epoch 2 trained again from epoch 1 ends exactly where the undamaged run did.
    for name, weight in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], weight), name
    assert load_checkpoint(folder / "last.pt")["epoch"] == 2  # sound again


def test_a_corrupt_last_with_no_sound_earlier_file_is_the_error(
    tmp_path: Path, small_data: PairData
) -> None:
    fit(cfg(1), small_data, checkpoint_dir=tmp_path)  # best.pt is last.pt's second name
    flip_a_bit_in_the_largest_tensor(tmp_path / "last.pt")
    with pytest.raises(CorruptCheckpointError, match=corrupt_message(tmp_path / "last.pt")):
        fit(cfg(2), small_data, checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt")


def test_train_resume_on_a_corrupt_checkpoint_exits_2_with_one_line(
    tmp_path: Path, small_data: PairData
) -> None:
    folder = tmp_path / "run"
    fit(cfg(1), small_data, checkpoint_dir=folder)
    flip_a_bit_in_the_largest_tensor(folder / "last.pt")
    before = (folder / "last.pt").read_bytes()
    args = ["train", "--home", str(tmp_path / "home"), "--no-track"]
    result = CliRunner().invoke(cli, [*args, "--resume", str(folder / "last.pt"), "--epochs", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = (
        f"error: {folder / 'last.pt'}: its tensors do not match their digest: the file is corrupt"
    )
    assert result.stderr.splitlines() == [line]
    assert (folder / "last.pt").read_bytes() == before  # nothing trained on it, nothing saved


def test_a_checkpoint_written_before_the_digest_loads_unchecked(tmp_path: Path) -> None:
    """0.2.0 wrote no digest: such files still resume (accepted, not checked)."""
    payload = {"model": {"w": torch.ones(3)}, "optimizer": {}, "epoch": 1, "config": {}}
    torch.save({"format": FORMAT, **payload, "history": {}, "rng": {}}, tmp_path / "old.pt")
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["model"]["w"], torch.ones(3))
