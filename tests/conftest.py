"""Fixtures that run the real daemon and role processes, and clean up every process by pid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from runtime.supervisor.launch import ChildDaemon, private_run_dir


def agentrt(*args: str, env: dict | None = None, timeout: float = 120,
            python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "runtime", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


class RunningDaemon(ChildDaemon):
    """A test's daemon, with the CLI pointed at its run directory."""

    def __init__(self, run_dir: Path, endpoint: str | None, config_path: str | None, env: dict[str, str],
                 python: str) -> None:
        super().__init__(run_dir, endpoint, config_path, env, python=python)
        self.env = env
        self.python = python

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return agentrt(*args, "--run-dir", str(self.run_dir), env=self.env, timeout=timeout, python=self.python)

    def log(self) -> str:
        return self.log_path.read_text()


def start_daemon(config_text: str = "", env: dict | None = None, wait: bool = True,
                 endpoint: str | None = None, run_dir: Path | None = None,
                 python: str = sys.executable) -> RunningDaemon:
    run_dir = run_dir or private_run_dir()
    config_path = None
    if config_text:
        config_path = run_dir / "agentrt.toml"
        config_path.write_text(config_text)
    env = {"AGENTRT_DAEMON_STATS_INTERVAL_S": "0.1", **(env or {})}
    daemon = RunningDaemon(run_dir, endpoint, str(config_path) if config_path else None, env, python)
    if wait:
        try:
            daemon.wait_ready()
        except BaseException:
            daemon.stop()
            raise
    return daemon


@pytest.fixture(autouse=True)
def fresh_structlog():
    """Each test starts from structlog's defaults: a role run in-process by one test configures
    structlog for the whole process (its stream, its bound role), which must not leak into the next."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def run_dir():
    """A private run directory for a command that starts its own daemon; removed afterwards."""
    path = private_run_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
