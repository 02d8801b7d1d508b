"""Fixtures that run the real daemon and role processes, and clean up every process by pid."""

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
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from runtime import control


def alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_run_dir() -> Path:
    # ipc paths must stay under 107 bytes; pytest's tmp_path can be longer than that.
    return Path(tempfile.mkdtemp(prefix="art-"))


def agentrt(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@dataclass
class RunningDaemon:
    run_dir: Path
    endpoint: str
    process: subprocess.Popen
    env: dict[str, str]
    seen_pids: set[int] = field(default_factory=set)

    def status(self) -> dict:
        status = control.request(self.run_dir, "status", timeout_s=5)
        self.seen_pids.update(r["pid"] for r in status["roles"].values() if r["pid"])
        return status

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return agentrt(*args, "--run-dir", str(self.run_dir), env=self.env, timeout=timeout)

    def wait_until(self, predicate, timeout: float = 30.0, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        status = {}
        while time.monotonic() < deadline:
            try:
                status = self.status()
                if predicate(status):
                    return status
            except control.DaemonUnreachable:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last status: {json.dumps(status)[:2000]}")

    def wait_running(self, timeout: float = 60.0) -> dict:
        return self.wait_until(lambda s: all(r["state"] == "running" for r in s["roles"].values()),
                               timeout, "all roles running")

    def log(self) -> str:
        return (self.run_dir / "test-daemon.log").read_text()

    def stop(self) -> None:
        """Stop gracefully, then make sure that every process this daemon ever had is gone."""
        if self.process.poll() is None:
            try:
                self.status()
            except control.DaemonUnreachable:
                pass
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.seen_pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def start_daemon(config_text: str = "", env: dict | None = None, wait: bool = True,
                 endpoint: str | None = None) -> RunningDaemon:
    run_dir = short_run_dir()
    endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
    env = {"AGENTRT_DAEMON_STATS_INTERVAL_S": "0.1", **(env or {})}
    command = [sys.executable, "-m", "runtime", "up", "--run-dir", str(run_dir), "--peer-endpoint", endpoint,
               "--log-format", "json"]
    if config_text:
        config_path = run_dir / "agentrt.toml"
        config_path.write_text(config_text)
        command += ["--config", str(config_path)]
    log = open(run_dir / "test-daemon.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=log, env={**os.environ, **env})
    log.close()
    daemon = RunningDaemon(run_dir, endpoint, process, env)
    if wait:
        try:
            daemon.wait_running()
        except BaseException:
            daemon.stop()
            raise
    return daemon


@pytest.fixture
def daemon():
    running = start_daemon()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shared_daemon():
    """One daemon for a module of tests that do not disturb each other (bad-input tests, for one)."""
    running = start_daemon()
    yield running
    running.stop()
