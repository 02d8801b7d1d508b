"""Fixtures that run the real daemon and role processes, and clean up every process by pid."""

from __future__ import annotations

import shutil

import pytest
import structlog

from runtime.testing import private_run_dir, start_daemon


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
