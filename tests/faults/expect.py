"""What every bad-input fault must look like from outside: exit 2, exactly one line on
stderr that starts with `error:` and names what was wrong, and no traceback anywhere."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from click.testing import Result

TINY = ["--epochs", "1", "--train-pairs", "64", "--val-pairs", "32", "--device", "cpu"]


def one_error_line(stderr: str, exit_code: int, output: str, *needles: str) -> str:
    assert "Traceback" not in output, output
    assert exit_code == 2, output
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def bad_input(result: Result, *needles: str) -> str:
    """The error line of a CliRunner result, checked."""
    return one_error_line(result.stderr, result.exit_code, result.output, *needles)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: what "nothing half-written" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares `width` x `height` 8-bit gray pixels but holds one row: what a
    decompression bomb looks like to a reader of the header, written in microseconds."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )
    return path
