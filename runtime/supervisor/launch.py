"""Starting a daemon as a child process and waiting for it: used by ``agentrt demo``, the
benchmarks and the tests, which each want a private daemon on a free port."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runtime import rundir
from runtime.errors import DaemonError, DaemonUnreachable
from runtime.processes import SAFE_PATH_ENV, die_with_parent, process_alive, wait_for_exit
from runtime.supervisor import control

#: The gateway binds a port the OS picks; ``ChildDaemon.endpoint`` reads the bound one back.
ANY_LOOPBACK_PORT = "tcp://127.0.0.1:*"


#: Short on purpose: ipc socket paths must stay under 107 bytes.
RUN_DIR_PREFIX = "art-"


def private_run_dir() -> Path:
    """A new run directory, marked as agentrt's, for files (a configuration, a log) put in before the daemon starts."""
    path = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
    rundir.claim(path)
    return path


class ChildDaemon:
    """A daemon in a child process (foreground mode), logging JSON to ``<run_dir>/daemon.log``.

    Without ``endpoint`` the gateway binds a free loopback port chosen by the OS (no window in
    which another process could take it) and ``endpoint`` is read back from the daemon's status.
    ``python`` is the interpreter to run it with (another virtualenv's, say). ``defaults_only``
    drops inherited ``AGENTRT_*`` variables and runs in the run directory, where no agentrt.toml
    is, so the daemon has the built-in configuration plus ``env``. ``new_session`` makes it lead a
    process group of its own, as a shell's foreground job does (for a Ctrl-C to all of it). ``stop`` makes sure
    that no role process it ever reported is left, by pid, and removes the run directory.
    """

    def __init__(
        self,
        run_dir: Path | None = None,
        endpoint: str | None = None,
        config_path: str | None = None,
        env: Mapping[str, str] | None = None,
        defaults_only: bool = False,
        python: str = sys.executable,
        new_session: bool = False,
    ) -> None:
        self.run_dir = run_dir or private_run_dir()
        self._endpoint = endpoint
        self.log_path = self.run_dir / rundir.LOG_FILE
        self.role_pids: set[int] = set()
        command = [
            python,
            "-m",
            "runtime",
            "up",
            "--run-dir",
            str(self.run_dir),
            "--peer-endpoint",
            endpoint or ANY_LOOPBACK_PORT,
            "--log-format",
            "json",
            # Its components are checked by whoever chose them (agentrt plugins --check): a private
            # daemon starts without the seconds that costs.
            "--no-check",
        ]
        if config_path:
            command += ["--config", str(Path(config_path).absolute())]
        inherited = {k: v for k, v in os.environ.items() if not (defaults_only and k.startswith("AGENTRT_"))}
        with open(self.log_path, "ab") as log:
            # die_with_parent: if whoever started the daemon is killed outright, it still stops its roles.
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**inherited, **SAFE_PATH_ENV, **(env or {})},
                preexec_fn=die_with_parent,
                cwd=self.run_dir if defaults_only else None,
                start_new_session=new_session,
            )

    @property
    def endpoint(self) -> str:
        """Where peers connect; waits for the gateway to report its bound endpoint if need be."""
        if self._endpoint is None:
            status = self.wait_until(
                lambda s: "peer_endpoint" in s["roles"]["gateway"]["gauges"], what="the gateway's endpoint"
            )
            self._endpoint = status["roles"]["gateway"]["gauges"]["peer_endpoint"]
        return self._endpoint

    def status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        status = control.request(self.run_dir, "status", timeout_s=timeout_s)
        self.role_pids.update(role["pid"] for role in status["roles"].values() if role["pid"])
        self.role_pids.update(status["daemon"]["fork_servers"].values())
        return status

    def wait_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0, what: str = "condition"
    ) -> dict[str, Any]:
        """Poll the status until ``predicate`` holds; fail early if the daemon exits."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DaemonError(
                    f"the daemon exited with code {self.process.returncode} waiting for {what}; see {self.log_path}"
                )
            try:
                status = self.status(timeout_s=1.0)
                if predicate(status):
                    return status
            except DaemonUnreachable:
                pass
            time.sleep(0.1)
        raise TimeoutError(
            f"timed out after {timeout:g} s waiting for {what}; last status: {json.dumps(status)[:2000]}"
        )

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until every role of this host reports itself running (remote roles join when they do)."""
        return self.wait_until(lambda s: not control.waiting_for(s), timeout, "all roles running")

    def stop(self, timeout_s: float = 30.0, remove_run_dir: bool = True) -> int:
        """SIGTERM and wait (the daemon stops its roles); SIGKILL only if it does not exit in time.
        Then no process it ever reported may be left: those still alive after ``timeout_s`` more
        are killed, by pid."""
        if self.process.poll() is None:
            with contextlib.suppress(DaemonError):
                self.status(timeout_s=1.0)  # learn the current role pids once more
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        wait_for_exit(self.role_pids, timeout_s)
        for pid in self.role_pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if remove_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> ChildDaemon:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
