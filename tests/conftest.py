"""Fixtures that run the real daemon and role processes, and clean up every process by pid."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from runtime import control
from runtime.launch import ChildDaemon, private_run_dir


def alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def agentrt(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


class RunningDaemon(ChildDaemon):
    """A test's daemon: remembers every role pid it saw, so teardown can make sure all are gone."""

    def __init__(self, run_dir: Path, endpoint: str | None, config_path: str | None, env: dict[str, str]) -> None:
        super().__init__(run_dir, endpoint, config_path, env)
        self.env = env
        self.seen_pids: set[int] = set()

    def status(self, timeout_s: float = 5.0) -> dict:
        status = super().status(timeout_s)
        self.seen_pids.update(r["pid"] for r in status["roles"].values() if r["pid"])
        return status

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return agentrt(*args, "--run-dir", str(self.run_dir), env=self.env, timeout=timeout)


    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, remove_run_dir: bool = True) -> None:
        """Stop gracefully, then make sure that every process this daemon ever had is gone."""
        if self.process.poll() is None:
            try:
                self.status()
            except control.DaemonUnreachable:
                pass
        super().stop()
        for pid in self.seen_pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if remove_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def start_daemon(config_text: str = "", env: dict | None = None, wait: bool = True,
                 endpoint: str | None = None, run_dir: Path | None = None) -> RunningDaemon:
    run_dir = run_dir or private_run_dir()
    config_path = None
    if config_text:
        config_path = run_dir / "agentrt.toml"
        config_path.write_text(config_text)
    env = {"AGENTRT_DAEMON_STATS_INTERVAL_S": "0.1", **(env or {})}
    daemon = RunningDaemon(run_dir, endpoint, str(config_path) if config_path else None, env)
    if wait:
        try:
            daemon.wait_ready()
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
