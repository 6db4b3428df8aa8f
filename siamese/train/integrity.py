"""What keeps a checkpoint honest: a digest of its contents, checked when it loads (torch
checks no checksum: a flipped bit in a tensor loads silently), and a full disk said in one
line (torch's own words for it are "enforce fail at inline_container.cc ... unexpected pos")."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from siamese.errors import DiskFullError

# "sha256:HEX" over everything else in the file. Files written before it (0.2.0) have none
# and load unchecked: refusing them would strand every run they could resume.
DIGEST_KEY = "digest"
_FULL = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}


def payload_digest(payload: dict[str, Any]) -> str:
    """sha256 over every value but the digest itself, in a fixed order: tensors by dtype,
    shape and bytes, other values by repr (about 12 ms for this network's 23 MB)."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != DIGEST_KEY})
    return f"sha256:{digest.hexdigest()}"


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}:".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=repr):  # str keys, or int ones (optimizer state)
            digest.update(f"{key!r}=".encode())
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, list | tuple):  # pickling may turn one into the other: same bytes
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(f"{value!r};".encode())


@contextmanager
def disk_full_named(path: Path) -> Iterator[None]:
    """ENOSPC or EDQUOT becomes DiskFullError, one line naming the folder and the file."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        why = _FULL[exc.errno]
        message = f"{why} on the device holding {path.parent} while writing {path.name}"
        raise DiskFullError(message, exc.errno) from exc
