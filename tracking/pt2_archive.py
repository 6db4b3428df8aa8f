"""The tensors of a torch.export ("pt2") archive, read and replaced without torch.export.

torch.export.save writes a zip archive, uncompressed: the graph (models/model.json), and each
parameter and buffer as one file of raw bytes under data/weights/, named in
data/weights/model_weights_config.json with its dtype, sizes and strides. Tensors the graph
holds that no state dict does (lifted constants) are listed in data/constants/.
"""

from __future__ import annotations

import json
import secrets
import struct
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

PT2_FILE = ("data", "model.pt2")  # where mlflow.pytorch keeps a pt2 model in its folder
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
FLOAT32 = 7  # torch.export's serialized ScalarType of float32
SERIALIZATION_ID = ".data/serialization_id"  # an id torch writes per archive
ALIGNMENT = 64  # where torch's archive writer starts each record's data
PADDING_FIELD = 0x4246  # the extra field ("FB") torch pads a local header with
LOCAL_HEADER, FIELD_HEADER = 30, 4  # sizes: a zip local file header, an extra field's header
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, StopIteration, zipfile.BadZipFile)


def same_tensors(pt2: Path, scorer: nn.Module) -> bool:
    """Whether the torch.export archive `pt2` holds exactly `scorer`'s state dict: the same
    names, float32 tensors of the same shapes and contiguous strides, the same bytes, and
    no other tensors (lifted constants)."""
    expected = _state_bytes(scorer)
    try:
        with zipfile.ZipFile(pt2) as archive:
            files = _weight_files(archive, scorer)
            if files is None or set(files) != set(expected):
                return False
            return all(archive.read(files[name]) == data for name, data in expected.items())
    except _READ_ERRORS:
        return False


def write_with_weights(template: Path, dest: Path, scorer: nn.Module) -> bool:
    """`dest` as a copy of the archive `template` whose weight files hold `scorer`'s state
    dict and whose serialization id is new; False (and nothing at `dest` to rely on) where
    `template`'s weights are not exactly that state dict's names, dtypes, shapes and
    strides, or it holds constants. An error writing `dest` is raised (OSError)."""
    expected = _state_bytes(scorer)
    try:
        archive = zipfile.ZipFile(template)
    except _READ_ERRORS:
        return False
    with archive, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as out:
        try:
            files = _weight_files(archive, scorer)
            if files is None or set(files) != set(expected):
                return False
            replaced = {files[name]: data for name, data in expected.items()}
            entries = [(info, archive.read(info)) for info in archive.infolist()]
        except _READ_ERRORS:
            return False
        for info, data in entries:  # the same entries, in the same order
            if info.filename.endswith(SERIALIZATION_ID):
                data = f"{secrets.randbelow(10 ** len(data)):0{len(data)}d}".encode()
            out.writestr(_aligned(out, info), replaced.get(info.filename, data))
    return True


def _aligned(out: zipfile.ZipFile, source: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """An entry like `source` whose data will start at a multiple of ALIGNMENT in `out`, as
    torch's writer places it (padding in an extra field of the local header): a reader
    may map a weight in place."""
    entry = zipfile.ZipInfo(source.filename, source.date_time)
    entry.external_attr, entry.create_system = source.external_attr, source.create_system
    assert out.fp is not None  # open for writing
    header_end = out.fp.tell() + LOCAL_HEADER + len(source.filename.encode()) + FIELD_HEADER
    padding = -header_end % ALIGNMENT
    entry.extra = struct.pack("<HH", PADDING_FIELD, padding) + b"Z" * padding
    return entry


def _state_bytes(scorer: nn.Module) -> dict[str, bytes]:
    return {
        name: tensor.detach().cpu().contiguous().numpy().tobytes()
        for name, tensor in scorer.state_dict().items()
    }


def _weight_files(archive: zipfile.ZipFile, scorer: nn.Module) -> dict[str, str] | None:
    """Each weight's file in `archive` by its state-dict name; None where a weight is not
    stored as `scorer`'s tensor of that name would be (a float32 of its shape, contiguous,
    raw bytes), where the archive's byte order is not this machine's, or where it holds
    constants. Names that `scorer` lacks are kept, for the caller to compare."""
    names = archive.namelist()
    config_name = next(n for n in names if n.endswith(WEIGHTS_CONFIG))
    root = config_name.removesuffix(WEIGHTS_CONFIG)
    order = root + "byteorder"
    if order in names and archive.read(order).decode() != sys.byteorder:
        return None
    constants = root + CONSTANTS_CONFIG
    if constants in names and json.loads(archive.read(constants)).get("config"):
        return None  # tensors in the graph that no state dict holds
    config: dict[str, Any] = json.loads(archive.read(config_name))["config"]
    state = scorer.state_dict()
    folder = config_name.removesuffix("model_weights_config.json")
    files = {}
    for name, entry in config.items():
        if name in state and not _stored_as(entry, state[name].detach().cpu().contiguous()):
            return None
        files[name] = folder + entry["path_name"]
    return files


def _stored_as(entry: dict[str, Any], tensor: Any) -> bool:
    meta = entry["tensor_meta"]
    return bool(
        not entry.get("use_pickle")
        and meta["dtype"] == FLOAT32
        and str(tensor.dtype) == "torch.float32"
        and [s["as_int"] for s in meta["sizes"]] == list(tensor.shape)
        and [s["as_int"] for s in meta["strides"]] == list(tensor.stride())
        and meta["storage_offset"]["as_int"] == 0
    )
