"""The one place where ZeroMQ sockets are made, so that security and limits apply to all of them.

Roles never call ``context.socket`` themselves: they ask a Transport for a bound or connected
socket by type. Internal endpoints are ipc files in ``<run_dir>/sock`` (mode 0700).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zmq

from runtime.errors import ConfigError
from runtime.wire import protocol
from runtime.wire.keys import ClientKeys, KeyStore

# Linux limits a unix socket path to 107 bytes; checked up front for a clear error.
MAX_IPC_PATH = 107

# Internal endpoint names: who binds each is documented in docs/architecture.md.
GATEWAY_RETURN = "gateway"
PERCEPTION_IN = "perception"
DECISION_IN = "decision"
EXECUTION_IN = "execution"
DISTILLATION_IN = "distillation"
DISTILLATION_CONTROL = "distiller"
TEACHER = "teacher"
WEIGHTS = "weights"
STATS = "stats"
CONTROL = "control"


def socket_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "sock"


def ipc_endpoint(run_dir: str | os.PathLike[str], name: str) -> str:
    path = socket_dir(run_dir) / name
    if len(str(path)) > MAX_IPC_PATH:
        raise ConfigError(
            f"run directory {run_dir} is too long for ipc sockets ({len(str(path))} > {MAX_IPC_PATH} bytes); "
            "choose a shorter one"
        )
    return f"ipc://{path}"


#: A socket made here (pyzmq's Socket is generic in what ``recv`` returns; these exchange bytes).
Socket = zmq.Socket[Any]


class Transport:
    """Creates sockets with the runtime's limits: bounded linger, maximum message size, high-water marks."""

    def __init__(self, run_dir: str | os.PathLike[str] | None, max_message_bytes: int, linger_ms: int = 200) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.context = zmq.Context()
        self.max_message_bytes = max_message_bytes
        self.linger_ms = linger_ms
        self._sockets: list[Socket] = []
        self._authenticator: Any = None

    def socket_limit(self) -> int:
        return protocol.socket_cap(self.max_message_bytes)

    def _make(self, socket_type: int, hwm: int) -> Socket:
        sock = self.context.socket(socket_type)
        sock.setsockopt(zmq.LINGER, self.linger_ms)
        sock.setsockopt(zmq.MAXMSGSIZE, self.socket_limit())
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        self._sockets.append(sock)
        return sock

    def bind(
        self,
        socket_type: int,
        endpoint: str,
        hwm: int = 10_000,
        stall_timeout_ms: int | None = None,
        curve_secret: bytes | None = None,
    ) -> Socket:
        """Bind a socket. With ``stall_timeout_ms`` (for sockets others reach over a network), a
        connection that does not finish its ZMTP handshake in that time, or stops answering ZMTP
        heartbeats (sent every third of it) for that long, is closed: a half-sent greeting or a
        frozen peer cannot hold a connection open. With ``curve_secret`` (the server's secret key)
        the socket is a CURVE server: only clients ``authenticate``'s keys allow get through, and
        everything is encrypted."""
        sock = self._make(socket_type, hwm)
        if curve_secret is not None:
            if self._authenticator is None:
                raise ValueError("a CURVE socket needs authenticate() first: without a ZAP handler any key attaches")
            sock.curve_secretkey = curve_secret
            sock.curve_server = True
        if stall_timeout_ms is not None:
            sock.setsockopt(zmq.HANDSHAKE_IVL, stall_timeout_ms)
            sock.setsockopt(zmq.HEARTBEAT_IVL, max(stall_timeout_ms // 3, 1))
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, stall_timeout_ms)
            # The TTL is how long the other side waits for us, in units of 100 ms (at most 6553.5 s).
            sock.setsockopt(zmq.HEARTBEAT_TTL, min(stall_timeout_ms, 655_300))
        sock.bind(endpoint)
        return sock

    def connect(self, socket_type: int, endpoint: str, hwm: int = 10_000, curve: ClientKeys | None = None) -> Socket:
        sock = self._make(socket_type, hwm)
        if curve is not None:
            curve.apply(sock)
        sock.connect(endpoint)
        return sock

    def authenticate(self, keys: KeyStore) -> None:
        """Start the ZAP handler (a thread of this context) that admits CURVE clients whose public
        key ``keys`` has authorized at the moment they connect."""
        from zmq.auth.thread import ThreadAuthenticator

        self._authenticator = ThreadAuthenticator(self.context)
        self._authenticator.start()
        self._authenticator.configure_curve_callback("*", credentials_provider=keys)

    def monitor(self, sock: Socket, events: int) -> Socket:
        """A PAIR socket receiving ``sock``'s transport events (closed with the others)."""
        monitor = sock.get_monitor_socket(events)
        monitor.setsockopt(zmq.LINGER, 0)
        self._sockets.append(monitor)
        return monitor

    def internal(self, name: str) -> str:
        if self.run_dir is None:
            raise ValueError(f"internal endpoint {name!r} needs a run directory")
        return ipc_endpoint(self.run_dir, name)

    def close(self) -> None:
        """Close every socket (each lingers at most ``linger_ms``) and the context."""
        for sock in reversed(self._sockets):  # monitors before the sockets they watch
            sock.close()
        self._sockets.clear()
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        self.context.term()
