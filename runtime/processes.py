"""Operating-system process helpers shared by the daemon, its roles, the CLI and the tests."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import time
from collections.abc import Iterable

PR_SET_PDEATHSIG = 1
#: In the environment of every Python process agentrt starts (the daemon, its roles, the fork
#: server): ``-P``, so the working directory never goes on ``sys.path``. A ``msgpack.py`` in the
#: directory where ``agentrt up`` runs must not run inside the runtime.
SAFE_PATH_ENV = {"PYTHONSAFEPATH": "1"}


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, even by SIGKILL (the parent is the
    daemon, or for forked roles the fork server; the loop also watches the daemon itself)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent-pid check in the loop covers it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_for_exit(pids: Iterable[int], timeout_s: float) -> list[int]:
    """Wait until none of ``pids`` runs, or ``timeout_s``; return those still running."""
    deadline = time.monotonic() + timeout_s
    remaining = [pid for pid in pids if process_alive(pid)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = [pid for pid in remaining if process_alive(pid)]
    return remaining
