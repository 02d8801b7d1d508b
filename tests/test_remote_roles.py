"""Roles on several hosts: the internal endpoints on TCP with CURVE between roles, and a teacher
that joins from another host (``agentrt role teacher --connect``), here over loopback TCP."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from runtime.errors import ConfigError, ExitCode
from runtime.testing import agentrt, free_port_range, run_gym_peers, start_daemon, start_remote_role, stop_child
from runtime.wire.keys import KeyStore, generate_client
from runtime.wire.transport import NETWORK_ENDPOINTS


def log_events(daemon, event: str, count: int = 0, timeout: float = 60) -> list[dict]:
    """The daemon's ``event`` lines, once there are at least ``count`` of them (status can show a
    change a moment before the line that logs it is written)."""
    deadline = time.monotonic() + timeout
    while True:
        complete = daemon.log().split("\n")[:-1]  # the last piece may be a line still being written
        found = [line for line in map(json.loads, complete) if line.get("event") == event]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path):
    """A daemon whose internal endpoints are loopback TCP with CURVE and whose teacher is remote;
    the teacher acts on every observation it can (act_below_confidence = 1)."""
    store = KeyStore(tmp_path / "keys")
    server_key = store.generate_server()
    public, secret = generate_client(tmp_path / "gpu-host", "gpu-teacher")
    authorized = agentrt(
        "keys", "authorize", "--role", str(public), env={"AGENTRT_SECURITY_KEYS_DIR": str(store.directory)}
    )
    assert authorized.returncode == 0, authorized.stderr
    connect = f"tcp://127.0.0.1:{free_port_range(len(NETWORK_ENDPOINTS))}"
    daemon = start_daemon(
        f'[internal]\nendpoints = "{connect}"\nremote_roles = ["teacher"]\n'
        f'[security]\nkeys_dir = "{store.directory}"\n'
        "[query.params]\nact_below_confidence = 1.0\n"
    )
    try:
        yield daemon, connect, (server_key, secret)
    finally:
        daemon.stop()


def test_a_remote_teacher_joins_is_reported_lost_when_killed_and_rejoins(cluster, tmp_path):
    daemon, connect, keys = cluster
    status = daemon.status()
    # The daemon started every role of its own host; the teacher is not one of them.
    assert status["roles"]["teacher"]["state"] == "waiting" and status["roles"]["teacher"]["pid"] is None
    assert status["daemon"]["internal_endpoints"] == connect

    teacher = start_remote_role("teacher", connect, tmp_path / "teacher.log", keys)
    replacement = None
    try:
        status = daemon.wait_until(
            lambda s: s["roles"]["teacher"]["state"] == "running", timeout=90, what="the remote teacher joined"
        )
        assert status["roles"]["teacher"]["remote"]["pid"] == teacher.pid
        assert status["roles"]["teacher"]["silent_s"] is not None
        taught = run_gym_peers(daemon.endpoint, "CartPole-v1", episodes=2, peers=2)
        assert taught.by_teacher > 0, taught.as_dict()
        shown = daemon.cli("status")
        assert f"remote {status['roles']['teacher']['remote']['host']}:{teacher.pid}" in shown.stdout

        teacher.kill()  # by pid, as a host that goes away would
        teacher.wait()
        status = daemon.wait_until(lambda s: s["roles"]["teacher"]["state"] == "lost", what="the teacher lost")
        assert [e["pid"] for e in log_events(daemon, "remote_role_lost", 1)] == [teacher.pid]
        # The student answers every observation; the gateway answered each one with an action.
        alone = run_gym_peers(daemon.endpoint, "CartPole-v1", episodes=2, peers=2)
        assert alone.by_teacher == 0 and alone.by_student == alone.steps > 0, alone.as_dict()
        status = daemon.wait_until(
            lambda s: s["roles"]["decision"]["gauges"]["teacher_available"] is False,
            what="decision reporting the teacher unavailable",
        )
        assert status["errors"]["total"] == 0, status["errors"]

        # `agentrt teacher serve --connect` is the same remote role.
        replacement = start_remote_role(
            "teacher", connect, tmp_path / "teacher.log", keys, command=("teacher", "serve")
        )
        status = daemon.wait_until(
            lambda s: (
                s["roles"]["teacher"]["state"] == "running"
                and s["roles"]["teacher"]["remote"]["pid"] == replacement.pid
            ),
            timeout=90,
            what="the teacher rejoined",
        )
        assert status["roles"]["teacher"]["restarts"] == 1
        assert [e["pid"] for e in log_events(daemon, "remote_role_joined", 2)] == [teacher.pid, replacement.pid]
        again = run_gym_peers(daemon.endpoint, "CartPole-v1", episodes=4, peers=2)
        assert again.by_teacher > 0, again.as_dict()
    finally:
        stop_child(teacher)
        if replacement is not None:
            stop_child(replacement)


def probe(path, max_age: str, expected: int, timeout: float = 60):
    """``agentrt heartbeat PATH --max-age MAX_AGE``, asked until it exits ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        result = agentrt("heartbeat", str(path), "--max-age", max_age)
        if result.returncode == expected or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_a_remote_roles_heartbeat_file_is_a_liveness_probe_on_its_own_host(cluster, tmp_path):
    daemon, connect, keys = cluster
    beat = tmp_path / "teacher.heartbeat"
    missing = agentrt("heartbeat", str(beat))
    assert missing.returncode == ExitCode.FAILURE and "no heartbeat" in missing.stdout
    teacher = start_remote_role(
        "teacher", connect, tmp_path / "teacher.log", keys, options=("--heartbeat-file", str(beat))
    )
    try:
        daemon.wait_until(lambda s: s["roles"]["teacher"]["state"] == "running", timeout=90, what="the teacher joined")
        alive = probe(beat, "30", ExitCode.OK)
        assert alive.returncode == ExitCode.OK, alive.stdout
        # A hung teacher (stopped here) stops touching the file: the probe fails, so its host restarts it.
        os.kill(teacher.pid, signal.SIGSTOP)
        try:
            hung = probe(beat, "1", ExitCode.FAILURE)
            assert hung.returncode == ExitCode.FAILURE and "more than 1 s" in hung.stdout, hung.stdout
        finally:
            os.kill(teacher.pid, signal.SIGCONT)
        again = probe(beat, "1", ExitCode.OK)
        assert again.returncode == ExitCode.OK, again.stdout
    finally:
        stop_child(teacher)
    assert teacher.returncode == 0 and not beat.exists()  # a clean exit takes the file with it
    assert agentrt("heartbeat", str(beat), "--max-age", "0").returncode == ExitCode.USAGE


def test_a_remote_role_without_a_key_is_refused_when_curve_is_on(cluster, tmp_path):
    daemon, connect, keys = cluster
    # Plaintext on loopback is allowed by its own configuration: the daemon's CURVE is what refuses it.
    plaintext = start_remote_role("teacher", connect, tmp_path / "plain.log", env={"AGENTRT_INTERNAL_CURVE": "false"})
    try:
        status = daemon.wait_until(
            lambda s: s["daemon"]["internal_refused"] >= 1, timeout=90, what="the plaintext handshake refused"
        )
        assert status["roles"]["teacher"]["state"] == "waiting"
        assert log_events(daemon, "internal_connection_refused")
        # Its requests never reach it either: the peers are decided by the student alone.
        alone = run_gym_peers(daemon.endpoint, "CartPole-v1", episodes=1, peers=1)
        assert alone.by_teacher == 0 and alone.steps > 0
        assert daemon.status()["roles"]["teacher"]["state"] == "waiting"
    finally:
        stop_child(plaintext)
    # Without its keys a role with CURVE on does not even start: it says what it needs.
    refused = agentrt("role", "teacher", "--connect", connect, timeout=60)
    assert refused.returncode == ConfigError.exit_code, refused.stderr
    assert "--server-key" in refused.stderr


def test_every_role_on_this_host_over_tcp_with_curve(tmp_path):
    """No remote role: the local teacher binds its ROUTER on TCP like the other inputs, and every
    role presents the runtime's own key."""
    store = KeyStore(tmp_path / "keys")
    store.generate_server()
    connect = f"tcp://127.0.0.1:{free_port_range(len(NETWORK_ENDPOINTS))}"
    daemon = start_daemon(
        f'[internal]\nendpoints = "{connect}"\n[security]\nkeys_dir = "{store.directory}"\n'
        "[query.params]\nact_below_confidence = 1.0\n"
    )
    try:
        summary = run_gym_peers(daemon.endpoint, "CartPole-v1", episodes=1, peers=2)
        assert summary.by_teacher > 0, summary.as_dict()
        status = daemon.status()
        assert status["roles"]["teacher"]["remote"] is None and status["roles"]["teacher"]["pid"]
        assert status["daemon"]["internal_refused"] == 0
        assert sorted(store.roles_dir.glob("*.key")) == []  # nothing authorized beyond the runtime's own pair
    finally:
        daemon.stop()


def test_internal_tcp_beyond_loopback_needs_curve_and_remote_roles_need_tcp(tmp_path):
    exposed = agentrt(
        "config", "show", env={"AGENTRT_INTERNAL_ENDPOINTS": "tcp://0.0.0.0:7420", "AGENTRT_INTERNAL_CURVE": "false"}
    )
    assert exposed.returncode == 0  # only starting it is refused
    up = agentrt(
        "up",
        "--run-dir",
        str(tmp_path / "run"),
        "--no-check",
        env={"AGENTRT_INTERNAL_ENDPOINTS": "tcp://0.0.0.0:7420", "AGENTRT_INTERNAL_CURVE": "false"},
    )
    assert up.returncode == ConfigError.exit_code and "internal.curve" in up.stderr, up.stderr
    ipc = agentrt("config", "show", env={"AGENTRT_INTERNAL_REMOTE_ROLES": "teacher"})
    assert ipc.returncode == ConfigError.exit_code and "internal.remote_roles" in ipc.stderr, ipc.stderr
    unsupported = agentrt(
        "config",
        "show",
        env={"AGENTRT_INTERNAL_ENDPOINTS": "tcp://127.0.0.1:7420", "AGENTRT_INTERNAL_REMOTE_ROLES": "gateway"},
    )
    assert unsupported.returncode == ConfigError.exit_code and "remote_roles" in unsupported.stderr


def test_the_daemons_check_leaves_a_remote_teacher_to_its_own_host(tmp_path):
    """A teacher whose checkpoint only the GPU host has: `up`'s check on the daemon's host does not
    build it when it is remote, and still fails where it would run here."""
    missing = {"AGENTRT_TEACHER_PARAMS": f'{{ path = "{tmp_path / "only-on-the-gpu-host.safetensors"}" }}'}
    local = agentrt("plugins", "--check", "--json", env=missing)
    assert local.returncode == ExitCode.CONFIG, local.stdout
    remote = agentrt(
        "plugins",
        "--check",
        "--json",
        env={
            **missing,
            "AGENTRT_INTERNAL_ENDPOINTS": "tcp://127.0.0.1:7420",
            "AGENTRT_INTERNAL_REMOTE_ROLES": "teacher",
        },
    )
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert all(check["ok"] for check in json.loads(remote.stdout))
