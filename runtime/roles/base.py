"""What every role process shares: logging, plugins, sockets, the poll loop, stats, clean shutdown."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import zmq

from runtime import logs, rundir
from runtime.config import Settings, internal_network
from runtime.errors import ConfigError, ExitCode, PluginError, PluginFailure, ProtocolError
from runtime.plugin import pluginmanager
from runtime.processes import die_with_parent
from runtime.wire import frames, protocol, transport
from runtime.wire.keys import ClientKeys
from runtime.wire.protocol import ErrorCode, Message
from runtime.wire.spaces import agent_spaces

# A drain loop handles at most this many messages from one socket before the others get a turn.
DRAIN_LIMIT = 256
# A repeated event (a refusal of one error code, a failure of one plugin hook) is logged at most this
# often, with the count since its last line: a flood of bad input or a broken plugin cannot fill the disk.
REPEAT_LOG_INTERVAL_S = 1.0


def report_exit(run_dir: str, role: str, code: ExitCode, reason: str) -> None:
    """Tell the daemon why this role exits; a failure to write must not hide the exit itself."""
    try:
        rundir.write_role_exit(run_dir, role, os.getpid(), int(code), reason)
    except OSError as exc:
        structlog.get_logger().warning("exit_report_failed", error=str(exc))


class Role:
    """Base class of a role process. Subclasses set ``name``, create sockets in ``setup`` and
    register handlers with ``on``; the base runs the loop until SIGTERM/SIGINT or the daemon dies."""

    name = "role"

    def __init__(
        self,
        config: dict[str, Any],
        supervised: bool = True,
        joining: bool = False,
        keys: ClientKeys | None = None,
        heartbeat_file: str | None = None,
    ) -> None:
        """``supervised``: run under the daemon (report stats, exit with it); False for a role run
        on its own, such as ``agentrt teacher serve --endpoint``. ``joining``: run on another host
        and join the daemon's supervision over its TCP internal endpoints (``agentrt role NAME
        --connect``), presenting ``keys`` (CURVE): it reports stats, with its host name, but
        neither dies with the daemon nor writes into its run directory. ``heartbeat_file``: touched
        at every heartbeat and removed on exit, for a liveness probe on the role's own host
        (``agentrt heartbeat``): the daemon sees a hung remote role only as lost."""
        self.supervised = supervised or joining
        self.joining = joining
        self.heartbeat_file = Path(heartbeat_file) if heartbeat_file else None
        if self.supervised and not joining:
            die_with_parent()
        self.parent_pid = os.getppid()
        self.config = config  # the TOML-shaped form, for plugins (agentrt_role_started)
        self.settings = settings = Settings.of(config)
        self.log = logs.configure(self.name, settings.daemon.log_format, settings.daemon.log_level)
        self.transport = transport.Transport(
            settings.daemon.run_dir if supervised and not joining else None,
            settings.protocol.max_message_bytes,
            settings.daemon.socket_linger_ms,
            network=internal_network(settings, keys, joining) if self.supervised else None,
        )
        self.max_message_bytes = settings.protocol.max_message_bytes
        self.counters: Counter[str] = Counter()
        self._repeats: dict[str, tuple[float, int]] = {}  # key -> (time of its last line, occurrences since)
        self.gauges: dict[str, Any] = {}
        self.poller = zmq.Poller()
        self.handlers: dict[zmq.Socket, Callable[[zmq.Socket], None]] = {}
        self.stopping = False
        self.stats_interval = settings.daemon.stats_interval_s
        self.plugins = pluginmanager.load(settings.plugins.table())
        self.observation_space, self.action_space = agent_spaces(settings.agent.table())

    # --- for subclasses ---------------------------------------------------------------------
    def setup(self) -> None:
        raise NotImplementedError

    def poll_timeout_ms(self) -> int:
        """How long the loop may block waiting for messages; roles with background work return less."""
        return 100

    def tick(self) -> None:
        """Called once per loop iteration, after messages were handled."""

    def teardown(self) -> None:
        """Called before the sockets close."""

    def on(self, sock: zmq.Socket, handler: Callable[[zmq.Socket], None]) -> None:
        self.poller.register(sock, zmq.POLLIN)
        self.handlers[sock] = handler

    def teacher_socket(self, own: str) -> zmq.Socket:
        """A DEALER for ``teach`` requests: connected to the teacher role's ROUTER, or, with the
        teacher on another host (internal.remote_roles), bound at the internal endpoint ``own``
        for the teacher to dial: a send finds no teacher while none is connected."""
        if "teacher" in self.settings.internal.remote_roles:
            return self.transport.bind(zmq.DEALER, self.transport.internal(own))
        return self.transport.connect(zmq.DEALER, self.transport.internal(transport.TEACHER))

    def count_error(self, code: int, **context: Any) -> None:
        """Count a refusal. Each is logged at debug; at warning, one line per code and second at most,
        with the count since the last one, so that a peer sending garbage cannot fill the disk."""
        name = ErrorCode(code).name
        self.counters[f"errors.{name}"] += 1
        self.log.debug("message_rejected", code=int(code), error=name, **context)
        self.log_repeated(f"refused.{name}", "warning", "messages_rejected", code=int(code), error=name, **context)

    def log_repeated(self, key: str, level: str, event: str, **fields: Any) -> None:
        """Log ``event`` at most once per REPEAT_LOG_INTERVAL_S for ``key``; ``count`` says how many
        occurrences the line stands for (this one and those not logged since the last line)."""
        now = time.monotonic()
        last_line, since = self._repeats.get(key, (-math.inf, 0))
        if now - last_line >= REPEAT_LOG_INTERVAL_S:
            getattr(self.log, level)(event, count=since + 1, **fields)
            self._repeats[key] = (now, 0)
        else:
            self._repeats[key] = (last_line, since + 1)

    def decode(self, data: bytes, kinds: frozenset[str]) -> Message | None:
        """Decode an internal message; one that does not decode is counted and dropped (never fatal)."""
        try:
            return protocol.decode(data, self.transport.socket_limit(), accept=kinds)
        except ProtocolError as exc:
            self.count_error(exc.code, detail=exc.message, source="internal")
            return None

    def decode_frames(
        self, parts: list[zmq.Frame], kind: int, arrays: tuple[int, ...] = (1,)
    ) -> frames.Internal | None:
        """Decode an internal multipart message (``runtime.wire.frames``); one that does not fit the
        framing is counted and dropped (never fatal)."""
        try:
            return frames.decode(parts, kind, arrays)
        except ProtocolError as exc:
            self.count_error(exc.code, detail=exc.message, source="internal")
            return None

    def drain(self, sock: zmq.Socket, handle: Callable[[Any], None], multipart: bool = False) -> None:
        """Receive up to DRAIN_LIMIT messages that are ready and hand each to ``handle``: its one
        frame as bytes, or with ``multipart`` its frames (zmq.Frame, not copied)."""
        for _ in range(DRAIN_LIMIT):
            try:
                data = sock.recv_multipart(zmq.NOBLOCK, copy=False) if multipart else sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            handle(data)

    def send(self, sock: zmq.Socket, data: bytes | list[Any], what: str) -> bool:
        """Send without blocking; a full queue drops the message and counts it instead of stalling the role."""
        try:
            if isinstance(data, list):
                sock.send_multipart(data, zmq.NOBLOCK)
            else:
                sock.send(data, zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.counters[f"dropped.{what}"] += 1
            return False

    def reply_error(self, returns: zmq.Socket, route: bytes, code: ErrorCode, message: str, seq: int | None) -> None:
        """Send an error for a peer's request back through the gateway (and count it here)."""
        self.count_error(code, detail=message, seq=seq)
        self.send(returns, frames.returned(route, b"error", protocol.error_message(code, message, seq)), "reply")

    def log_plugin_failure(self, failure: PluginFailure) -> None:
        component = failure.component
        self.log_repeated(
            f"plugin.{component.plugin}.{component.hook}",
            "error",
            "plugin_failed",
            plugin=component.plugin,
            hook=component.hook,
            component=component.name,
            error=f"{type(failure.error).__name__}: {failure.error}",
        )

    def plugin_failed(self, failure: PluginFailure, returns: zmq.Socket, route: bytes, seq: int | None) -> None:
        """A plugin raised while serving a peer's request: log it by plugin and hook, answer the peer."""
        self.log_plugin_failure(failure)
        self.reply_error(returns, route, ErrorCode.PLUGIN_FAILED, str(failure), seq)

    def note_quarantine(self, moved_to: Path | None, reason: str, **fields: Any) -> None:
        """A file that could not be read was moved aside (``moved_to``; None: another process
        moved it first): counted (``checkpoints_quarantined`` in status) and logged."""
        if moved_to is None:
            return
        self.counters["checkpoints_quarantined"] += 1
        self.log.error("checkpoint_quarantined", moved_to=str(moved_to), reason=rundir.one_line(reason), **fields)

    def exit_with(self, code: ExitCode, reason: str) -> int:
        """The exit status for ``reason``, which the daemon shows in ``status`` (supervised roles only)."""
        if self.supervised and not self.joining:
            report_exit(self.settings.daemon.run_dir, self.name, code, reason)
        return code

    def _daemon_alive(self) -> bool:
        if self.joining:  # on another host: the daemon sees this role lost and back, not the reverse
            return True
        parent = multiprocessing.parent_process()
        if parent is not None:  # forked by one of the daemon's fork servers: the daemon is not our OS parent
            return parent.is_alive()
        return os.getppid() == self.parent_pid  # run by hand (python -m runtime.roles)

    # --- the loop -------------------------------------------------------------------------------
    def _request_stop(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def _report_stats(self) -> None:
        if not self.supervised:
            return
        self.gauges["torch_loaded"] = "torch" in sys.modules
        self.gauges["log_lines_dropped"] = logs.output.dropped
        where = {"host": socket.gethostname()} if self.joining else {}
        message = protocol.encode(
            "stats", role=self.name, pid=os.getpid(), counters=dict(self.counters), gauges=self.gauges, **where
        )
        self.send(self._stats, message, "stats")

    def _touch_heartbeat_file(self) -> None:
        if self.heartbeat_file is None:
            return
        try:
            self.heartbeat_file.touch()
        except OSError as exc:  # a probe will say so; the role itself keeps serving
            self.log_repeated("heartbeat_file", "warning", "heartbeat_file_failed", error=str(exc))

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        if self.supervised:
            self._stats = self.transport.connect(zmq.PUSH, self.transport.internal(transport.STATS), hwm=16)
        try:
            try:
                self.setup()
            except (PluginError, ConfigError) as exc:
                # A role that cannot start with this configuration exits with CONFIG: restarting it
                # cannot help, so the daemon stops and says why.
                self.log.error("role_setup_failed", error=str(exc))
                return self.exit_with(ExitCode.CONFIG, str(exc))
            self.plugins.notify("agentrt_role_started", role=self.name, config=self.config)
            self.log.info("role_started")
            next_stats = 0.0
            while not self.stopping:
                for sock, _ in self.poller.poll(self.poll_timeout_ms()):
                    self.handlers[sock](sock)
                self.tick()
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + self.stats_interval
                    self._report_stats()
                    self._touch_heartbeat_file()
                    if self.supervised and not self._daemon_alive():
                        self.log.warning("daemon_gone")
                        break
            self.plugins.notify("agentrt_role_stopping", role=self.name)
            self.log.info("role_stopping")
            self._report_stats()
            self.teardown()
        except Exception as exc:
            self.log.exception("role_crashed")
            return self.exit_with(ExitCode.FAILURE, f"{type(exc).__name__}: {exc}")
        finally:
            self.transport.close()
            if self.heartbeat_file is not None:
                self.heartbeat_file.unlink(missing_ok=True)
        self.log.info("role_stopped")
        return 0
