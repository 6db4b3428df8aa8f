"""Errors the command line prints as one line, without a traceback.

`SiameseInputError` and its subclasses mean "the user gave bad input" (exit 2).
`DiskFullError` is not bad input: the machine ran out of space (see its docstring)."""

from __future__ import annotations

import errno


def clipped(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters: cut at a word near the limit, else
    inside a long word such as a path (a message that quotes another program's error must
    stay one readable line)."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 4]
    space = cut.rfind(" ")
    if space >= len(cut) - limit // 4:  # else a long path or URL: keep most of it
        cut = cut[:space]
    return cut.rstrip(" ,;:([") + " ..."


class SiameseInputError(Exception):
    """Bad usage or bad input; the message names the file, flag or value and what was expected."""


class DataError(SiameseInputError):
    """The data cannot be trained on (found before any training starts)."""


class ConfigError(SiameseInputError):
    """A configuration value is invalid."""


class CheckpointError(SiameseInputError):
    """A checkpoint file is missing, corrupt, unsafe or from another program."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's bytes are damaged: truncated, an unreadable archive, or tensors that
    do not match the digest stored with them. A resume may fall back on an earlier file."""


class DiskFullError(OSError):
    """No space (or quota) left on the device a file was being written to. The file's
    previous version is intact: writes go to a temporary file that is then renamed.

    An OSError (errno ENOSPC or EDQUOT), so code that handles OSError still does; the
    message is one line: "no space left on the device holding FOLDER while writing NAME"."""

    def __init__(self, message: str, code: int = errno.ENOSPC) -> None:
        super().__init__(message)
        self.errno = code

    def __reduce__(self) -> tuple[type[DiskFullError], tuple[str, int]]:
        return (type(self), (str(self), self.errno or errno.ENOSPC))  # whole across processes


class JobFailed(Exception):
    """The job ran but produced nothing usable (every trial of a search failed): exit 1 with
    one line saying why, not a traceback, and not 0."""
