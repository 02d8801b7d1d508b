"""Start-up checked against reality, and a full disk: the run directory must be agentrt's (or new,
or empty), the peer endpoint must bind, a run directory that cannot be written stops ``up`` in one
line, and a disk that fills up while the daemon runs pauses publishing instead of crashing anything."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from runtime import rundir
from runtime.errors import ConfigError, DaemonError, ExitCode
from runtime.peer.gym import run_gym_peers
from runtime.processes import SAFE_PATH_ENV, die_with_parent, wait_for_exit
from runtime.supervisor import control
from runtime.testing import agentrt, start_daemon

ANY_PORT = "tcp://127.0.0.1:*"
FAST_PUBLISHING = {"AGENTRT_DISTILLATION_PUBLISH_INTERVAL_S": "0.3", "AGENTRT_DISTILLATION_STEPS_PER_PUBLISH": "50"}


def test_a_new_or_empty_directory_becomes_a_run_directory_with_its_marker(tmp_path):
    for path in (tmp_path / "new" / "run", tmp_path / "empty"):
        if path.name == "empty":
            path.mkdir(mode=0o755)
        rundir.claim(path)
        assert (path / rundir.MARKER).is_file() and stat.S_IMODE(path.stat().st_mode) == 0o700
        rundir.claim(path)  # and it is one from then on


def test_a_foreign_directory_is_refused_and_left_as_it_was(tmp_path):
    foreign = tmp_path / "home"
    (foreign / "sock").mkdir(parents=True)
    (foreign / "sock" / "precious").write_text("mine")
    foreign.chmod(0o755)
    with pytest.raises(ConfigError, match="not an agentrt run directory"):
        rundir.claim(foreign)
    result = agentrt("up", "--no-check", "--run-dir", str(foreign), "--peer-endpoint", ANY_PORT, timeout=60)
    assert result.returncode == ExitCode.USAGE
    [line] = result.stderr.splitlines()  # one line, no traceback
    assert "is not empty and not an agentrt run directory" in line and "daemon.run_dir" in line
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o755
    assert sorted(p.name for p in foreign.rglob("*")) == ["precious", "sock"]
    assert (foreign / "sock" / "precious").read_text() == "mine"


@pytest.mark.parametrize(
    "endpoint, reason",
    # A malformed endpoint never gets this far: the configuration refuses it (test_config).
    [("in use", "Address already in use"), ("ipc:///nonexistent-agentrt-dir/peers.sock", "No such file or directory")],
    ids=["port-in-use", "no-such-directory"],
)
def test_a_peer_endpoint_that_cannot_be_bound_stops_up_with_the_reason(run_dir, endpoint, reason):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if endpoint == "in use":
            endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        result = agentrt(
            "up", "--detach", "--no-check", "--run-dir", str(run_dir), "--peer-endpoint", endpoint, timeout=120
        )
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert f"gateway: cannot bind daemon.peer_endpoint {endpoint!r}: {reason}" in result.stderr
    assert not (run_dir / rundir.PID_FILE).exists()  # the daemon stopped; it does not crash-loop the gateway


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"]
    return subprocess.run(probe, capture_output=True).returncode == 0


needs_tmpfs = pytest.mark.skipif(
    not _can_mount_tmpfs(), reason="needs unshare and a user namespace to mount a small tmpfs"
)


@needs_tmpfs
@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
@pytest.mark.parametrize("marked", [False, True], ids=["new-run-dir", "agentrt-run-dir"])
def test_up_on_a_full_disk_exits_in_one_line(tmp_path, detach, marked):
    # A real full file system: a 64 KiB tmpfs filled to the last block, in a mount namespace of the
    # command's own (so nothing is mounted for anyone else). In a new run directory the marker is the
    # first write to fail; in an agentrt run directory, config.json.
    disk = tmp_path / "disk"
    disk.mkdir()
    up = [sys.executable, "-m", "runtime", "up", "--no-check", "--run-dir", f"{disk}/run", "--peer-endpoint", ANY_PORT]
    mark = f'touch "{disk}/run/{rundir.MARKER}" && ' if marked else ""
    script = (
        f'mount -t tmpfs -o size=64k tmpfs "{disk}" && mkdir "{disk}/run" && {mark}'
        f'(cat /dev/zero > "{disk}/filler" 2>/dev/null; true) && exec "$@"'
    )
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *up]
    if detach:
        command.append("--detach")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=os.environ)
    assert result.returncode == ExitCode.CANT_CREATE, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("agentrt up: cannot write ") and line.endswith(": No space left on device"), line


@needs_tmpfs
def test_a_full_disk_pauses_publishing_until_space_returns(tmp_path):
    """A daemon whose run directory is a real tmpfs of its own, filled while peers run: the distiller
    holds its candidates and says disk_full, every role keeps running and serving, and publishing
    resumes once the filler is removed. The test reaches the run directory through the daemon's
    /proc/<pid>/root, as it sees it inside its mount namespace."""
    disk = Path(tempfile.mkdtemp(prefix="art-"))  # short: ipc paths, through /proc/<pid>/root, stay short
    log_path = tmp_path / "daemon.log"
    up = [sys.executable, "-m", "runtime", "up", "--no-check", "--run-dir", str(disk), "--peer-endpoint", ANY_PORT]
    script = f'mount -t tmpfs -o size=16m tmpfs "{disk}" && exec "$@"'
    env = {**os.environ, **SAFE_PATH_ENV, "AGENTRT_DAEMON_STATS_INTERVAL_S": "0.1", **FAST_PUBLISHING}
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *up, "--log-format", "json"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=die_with_parent,
        )
    run_dir = Path(f"/proc/{daemon.pid}/root{disk}")
    pids: set[int] = set()
    stop = threading.Event()
    outcome: list[object] = []

    def status(predicate, what: str) -> dict:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert daemon.poll() is None, f"the daemon exited with {daemon.returncode}; see {log_path}"
            with contextlib.suppress(DaemonError):
                current = control.request(run_dir, "status", timeout_s=2)
                pids.update(role["pid"] for role in current["roles"].values() if role["pid"])
                if predicate(current):
                    return current
            time.sleep(0.1)
        raise TimeoutError(f"waiting for {what}; see {log_path}")

    try:
        ready = status(lambda s: all(r["state"] == "running" for r in s["roles"].values()), "every role running")
        pids.update(ready["daemon"]["fork_servers"].values())
        endpoint = ready["daemon"]["peer_endpoint"]

        def play() -> None:
            try:
                outcome.append(run_gym_peers(endpoint, "CartPole-v1", 10**6, peers=2, should_stop=stop.is_set))
            except BaseException as exc:  # noqa: BLE001 (asserted below)
                outcome.append(exc)

        player = threading.Thread(target=play)
        player.start()
        status(lambda s: s["candidate_version"] >= 1, "a first candidate on disk")
        with open(run_dir / "filler", "wb") as filler, contextlib.suppress(OSError):
            while True:  # until ENOSPC: the disk is full
                filler.write(b"\0" * 65536)
                filler.flush()
        full = status(lambda s: s["distillation"]["disk_full"], "the distiller reporting disk_full")
        assert all(r["state"] == "running" and r["restarts"] == 0 for r in full["roles"].values())
        status(lambda s: s["actions"] > full["actions"] + 100, "peers served on a full disk")
        assert not outcome
        (run_dir / "filler").unlink()
        status(
            lambda s: not s["distillation"]["disk_full"] and s["candidate_version"] > full["candidate_version"],
            "publishing resumed",
        )
        stop.set()
        player.join(timeout=120)
        assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
        assert all(r["restarts"] == 0 for r in status(lambda s: True, "status")["roles"].values())
        assert '"disk_full"' in log_path.read_text() and '"disk_space_returned"' in log_path.read_text()
    finally:
        stop.set()
        daemon.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(timeout=60)
        for pid in wait_for_exit(pids | {daemon.pid}, timeout_s=30):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(disk, ignore_errors=True)


def test_a_long_tmpdir_does_not_keep_the_fork_server_from_starting(tmp_path):
    """Python 3.11 puts the fork servers' sockets under TMPDIR; one too long for a unix socket path
    (a test's tmp_path under pytest-xdist, say) must not stop the daemon."""
    long_tmp = tmp_path / ("t" * max(1, 90 - len(str(tmp_path))))
    long_tmp.mkdir()
    daemon = start_daemon(env={"TMPDIR": str(long_tmp)})
    try:
        status = daemon.status()
        assert set(status["daemon"]["fork_servers"]) == {"models", "light"}, status["daemon"]
        assert all(role["state"] == "running" for role in status["roles"].values()), status["roles"]
    finally:
        daemon.stop()


CLI_MODULES = """
import json, sys
from runtime.cli import main
code = main(["status", "--run-dir", sys.argv[1]])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/PID/maps to see a process's libraries")
def test_torch_is_loaded_by_the_model_roles_not_by_the_daemon_or_the_cli(daemon):
    """torch is for the roles that run models: loaded by the daemon it costs about 180 MiB of memory
    and a second of every start; by ``agentrt status``, a second of every call."""

    def maps_torch(pid: int) -> bool:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()

    status = daemon.status()
    assert maps_torch(status["roles"]["decision"]["pid"])  # what the check looks for is there to be found
    assert not maps_torch(daemon.process.pid)
    assert not maps_torch(status["roles"]["gateway"]["pid"])
    probe = subprocess.run(
        [sys.executable, "-c", CLI_MODULES, str(daemon.run_dir)], capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout.splitlines()[-1]) == {"code": 0, "torch": False}
