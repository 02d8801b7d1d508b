"""The one place where ZeroMQ sockets are made, so that security and limits apply to all of them.

Roles never call ``context.socket`` themselves: they ask a Transport for a bound or connected
socket by type. Internal endpoints are ipc files in ``<run_dir>/sock`` (mode 0700), or, with a
``Network``, TCP ports on one host: then every socket on one of them, bound or connected, is a
CURVE server or client (ZAP domain ``ROLES_DOMAIN``) and sends ZeroMQ heartbeats, so that a lost
connection is noticed and dialled again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from runtime.errors import ConfigError
from runtime.wire import protocol
from runtime.wire.keys import ClientKeys, KeyStore, RoleKeys

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
# Bound by decision and the distiller (DEALER) when the teacher is remote: the teacher connects to them.
TEACH_DECISION = "teach-decision"
TEACH_DISTILLATION = "teach-distiller"
WEIGHTS = "weights"
STATS = "stats"
CONTROL = "control"

#: Internal endpoints that may be TCP, in port order: ``Network.port`` is the base port plus the
#: index here. The control sockets (CONTROL, DISTILLATION_CONTROL) stay ipc: they serve this host's CLI.
NETWORK_ENDPOINTS = (
    GATEWAY_RETURN,
    PERCEPTION_IN,
    DECISION_IN,
    EXECUTION_IN,
    DISTILLATION_IN,
    WEIGHTS,
    TEACHER,
    TEACH_DECISION,
    TEACH_DISTILLATION,
    STATS,
)
#: Transport events that mean a client spoke something other than ZMTP, or broke the handshake
#: (among them a plaintext client at a CURVE socket, and a key the ZAP handler refused).
HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
#: The ZAP domain of internal CURVE sockets: only the runtime's own key and authorized role keys get in.
ROLES_DOMAIN = "agentrt-roles"


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


def ipc_file(endpoint: str) -> Path | None:
    """The file an ``ipc://`` endpoint binds; None for other transports and Linux's abstract names (``ipc://@``)."""
    path = endpoint.removeprefix("ipc://")
    return Path(path) if endpoint.startswith("ipc://") and not path.startswith("@") else None


@dataclass(frozen=True)
class Network:
    """Internal endpoints over TCP: endpoint ``name`` is ``tcp://host:<port + its index in
    NETWORK_ENDPOINTS>``. ``server_secret`` (the runtime's) makes bound sockets CURVE servers, whose
    ZAP handler admits ``roles``; ``client`` makes connected sockets CURVE clients. Without either,
    plaintext (allowed only where the configuration says so: ``runtime.config.internal_network``).
    ``heartbeat_ms``: a connection that stops answering ZeroMQ heartbeats this long is closed and
    dialled again, and so is a connection attempt that takes longer."""

    host: str
    port: int
    heartbeat_ms: int
    client: ClientKeys | None = None
    server_secret: bytes | None = None
    roles: RoleKeys | None = None

    def endpoint(self, name: str) -> str:
        return f"tcp://{self.host}:{self.port + NETWORK_ENDPOINTS.index(name)}"


#: A socket made here (pyzmq's Socket is generic in what ``recv`` returns; these exchange bytes).
Socket = zmq.Socket[Any]


def _heartbeats(sock: Socket, timeout_ms: int) -> None:
    """ZeroMQ heartbeats every third of ``timeout_ms``; a connection silent that long is closed."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, max(timeout_ms // 3, 1))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
    # The TTL is how long the other side waits for us, in units of 100 ms (at most 6553.5 s).
    sock.setsockopt(zmq.HEARTBEAT_TTL, min(timeout_ms, 655_300))


class Transport:
    """Creates sockets with the runtime's limits: bounded linger, maximum message size, high-water marks."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None,
        max_message_bytes: int,
        linger_ms: int = 200,
        network: Network | None = None,
    ) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.network = network
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
        if self._on_network(endpoint):
            assert self.network is not None
            stall_timeout_ms = self.network.heartbeat_ms
            if self.network.server_secret is not None:
                assert self.network.roles is not None
                self.authenticate(self.network.roles, ROLES_DOMAIN)
                sock.zap_domain = ROLES_DOMAIN.encode()
                curve_secret = self.network.server_secret
        if curve_secret is not None:
            if self._authenticator is None:
                raise ValueError("a CURVE socket needs authenticate() first: without a ZAP handler any key attaches")
            sock.curve_secretkey = curve_secret
            sock.curve_server = True
        if stall_timeout_ms is not None:
            sock.setsockopt(zmq.HANDSHAKE_IVL, stall_timeout_ms)
            _heartbeats(sock, stall_timeout_ms)
        sock.bind(endpoint)
        return sock

    def connect(
        self, socket_type: int, endpoint: str, hwm: int = 10_000, curve: ClientKeys | None = None, also: str = ""
    ) -> Socket:
        """Connect a socket to ``endpoint`` (and to ``also``, of the same kind, if given)."""
        sock = self._make(socket_type, hwm)
        if self._on_network(endpoint):
            assert self.network is not None
            curve = self.network.client
            _heartbeats(sock, self.network.heartbeat_ms)
            # A dial into a cut link would otherwise wait for the kernel's SYN backoff (minutes).
            sock.setsockopt(zmq.CONNECT_TIMEOUT, self.network.heartbeat_ms)
        if curve is not None:
            curve.apply(sock)
        sock.connect(endpoint)
        if also:
            sock.connect(also)
        return sock

    def _on_network(self, endpoint: str) -> bool:
        return self.network is not None and endpoint in map(self.network.endpoint, NETWORK_ENDPOINTS)

    def authenticate(self, keys: KeyStore | RoleKeys, domain: str = "*") -> None:
        """Have the ZAP handler (one thread of this context) admit, on sockets of ``domain``, the
        CURVE clients whose public key ``keys`` allows at the moment they connect."""
        from zmq.auth.thread import ThreadAuthenticator

        if self._authenticator is None:
            self._authenticator = ThreadAuthenticator(self.context)
            self._authenticator.start()
        self._authenticator.configure_curve_callback(domain, credentials_provider=keys)

    def monitor(self, sock: Socket, events: int) -> Socket:
        """A PAIR socket receiving ``sock``'s transport events (closed with the others)."""
        monitor = sock.get_monitor_socket(events)
        monitor.setsockopt(zmq.LINGER, 0)
        self._sockets.append(monitor)
        return monitor

    def internal(self, name: str) -> str:
        if self.network is not None and name in NETWORK_ENDPOINTS:
            return self.network.endpoint(name)
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
