"""Standard output whose reader may leave: `siamese-lab train | head -3` trains on.

When the program reading the output exits (head, a pager closed early), the next write to
stdout raises BrokenPipeError, and the command died there: its MLflow run FAILED with no
checkpoint, and a search's trial with it. The work does not depend on who reads its
progress, so from that write on stdout goes to /dev/null and the command carries on to its
end (its run, checkpoints and exit status as without the pipe). stderr is treated alike,
on its own: an error still shows where stderr is a terminal, and `2>&1 | head` gives both
streams the one pipe. Local workers (`search --jobs N`) write to the same pipe: each
process wraps its own streams.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class ReaderTolerantStream:
    """`stream` (stdout), except that a write or flush the closed pipe refuses sends the
    stream, and everything after, to /dev/null."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        """The pipe's descriptor now names /dev/null: what the stream still buffers, and
        whatever else writes to it (the interpreter's own flush at exit), goes there."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer...
        return getattr(self._stream, name)


def _tolerant(stream: TextIO) -> TextIO:
    """`stream` made tolerant of its reader leaving; as it is where it has no descriptor (a
    test runner's), and so no pipe to lose."""
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    return ReaderTolerantStream(stream)  # type: ignore[return-value]


@contextmanager
def reader_may_leave() -> Iterator[None]:
    """sys.stdout and sys.stderr tolerant of their reader leaving while the block runs
    (stderr too: `2>&1 | head` gives both the one pipe)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _tolerant(sys.stdout), _tolerant(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
