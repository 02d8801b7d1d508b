"""Start-up checked against reality: the run directory must be agentrt's (or new, or empty), the
peer endpoint must bind, and a run directory that cannot be written stops ``up`` in one line."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys

import pytest

from runtime import rundir
from runtime.errors import ConfigError, ExitCode
from runtime.testing import agentrt

ANY_PORT = "tcp://127.0.0.1:*"


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
    [("in use", "Address already in use"), ("tcp://127.0.0.1:port", "Invalid argument")],
    ids=["port-in-use", "malformed"],
)
def test_a_peer_endpoint_that_cannot_be_bound_stops_up_with_the_reason(run_dir, endpoint, reason):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if endpoint == "in use":
            endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        result = agentrt(
            "up", "--detach", "--no-check", "--run-dir", str(run_dir), "--peer-endpoint", endpoint, timeout=300
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
