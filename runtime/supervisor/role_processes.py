"""How the daemon starts role processes: forked from one of two fork servers.

Roles that run models (decision, distillation, teacher) are forked from a fork server that has
already imported torch: a restarted decision process serves again in a fraction of a second
instead of paying torch's import (about 2 s here), and the three share torch's pages in memory.
The other roles (gateway, perception, execution) never load torch: they are forked from a second
fork server that imported only what they need, so that they share those pages too and start
without paying their imports each (0.5-1 s of CPU each here).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from runtime.processes import SAFE_PATH_ENV, process_alive, wait_for_exit

#: The fork server listens on <temp dir>/pymp-XXXXXXXX/listener-XXXXXXXX, and a unix socket path
#: holds at most 107 bytes.
FORK_SERVER_SOCKET_TAIL = len("/pymp-XXXXXXXX/listener-XXXXXXXX")
MAX_UNIX_PATH = 107
SHORT_TEMP_DIRS = ("/tmp", "/var/tmp", "/usr/tmp")

#: How long the daemon waits for the fork server to end on SIGTERM.
STOP_TIMEOUT_S = 5.0

TORCH_ROLES = frozenset({"decision", "distillation", "teacher"})
# torch._dynamo too: torch.optim imports it on the first optimizer (the distiller's), 2 s and ~100 MiB
# that are otherwise paid after the fork, in private pages, by every distiller that starts.
PRELOAD = ["torch", "torch._dynamo", "runtime.roles.decision", "runtime.roles.distillation", "runtime.roles.teacher"]
LIGHT_PRELOAD = ["runtime.roles.gateway", "runtime.roles.perception", "runtime.roles.execution"]


class RoleHandle(Protocol):
    """What the supervisor needs of a child process (subprocess.Popen has exactly this)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def send_signal(self, signum: int) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


class RoleLauncher(Protocol):
    """What the daemon needs to start roles (``Launcher``; the supervision tests use a fake)."""

    def prepare(self) -> None: ...
    def start(self, role: str, run_dir: str) -> RoleHandle: ...
    def fork_servers(self) -> dict[str, int]: ...
    def stop(self) -> None: ...


class ForkedRole:
    """A role forked from the fork server, behind the same interface as subprocess.Popen."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        if process.pid is None:
            raise RuntimeError("a ForkedRole wraps a started process")
        self.process = process
        self.pid: int = process.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self.process.is_alive():
            self.returncode = self.process.exitcode
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        code = self.poll()
        if code is None:
            raise subprocess.TimeoutExpired(f"role pid {self.pid}", timeout or 0)
        return code

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _run_forked(role: str, run_dir: str) -> None:
    from runtime.roles.__main__ import run

    sys.exit(run(role, run_dir))


def fork_server_temp_dir() -> str:
    """multiprocessing's private temp directory, made now, where the fork server's socket fits.

    Python 3.11 makes it under TMPDIR, and a long TMPDIR (a test's tmp_path, say) makes the fork
    server fail to bind; like Python 3.13, a short standard directory is taken then instead.
    """
    default = tempfile.gettempdir()
    if len(default) + FORK_SERVER_SOCKET_TAIL > MAX_UNIX_PATH:
        short = next((d for d in SHORT_TEMP_DIRS if os.access(d, os.W_OK | os.X_OK)), default)
        saved, tempfile.tempdir = tempfile.tempdir, short
        try:
            return multiprocessing.util.get_temp_dir()  # kept by multiprocessing for this process
        finally:
            tempfile.tempdir = saved
    return multiprocessing.util.get_temp_dir()


def _ensure_running(server: multiprocessing.forkserver.ForkServer) -> None:
    """Start ``server`` if it does not run, ignoring SIGINT from its first instruction: a Ctrl-C
    reaches the terminal's whole process group, and multiprocessing's fork server ignores it only
    once its imports are done (a second or two for torch), so before then it died with a
    KeyboardInterrupt traceback, and the daemon with it. The daemon stops the fork servers itself.
    SIG_IGN survives exec, and Python keeps it; each role installs its own handler. The daemon
    ignores SIGINT only for the milliseconds of the spawn."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        server.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _launching_from(server: multiprocessing.forkserver.ForkServer) -> Iterator[None]:
    """Processes started inside go through ``server``: multiprocessing keeps one fork server per
    process, and its Popen asks the module's ``connect_to_new_process`` for the connection."""
    module = multiprocessing.forkserver
    saved = module.connect_to_new_process
    module.connect_to_new_process = server.connect_to_new_process
    try:
        yield
    finally:
        module.connect_to_new_process = saved


class Launcher:
    def __init__(self) -> None:
        os.environ.update(SAFE_PATH_ENV)  # the fork servers (python -c) and the roles inherit it
        fork_server_temp_dir()
        self.context = multiprocessing.get_context("forkserver")
        self.servers = {
            "models": multiprocessing.forkserver._forkserver,
            "light": multiprocessing.forkserver.ForkServer(),
        }
        self.servers["models"].set_forkserver_preload(PRELOAD)
        self.servers["light"].set_forkserver_preload(LIGHT_PRELOAD)

    def prepare(self) -> None:
        """Start both fork servers now, without waiting for their imports: they import side by side,
        and while the daemon gets ready, instead of one after the other at the first role of each."""
        for server in self.servers.values():
            _ensure_running(server)

    def fork_servers(self) -> dict[str, int]:
        """The fork servers' pids, of those that run (multiprocessing keeps them on a private attribute)."""
        pids = {name: getattr(server, "_forkserver_pid", None) for name, server in self.servers.items()}
        return {name: pid for name, pid in pids.items() if pid is not None}

    def stop(self) -> None:
        """End the fork servers, once the roles are gone: left alone they exit only after the
        daemon has, the models' taking most of a second to tear down an interpreter with torch
        loaded, which nothing needs (they hold no state; SIGTERM is their default action there)."""
        pids = [pid for pid in self.fork_servers().values() if process_alive(pid)]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        wait_for_exit(pids, STOP_TIMEOUT_S)

    def start(self, role: str, run_dir: str) -> RoleHandle:
        server = self.servers["models" if role in TORCH_ROLES else "light"]
        process = self.context.Process(target=_run_forked, args=(role, run_dir), name=f"agentrt-{role}", daemon=False)
        _ensure_running(server)  # one that died is started again here, not inside process.start()
        with _launching_from(server):
            process.start()
        return ForkedRole(process)
