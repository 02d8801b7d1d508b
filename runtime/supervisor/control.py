"""Client side of the daemon's control socket, used by the CLI (status, down, ping)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq

from runtime import rundir
from runtime.errors import DaemonError, DaemonUnreachable
from runtime.wire import protocol, transport


def request(
    run_dir: str | Path,
    command: str,
    timeout_s: float = 3.0,
    args: dict[str, Any] | None = None,
    endpoint: str = transport.CONTROL,
) -> dict[str, Any]:
    """Send one control command to the daemon of ``run_dir`` (or, with ``endpoint``, to another
    control socket of it, such as the distiller's) and return its result."""
    endpoint_file = transport.socket_dir(run_dir) / endpoint
    # A daemon killed outright leaves its pid file and sockets: that is "not running", said at once.
    if rundir.read_pid(run_dir) is None or not endpoint_file.exists():
        raise DaemonUnreachable(f"no daemon is running with run directory {run_dir}")
    client = transport.Transport(run_dir, protocol.DEFAULT_MAX_MESSAGE_BYTES, linger_ms=0)
    try:
        sock = client.connect(zmq.REQ, client.internal(endpoint))
        sock.send(protocol.encode("control", command=command, args=args or {}))
        if not sock.poll(int(timeout_s * 1000)):
            raise DaemonUnreachable(f"the daemon in {run_dir} did not answer within {timeout_s:g} s")
        reply = protocol.decode(sock.recv(), accept=frozenset({"control_reply"}))
    finally:
        client.close()
    if not reply["ok"]:
        raise DaemonError(reply.get("message", "command failed"))
    return reply.get("result", {})


def waiting_for(status: dict[str, Any]) -> dict[str, str]:
    """Role -> state of this host's roles that do not run (yet). Remote roles join when they do,
    and the student serves without them (as without a failed teacher): they are not waited for."""
    return {
        name: role["state"]
        for name, role in status["roles"].items()
        if role["state"] != "running" and not role.get("remote")
    }
