"""Starting a daemon as a child process and waiting for it: used by ``agentrt demo``, the
benchmarks and the tests, which each want a private daemon on a free port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from runtime import control
from runtime.roles.base import die_with_parent


def free_tcp_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def private_run_dir() -> Path:
    # Short on purpose: ipc socket paths must stay under 107 bytes.
    return Path(tempfile.mkdtemp(prefix="art-"))


class ChildDaemon:
    """A daemon in a child process (foreground mode), logging JSON to ``<run_dir>/daemon.log``.

    ``defaults_only`` drops inherited ``AGENTRT_*`` variables and runs in the run directory, where no
    agentrt.toml is, so the daemon has the built-in configuration plus ``env``. ``stop`` makes sure
    that no role process it ever reported is left, by pid, and removes the run directory.
    """

    def __init__(self, run_dir: Path | None = None, endpoint: str | None = None, config_path: str | None = None,
                 env: Mapping[str, str] | None = None, defaults_only: bool = False) -> None:
        self.run_dir = run_dir or private_run_dir()
        self.endpoint = endpoint or free_tcp_endpoint()
        self.log_path = self.run_dir / "daemon.log"
        self.role_pids: set[int] = set()
        command = [sys.executable, "-m", "runtime", "up", "--run-dir", str(self.run_dir),
                   "--peer-endpoint", self.endpoint, "--log-format", "json"]
        if config_path:
            command += ["--config", str(Path(config_path).absolute())]
        inherited = {k: v for k, v in os.environ.items() if not (defaults_only and k.startswith("AGENTRT_"))}
        with open(self.log_path, "ab") as log:
            # die_with_parent: if whoever started the daemon is killed outright, it still stops its roles.
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            env={**inherited, **(env or {})}, preexec_fn=die_with_parent,
                                            cwd=self.run_dir if defaults_only else None)

    def status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        status = control.request(self.run_dir, "status", timeout_s=timeout_s)
        self.role_pids.update(role["pid"] for role in status["roles"].values() if role["pid"])
        return status

    def wait_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
                   what: str = "condition") -> dict[str, Any]:
        """Poll the status until ``predicate`` holds; fail early if the daemon exits."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited with code {self.process.returncode} waiting for {what}; see {self.log_path}")
            try:
                status = self.status(timeout_s=1.0)
                if predicate(status):
                    return status
            except control.DaemonUnreachable:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}; last status: {json.dumps(status)[:2000]}")

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until every role reports itself running."""
        return self.wait_until(lambda s: all(r["state"] == "running" for r in s["roles"].values()), timeout,
                               "all roles running")

    def stop(self, timeout_s: float = 15.0, remove_run_dir: bool = True) -> int:
        """SIGTERM and wait (the daemon stops its roles); SIGKILL only if it does not exit in time.
        Then no role process it ever reported may be left: those still alive are killed, by pid."""
        if self.process.poll() is None:
            try:
                self.status(timeout_s=1.0)  # learn the current role pids once more
            except control.DaemonUnreachable:
                pass
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.role_pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if remove_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> "ChildDaemon":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
