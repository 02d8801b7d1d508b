"""Names of the files in a run directory, shared by the daemon, its roles and the CLI.

A run directory holds one daemon's state: its pid and lock, the configuration snapshot every
role reads, the log of a detached daemon, the ipc sockets (``sock/``), the student registry and
checkpoints, and the exit reports described below.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from runtime.errors import ConfigError, DaemonError, RunDirError
from runtime.files import atomic_write
from runtime.processes import process_alive

#: Written when agentrt creates a run directory (or adopts an empty one). Only a directory that has
#: it is chmod-ed or cleaned by agentrt: a run_dir set to someone's home is refused, untouched.
MARKER = ".agentrt-run-dir"
PID_FILE = "daemon.pid"
LOCK_FILE = "daemon.lock"
CONFIG_SNAPSHOT = "config.json"
LOG_FILE = "daemon.log"
#: Why the daemon stopped, written as it exits (read by ``agentrt up --detach`` and ``status``).
DAEMON_EXIT = "daemon.exit.json"
#: A role that exits on its own writes ``exits/<role>.json`` first: its pid, exit code and reason.
ROLE_EXITS = "exits"
#: Reasons are one line of at most this many characters in ``status``.
REASON_CHARS = 300


def one_line(text: str) -> str:
    """The first line of ``text``, shortened for a status table."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"


def refuse_file(run_dir: Path) -> None:
    """ConfigError if ``run_dir`` is a file: every command would fail on it with an OSError."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(
            f"run directory {run_dir} is a file; set daemon.run_dir (--run-dir, AGENTRT_RUN_DIR) to a directory"
        )


def claim(run_dir: Path) -> None:
    """Make ``run_dir`` an agentrt run directory, private to this user (0700): create it, adopt an
    empty one, or accept one that has the marker. Anything else is refused before it is changed."""
    refuse_file(run_dir)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_dir.stat().st_uid != os.getuid():
        raise DaemonError(f"run directory {run_dir} belongs to another user")
    marker = run_dir / MARKER
    if not marker.exists():
        if any(run_dir.iterdir()):
            raise ConfigError(
                f"run directory {run_dir} is not empty and not an agentrt run directory (it has no {MARKER}), "
                "so agentrt leaves it alone; set daemon.run_dir (--run-dir, AGENTRT_RUN_DIR) "
                "to a new or empty directory"
            )
        marker.write_text("agentrt run directory: the daemon owns what is in here\n")
    os.chmod(run_dir, 0o700)


@contextlib.contextmanager
def writing(run_dir: str | Path) -> Iterator[None]:
    """Turn an OSError of the writes in this block into a RunDirError: one line naming the file and
    the reason (``No space left on device``), instead of a traceback."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or f"in run directory {run_dir}"  # a failed write(2) names no file
        raise RunDirError(f"cannot write {where}: {exc.strerror or exc}") from None


def lock(run_dir: str | Path) -> IO[str] | None:
    """Take the run directory's lock, held while the open file returned stays open (a daemon holds
    it for its lifetime); None if another process holds it: a daemon runs there."""
    with writing(run_dir):
        handle = open(Path(run_dir) / LOCK_FILE, "w")  # noqa: SIM115 (the caller holds it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def in_use(run_dir: str | Path) -> bool:
    """Whether a daemon runs with ``run_dir``: its pid file names a live process that holds the
    lock (a killed daemon's pid taken by another process does not). Creates nothing, and probes the
    lock only then, so that it never makes a daemon starting there find its lock taken."""
    if read_pid(run_dir) is None:
        return False
    try:
        with open(Path(run_dir) / LOCK_FILE) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except BlockingIOError:
        return True
    return False


def in_use_error(run_dir: str | Path) -> DaemonError:
    """Why a daemon cannot start with ``run_dir``: another process holds its lock."""
    existing = read_pid(run_dir)
    # Without a live pid: a daemon still starting, or a command that needs none running (student compress).
    holder = f"a daemon (pid {existing})" if existing else "a daemon or another agentrt command"
    return DaemonError(f"{holder} already runs with run directory {run_dir}; use 'agentrt down' or another --run-dir")


@contextlib.contextmanager
def stopped(run_dir: str | Path, command: str) -> Iterator[None]:
    """Hold the run directory's lock through a block that changes what a daemon owns (the registry):
    DaemonError while a daemon runs there, and a daemon started meanwhile is refused until it ends."""
    handle = lock(run_dir)
    if handle is None:
        pid = read_pid(run_dir)
        raise DaemonError(
            f"a daemon{f' (pid {pid})' if pid else ''} runs with run directory {run_dir}; "
            f"{command} works on a stopped one: 'agentrt down' first"
        )
    with handle:
        yield


def read_pid(run_dir: str | Path) -> int | None:
    """The pid of the daemon running with ``run_dir``; None when none runs, also when a daemon that
    was killed left its pid file behind."""
    pid = _recorded_pid(run_dir)
    return pid if pid is not None and process_alive(pid) else None


def dead_pid(run_dir: str | Path) -> int | None:
    """The pid of a daemon that ended without stopping (killed, or crashed), whose pid file is left;
    None otherwise. The next daemon there cleans up after it."""
    pid = _recorded_pid(run_dir)
    return pid if pid is not None and not process_alive(pid) else None


def _recorded_pid(run_dir: str | Path) -> int | None:
    try:
        return int((Path(run_dir) / PID_FILE).read_text().strip())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def write_role_exit(run_dir: str | Path, role: str, pid: int, code: int, reason: str) -> None:
    """Leave the reason for a role's exit where the daemon looks when it sees the process go."""
    folder = Path(run_dir) / ROLE_EXITS
    folder.mkdir(mode=0o700, exist_ok=True)
    atomic_write(folder / f"{role}.json", json.dumps({"pid": pid, "code": code, "reason": reason}).encode())


def take_role_exit(run_dir: str | Path, role: str, pid: int) -> str | None:
    """The reason the role process ``pid`` left, if it left one; the report is consumed."""
    path = Path(run_dir) / ROLE_EXITS / f"{role}.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):  # none, or unreadable: the daemon describes the exit by its code
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    return report.get("reason") if report.get("pid") == pid else None


def write_daemon_exit(run_dir: str | Path, code: int, reason: str) -> None:
    atomic_write(Path(run_dir) / DAEMON_EXIT, json.dumps({"code": code, "reason": reason}).encode())


def read_daemon_exit(run_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / DAEMON_EXIT).read_text())
    except (FileNotFoundError, ValueError):
        return None
