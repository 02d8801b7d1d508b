"""Test helpers for plugin authors (and agentrt's own suite): a private daemon, the CLI, throwaway
plugin distributions and Gymnasium peers, all real processes talking real ZeroMQ.

::

    from runtime.testing import start_daemon, run_gym_peers

    daemon = start_daemon('[student]\\nplugin = "tiny"\\n')   # waits until every role runs
    try:
        summary = run_gym_peers(daemon.endpoint, "CartPole-v1", episodes=4, peers=2)
        status = daemon.wait_until(lambda s: s["student_version"] >= 2, what="a trained student")
    finally:
        daemon.stop()   # stops every process it started, by pid, and removes its run directory
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runtime.peer.gym import AttachSummary, run_gym_peers
from runtime.supervisor.launch import ChildDaemon, private_run_dir

__all__ = [
    "TestDaemon",
    "agentrt",
    "free_port_range",
    "make_distribution",
    "peers_playing",
    "private_run_dir",
    "run_gym_peers",
    "start_daemon",
    "start_remote_role",
    "stop_child",
]

#: How long a block of ``peers_playing`` waits for its peers to finish their step and close.
PEERS_STOP_S = 120.0


def agentrt(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    """Run ``agentrt ARGS`` with ``python`` (another virtualenv's, say) and capture its output."""
    return subprocess.run(
        [python, "-m", "runtime", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class TestDaemon(ChildDaemon):
    """A test's daemon, with the CLI pointed at its run directory."""

    __test__ = False  # not a pytest test class

    def __init__(
        self, run_dir: Path, endpoint: str | None, config_path: str | None, env: dict[str, str], python: str
    ) -> None:
        super().__init__(run_dir, endpoint, config_path, env, python=python)
        self.env = env
        self.python = python

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return agentrt(*args, "--run-dir", str(self.run_dir), env=self.env, timeout=timeout, python=self.python)

    def log(self) -> str:
        return self.log_path.read_text()

    def events(self, event: str) -> list[dict[str, Any]]:
        """The daemon log's lines (JSON, one per line) whose ``event`` is ``event``, oldest first."""
        lines = (json.loads(line) for line in self.log().splitlines() if f'"{event}"' in line)
        return [line for line in lines if line.get("event") == event]

    def wait_until_distiller_rests(self, decisions: int, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until play that ended after ``decisions`` decisions is fully learnt from: decision
        reports them all, every label it asked for reached the distiller and was answered (or lost),
        and the distiller rests. Until then a last candidate may still come, so a test that rolls
        back or lists versions would race it."""

        def rests(status: dict[str, Any]) -> bool:
            distiller = status["roles"]["distillation"]
            counters = distiller["counters"]
            answered = sum(counters.get(name, 0) for name in ("labels", "labels_failed", "labels_lost"))
            return (
                status["decisions"]["total"] >= decisions
                and counters.get("samples", 0) == status["labels_requested"] == answered
                and distiller["gauges"].get("resting") is True
            )

        return self.wait_until(rests, timeout=timeout, what="the distiller resting with every label learnt from")

    def students(self) -> dict[str, Any]:
        """``agentrt student list --json``: the serving version and every version's row."""
        result = self.cli("student", "list", "--json")
        if result.returncode != 0:
            raise AssertionError(f"agentrt student list failed: {result.stderr}")
        listing: dict[str, Any] = json.loads(result.stdout)
        return listing


def start_daemon(
    config_text: str = "",
    env: dict[str, str] | None = None,
    wait: bool = True,
    endpoint: str | None = None,
    run_dir: Path | None = None,
    python: str = sys.executable,
) -> TestDaemon:
    """A daemon in a private run directory with ``config_text`` as its agentrt.toml (built-in defaults
    otherwise). Stats come every 0.1 s so that waits end soon after the event. With ``wait``, returns
    once every role runs; a daemon that fails to start is stopped before the error is raised."""
    run_dir = run_dir or private_run_dir()
    config_path = None
    if config_text:
        config_path = run_dir / "agentrt.toml"
        config_path.write_text(config_text)
    env = {"AGENTRT_DAEMON_STATS_INTERVAL_S": "0.1", **(env or {})}
    daemon = TestDaemon(run_dir, endpoint, str(config_path) if config_path else None, env, python)
    if wait:
        try:
            daemon.wait_ready()
        except BaseException:
            daemon.stop()
            raise
    return daemon


def make_distribution(site: Path, name: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """Write ``modules`` (name -> source) and a ``<name>-1.0.dist-info`` registering ``entry_points``
    (entry-point name -> module) in the ``agentrt`` group into ``site``, as pip would; return ``site``,
    for PYTHONPATH. A plugin under test is then found exactly as an installed one."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[agentrt]\n" + "".join(f"{ep} = {module}\n" for ep, module in entry_points.items())
    )
    return site


def free_port_range(count: int, host: str = "127.0.0.1") -> int:
    """A base port such that ``count`` ports from it could be bound on ``host`` just now (for
    internal.endpoints = tcp://host:base; another process may still take one before the daemon)."""
    for _ in range(200):
        # Below Linux's ephemeral range (32768-60999), where the OS picks ports for other tests' daemons.
        base = random.randrange(20_000, 32_000 - count)
        probes: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


def start_remote_role(
    role: str,
    connect: str,
    log: Path,
    keys: tuple[Path, Path] | None = None,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
    python: str = sys.executable,
    command: Sequence[str] = (),
    options: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """``agentrt role ROLE --connect CONNECT [OPTIONS]`` as a child process (``prefix`` runs it
    through a command such as ``nsenter``), presenting ``keys`` (the runtime's server.key, this
    role's .key_secret), logging JSON to ``log``; ``command`` is another agentrt command that runs
    it (``teacher serve``). The caller stops it, by pid."""
    command = [*prefix, python, "-m", "runtime", *(command or ("role", role)), "--connect", connect, *options]
    if keys is not None:
        command += ["--server-key", str(keys[0]), "--client-key", str(keys[1])]
    with open(log, "ab") as output:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env={
                **os.environ,
                "AGENTRT_DAEMON_LOG_FORMAT": "json",
                "AGENTRT_DAEMON_STATS_INTERVAL_S": "0.1",
                **(env or {}),
            },
        )


def stop_child(process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    """Stop a child by its pid: SIGTERM, then SIGKILL if it is still there after ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def teacher_role(**teacher: Any) -> Iterator[Any]:
    """A teacher role set up in this process, not supervised, with the built-in configuration and
    ``teacher`` keys over it, bound to a free loopback port; its sockets are closed afterwards."""
    from runtime import config
    from runtime.roles.teacher import TeacherRole

    settings = config.defaults()
    settings["teacher"].update(teacher)
    settings["daemon"]["log_format"] = "json"
    role = TeacherRole(settings, supervised=False, endpoint="tcp://127.0.0.1:*")
    try:
        role.setup()
        yield role
    finally:
        role.transport.close()


class PlayedSummary:
    """What ``peers_playing`` played: ``summary`` once its block has ended."""

    summary: AttachSummary


@contextmanager
def peers_playing(
    endpoint: str, env_id: str = "CartPole-v1", peers: int = 2, **options: Any
) -> Iterator[PlayedSummary]:
    """Gym peers (``run_gym_peers``, ``options`` passed on) playing against ``endpoint`` in a
    background thread for as long as the block runs.

    For waiting on an event that needs play to go on (``daemon.wait_until`` inside the block),
    rather than playing a fixed number of episodes and hoping it came. Leaving the block stops the
    peers after their current step and joins them; an error they met is raised there, and the
    summary is then the yielded object's ``summary``.
    """
    stop = threading.Event()
    played = PlayedSummary()
    failures: list[BaseException] = []

    def play() -> None:
        try:
            played.summary = run_gym_peers(endpoint, env_id, 10**9, peers=peers, should_stop=stop.is_set, **options)
        except BaseException as exc:  # raised in the test's thread below
            failures.append(exc)

    player = threading.Thread(target=play, name=f"peers {env_id}", daemon=True)
    player.start()
    try:
        yield played
    finally:
        stop.set()
        player.join(timeout=PEERS_STOP_S)
    if player.is_alive():
        raise TimeoutError(f"the {env_id} peers did not stop within {PEERS_STOP_S:g} s")
    if failures:
        raise failures[0]
