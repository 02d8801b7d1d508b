"""Files written so that a crash never leaves half of one: temp file, fsync, rename, fsync the folder."""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path

#: What a write that cannot succeed until space is freed raises (errno; sqlite's own code).
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException) -> bool:
    """True for an error that says the disk (or the user's quota) is full: a wait, not a bug."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` so that readers see either the old file or the whole new one, even after a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
