"""The runtime daemon: prepares the run directory, starts and supervises the role processes,
aggregates their stats and answers control commands (status, down) from the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from runtime import __version__, logs, rundir
from runtime.config import Settings, internal_network
from runtime.errors import ExitCode, ProtocolError
from runtime.files import atomic_write
from runtime.roles import ESSENTIAL_ROLES, ROLES
from runtime.supervisor.role_processes import Launcher, RoleHandle, RoleLauncher
from runtime.wire import protocol, transport

#: A role that exits this many times in a row with the same code and reason, each time before
#: ``daemon.restart_reset_s`` of uptime, is failed: no more restarts (and the daemon stops if it is essential).
SAME_EXITS_TO_FAIL = 5
#: How often the daemon checks that its run directory is still there.
RUN_DIR_CHECK_S = 1.0


@dataclass
class RoleProcess:
    """One supervised role: its current process, restart bookkeeping and last reported stats."""

    name: str
    process: RoleHandle | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    reported_pid: int | None = None
    last_report: float = 0.0  # when the current process last reported its stats (its heartbeat)
    overdue: bool = False  # its reports are overdue, and the daemon said so in the log
    kill_reason: str | None = None  # why the daemon killed the current process, if it did
    last_exit_code: int | None = None
    last_exit_reason: str | None = None
    same_exits: int = 0  # consecutive exits with the same code and reason, each soon after its start
    failed: bool = False  # given up on: it failed the same way SAME_EXITS_TO_FAIL times in a row
    counters: dict[str, int] = field(default_factory=dict)
    carried: Counter = field(default_factory=Counter)  # counters of earlier incarnations
    gauges: dict[str, Any] = field(default_factory=dict)
    # A role on another host (internal.remote_roles): never started here, known by its reports.
    remote: bool = False
    remote_host: str | None = None
    remote_pid: int | None = None
    others: set[tuple[str | None, int]] = field(default_factory=set)  # incarnations reported while it ran

    def state(self, now: float, unresponsive_after_s: float) -> str:
        """``running`` once the process reported, ``unresponsive`` while its reports are overdue; a
        remote role is ``waiting`` until it first reports, and ``lost`` while its reports are overdue."""
        if self.remote:
            if self.remote_pid is None:
                return "waiting"
            return "lost" if now - self.last_report > unresponsive_after_s else "running"
        if self.failed:
            return "failed"
        if self.process is None:
            return "backoff" if self.restart_at is not None else "stopped"
        if self.process.poll() is not None:
            return "exited"
        silent = self.silent_s(now)
        if silent is None:
            return "starting"
        return "unresponsive" if silent > unresponsive_after_s else "running"

    def silent_s(self, now: float) -> float | None:
        """Seconds since the current process last reported; None before its first report."""
        if self.remote:
            return None if self.remote_pid is None else now - self.last_report
        if self.process is None or self.reported_pid != self.process.pid:
            return None
        return now - self.last_report

    def totals(self) -> Counter:
        total = Counter(self.carried)
        total.update(self.counters)  # update, unlike +, keeps counters that are still zero
        return total


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory private to this user (0700), or take up an empty one or one of
    agentrt's; refuse any other (``rundir.claim``) and say so in one line if it cannot be written."""
    with rundir.writing(run_dir):
        rundir.claim(run_dir)
        transport.socket_dir(run_dir).mkdir(mode=0o700, exist_ok=True)


class Daemon:
    def __init__(
        self,
        config: dict[str, Any],
        launcher: RoleLauncher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``launcher`` and ``clock`` are for tests of supervision, which run it on fake processes
        and a fake clock."""
        self.config = config  # the TOML-shaped form, written for the roles to read
        self.settings = Settings.of(config)
        self.run_dir = Path(self.settings.daemon.run_dir)
        self.log = logs.configure("daemon", self.settings.daemon.log_format, self.settings.daemon.log_level)
        remote = self.settings.internal.remote_roles
        self.roles = {name: RoleProcess(name, remote=name in remote) for name in ROLES}
        self.launcher = launcher or Launcher()
        self.clock = clock
        self.stopping = False
        self.exit_code = ExitCode.OK
        self.exit_reason = ""
        self.started_at = clock()
        self.internal_refused = 0  # connections to the stats endpoint refused in their handshake (CURVE)
        self._refusal_logged_at = -1.0

    # --- lifecycle -------------------------------------------------------------------------------
    def run(self) -> int:
        prepare_run_dir(self.run_dir)
        # Held for the daemon's lifetime: of two daemons on one run directory, one wins; and a pid
        # file found while holding it is a dead daemon's, even if its pid now names another process.
        self._lock = rundir.lock(self.run_dir)
        if self._lock is None:
            raise rundir.in_use_error(self.run_dir)
        with rundir.writing(self.run_dir):
            self._clean_after_dead_daemon()
            atomic_write(self.run_dir / rundir.CONFIG_SNAPSHOT, json.dumps(self.config).encode())
            atomic_write(self.run_dir / rundir.PID_FILE, f"{os.getpid()}\n".encode())
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self.transport = transport.Transport(
            self.run_dir,
            self.settings.protocol.max_message_bytes,
            self.settings.daemon.socket_linger_ms,
            network=internal_network(self.settings),
        )
        try:
            self.launcher.prepare()
            self.control = self.transport.bind(zmq.REP, self.transport.internal(transport.CONTROL))
            self.stats = self.transport.bind(zmq.PULL, self.transport.internal(transport.STATS))
            # Over TCP, a role that fails the handshake (no key, a key not authorized) is counted.
            self.refusals = (
                self.transport.monitor(self.stats, transport.HANDSHAKE_FAILURES) if self.transport.network else None
            )
            self.log.info(
                "daemon_started",
                run_dir=str(self.run_dir),
                version=__version__,
                peer_endpoint=self.settings.daemon.peer_endpoint,
            )
            for role in self.roles.values():
                if not role.remote and not self.stopping:  # Ctrl-C while starting: start no more
                    self._spawn(role)
            self._loop()
        finally:
            self._stop_roles()
            self.launcher.stop()
            self.transport.close()
            self._remove_sockets()
            try:
                rundir.write_daemon_exit(self.run_dir, self.exit_code, self.exit_reason or "stopped on request")
            except OSError as exc:  # a full disk costs the record of why, not the clean stop
                self.log.error("exit_record_failed", error=str(exc))
            (self.run_dir / rundir.PID_FILE).unlink(missing_ok=True)
            self.log.info("daemon_stopped", exit_code=int(self.exit_code), reason=self.exit_reason or None)
        return self.exit_code

    def _clean_after_dead_daemon(self) -> None:
        """A daemon killed outright leaves its pid file, sockets and exit reports: remove them."""
        pid_file = self.run_dir / rundir.PID_FILE
        if pid_file.exists():
            self.log.warning("stale_run_dir_cleaned", previous_pid=pid_file.read_text().strip())
            pid_file.unlink()
        self._remove_sockets()
        for stale in (self.run_dir / rundir.ROLE_EXITS).glob("*.json"):
            stale.unlink()
        (self.run_dir / rundir.DAEMON_EXIT).unlink(missing_ok=True)

    def _request_stop(self, signum: int, _frame: Any) -> None:
        self.stopping = True
        if signum == signal.SIGINT and self.exit_code == ExitCode.OK:  # Ctrl-C; SIGTERM (`down`) is a plain stop
            self.exit_code, self.exit_reason = ExitCode.INTERRUPTED, "interrupted (SIGINT)"

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.stats, zmq.POLLIN)
        if self.refusals is not None:
            poller.register(self.refusals, zmq.POLLIN)
        next_run_dir_check = 0.0
        while not self.stopping:
            for sock, _ in poller.poll(50):
                if sock is self.stats:
                    self._collect_stats()
                elif sock is self.refusals:
                    self._count_refusal()
                else:
                    self._answer_control()
            if time.monotonic() >= next_run_dir_check:
                next_run_dir_check = time.monotonic() + RUN_DIR_CHECK_S
                self._check_run_dir()
            if not self.stopping:  # on Ctrl-C the roles get SIGINT too: their exits are not crashes
                self._supervise()

    def _check_run_dir(self) -> None:
        """A daemon whose run directory was removed cannot be reached any more (its pid file and
        control socket are gone), yet holds its port and its peers: it stops rather than live on
        as an orphan that only a kill by pid ends."""
        if not (self.run_dir / rundir.PID_FILE).exists():
            self.log.error("run_dir_removed", run_dir=str(self.run_dir))
            self.exit_code, self.exit_reason = ExitCode.FAILURE, f"its run directory {self.run_dir} was removed"
            self.stopping = True

    # --- supervision -----------------------------------------------------------------------------
    def _spawn(self, role: RoleProcess) -> None:
        role.process = self.launcher.start(role.name, str(self.run_dir))
        role.started_at = self.clock()
        role.restart_at = None
        role.reported_pid = None
        role.kill_reason, role.overdue = None, False
        self.log.info("role_spawned", child=role.name, child_pid=role.process.pid, restarts=role.restarts)

    def _supervise(self) -> None:
        now = self.clock()
        settings = self.settings.daemon
        for role in self.roles.values():
            if role.remote:
                self._check_remote(role, now)
                continue
            code = role.process.poll() if role.process is not None else None
            if role.process is not None and code is None:
                self._check_liveness(role, now)
            if role.process is not None and code is not None:
                uptime = now - role.started_at
                reported = rundir.take_role_exit(self.run_dir, role.name, role.process.pid)
                reason = role.kill_reason or reported or _describe_exit(code)
                same = (code, rundir.one_line(reason)) == (role.last_exit_code, role.last_exit_reason)
                role.same_exits = role.same_exits + 1 if same and uptime < settings.restart_reset_s else 1
                role.last_exit_code, role.last_exit_reason = code, rundir.one_line(reason)
                if code == ExitCode.CONFIG:
                    self.log.error("role_misconfigured", child=role.name, error=reason)
                    self.exit_code = ExitCode.CONFIG
                    self.exit_reason = f"{role.name}: {reason}"
                    self.stopping = True
                    role.process = None
                    return
                role.carried.update(role.counters)
                role.counters = {}
                role.backoff = (
                    settings.restart_backoff_s
                    if uptime >= settings.restart_reset_s or not role.backoff
                    else min(role.backoff * 2, settings.restart_backoff_max_s)
                )
                role.restart_at = now + role.backoff
                role.process = None
                self.log.error(
                    "role_exited",
                    child=role.name,
                    exit_code=code,
                    reason=role.last_exit_reason,
                    uptime_s=round(uptime, 2),
                    restart_in_s=round(role.backoff, 3),
                )
                if role.same_exits >= SAME_EXITS_TO_FAIL:
                    self._give_up(role)
                    if self.stopping:
                        return
            if role.process is None and role.restart_at is not None and now >= role.restart_at:
                role.restarts += 1
                self._spawn(role)

    def _count_refusal(self) -> None:
        assert self.refusals is not None  # registered only when it exists
        event = recv_monitor_message(self.refusals)
        self.internal_refused += 1
        now = self.clock()
        if now - self._refusal_logged_at >= 1.0:  # a plaintext role re-dials ten times a second
            self._refusal_logged_at = now
            self.log.warning(
                "internal_connection_refused", endpoint=event["endpoint"].decode(), refused=self.internal_refused
            )

    def _check_remote(self, role: RoleProcess, now: float) -> None:
        """A remote role cannot be killed or restarted from here: its silence is reported, once."""
        silent = role.silent_s(now)
        if silent is not None and silent > self.settings.daemon.unresponsive_after_s and not role.overdue:
            role.overdue = True
            self.log.error(
                "remote_role_lost",
                child=role.name,
                host=role.remote_host,
                pid=role.remote_pid,
                silent_s=round(silent, 1),
            )

    def _check_liveness(self, role: RoleProcess, now: float) -> None:
        """A role's stats are its heartbeat: one that stops reporting (hung, stopped, deadlocked) is
        unresponsive, and past the second deadline killed, so that the restart path replaces it."""
        silent = role.silent_s(now)
        settings = self.settings.daemon
        if silent is None or role.process is None or role.kill_reason is not None:
            return
        if silent > settings.kill_unresponsive_after_s:
            # The same reason each time, so that a role that hangs again and again ends failed.
            role.kill_reason = f"killed: no report for {settings.kill_unresponsive_after_s:g} s (unresponsive)"
            self.log.error(
                "role_unresponsive_killed", child=role.name, child_pid=role.process.pid, silent_s=round(silent, 1)
            )
            role.process.kill()
        elif silent > settings.unresponsive_after_s and not role.overdue:
            role.overdue = True
            self.log.warning(
                "role_unresponsive", child=role.name, child_pid=role.process.pid, silent_s=round(silent, 1)
            )

    def _give_up(self, role: RoleProcess) -> None:
        """A role that keeps failing the same way is not restarted again: another try would fail too."""
        role.failed, role.restart_at = True, None
        why = (
            f"{role.name} exited {role.same_exits} times in a row with code {role.last_exit_code}: "
            f"{role.last_exit_reason}"
        )
        if role.name in ESSENTIAL_ROLES:
            self.log.error("role_failed", child=role.name, essential=True, reason=why)
            self.exit_code, self.exit_reason, self.stopping = ExitCode.CONFIG, why, True
        else:
            self.log.error(
                "role_failed",
                child=role.name,
                essential=False,
                reason=why,
                hint="the student keeps serving; fix the cause and restart the daemon",
            )

    def _stop_roles(self) -> None:
        alive = [r.process for r in self.roles.values() if r.process is not None and r.process.poll() is None]
        for process in alive:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.daemon.stop_timeout_s
        for process in alive:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                self.log.warning("role_killed", child_pid=process.pid)
                process.kill()
                process.wait()

    def _remove_sockets(self) -> None:
        """The socket files of this run: libzmq leaves an ipc file behind when its socket closes."""
        sockets = transport.socket_dir(self.run_dir)
        if sockets.is_dir():
            for entry in sockets.iterdir():
                entry.unlink(missing_ok=True)
        peers = transport.ipc_file(self.settings.daemon.peer_endpoint)
        if peers is not None and peers.is_socket():
            peers.unlink(missing_ok=True)

    # --- stats and control -----------------------------------------------------------------------
    def _collect_stats(self) -> None:
        for _ in range(256):
            try:
                data = self.stats.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = protocol.decode(data, self.transport.socket_limit(), accept=frozenset({"stats"}))
            except ProtocolError as exc:
                self.log.warning("stats_rejected", error=exc.message)
                continue
            self.take_stats(message)

    def take_stats(self, message: protocol.Message) -> None:
        """A role's report: its counters and gauges, and a heartbeat."""
        role = self.roles.get(message["role"])
        if role is not None and role.remote:
            if not self._take_remote(role, message):
                return
        # A report from an earlier incarnation must not overwrite the current one's.
        elif role is None or role.process is None or role.process.pid != message["pid"]:
            return
        now = self.clock()
        if role.overdue:
            role.overdue = False
            self.log.info("role_responsive", child=role.name, silent_s=round(now - role.last_report, 1))
        role.reported_pid = message["pid"]
        role.last_report = now
        role.counters = message["counters"]
        role.gauges = message["gauges"]
        if role.name == "gateway" and "peer_endpoint" in role.gauges:
            self._pin_peer_endpoint(role.gauges["peer_endpoint"])

    def _take_remote(self, role: RoleProcess, message: protocol.Message) -> bool:
        """Whether to take a remote role's report. A new host or pid is a new incarnation joining
        (its counters are added to the earlier ones') unless the current one still reports: then
        it is a second process for the role (it is served requests too, but status follows one),
        logged once and its reports left out."""
        incarnation = (message.get("host"), message["pid"])
        if incarnation == (role.remote_host, role.remote_pid):
            return True
        now = self.clock()
        if role.remote_pid is not None and now - role.last_report <= self.settings.daemon.unresponsive_after_s:
            if incarnation not in role.others:
                role.others.add(incarnation)
                self.log.warning(
                    "remote_role_duplicate",
                    child=role.name,
                    host=incarnation[0],
                    pid=incarnation[1],
                    shown_host=role.remote_host,
                    shown_pid=role.remote_pid,
                )
            return False
        if role.remote_pid is not None:
            role.restarts += 1
            role.carried.update(role.counters)
            role.counters = {}
        role.remote_host, role.remote_pid = incarnation
        role.others.discard(incarnation)
        role.started_at = now
        role.overdue = False
        self.log.info("remote_role_joined", child=role.name, host=role.remote_host, pid=role.remote_pid)
        return True

    def _pin_peer_endpoint(self, bound: str) -> None:
        """With a port left to the OS (``tcp://host:*``), the port the gateway got is where peers are:
        a restarted gateway must bind that one again, so the configuration every role reads says it."""
        configured = self.settings.daemon.peer_endpoint
        if bound == configured or configured.rsplit(":", 1)[-1] not in ("*", "0"):
            return
        self.settings = replace(self.settings, daemon=replace(self.settings.daemon, peer_endpoint=bound))
        self.config = self.settings.as_config()
        try:
            atomic_write(self.run_dir / rundir.CONFIG_SNAPSHOT, json.dumps(self.config).encode())
        except OSError as exc:  # a full disk costs the pinning (a restarted gateway gets a new port), not the daemon
            self.log.error("config_snapshot_failed", error=str(exc), peer_endpoint=bound)
        else:
            self.log.info("peer_endpoint_pinned", peer_endpoint=bound)

    def _answer_control(self) -> None:
        try:
            request = protocol.decode(self.control.recv(), self.transport.socket_limit(), accept=frozenset({"control"}))
        except ProtocolError as exc:
            self.control.send(protocol.encode("control_reply", ok=False, message=exc.message))
            return
        command = request["command"]
        try:
            if command == "status":
                reply = protocol.encode("control_reply", ok=True, result=self.status())
            elif command == "down":
                self.stopping = True
                # Everything `agentrt down` must see gone before it may say the daemon stopped.
                reply = protocol.encode("control_reply", ok=True, result={"pid": os.getpid(), "pids": self.pids()})
            elif command == "ping":
                reply = protocol.encode("control_reply", ok=True, result={"pid": os.getpid(), "version": __version__})
            else:
                reply = protocol.encode("control_reply", ok=False, message=f"unknown command {command!r}")
        except Exception as exc:  # a control request must never take the daemon down
            self.log.exception("control_failed", command=command)
            reply = protocol.encode("control_reply", ok=False, message=f"{command} failed: {type(exc).__name__}: {exc}")
        self.control.send(reply)

    def pids(self) -> list[int]:
        """The daemon's own pid, its live role processes' and the fork servers'."""
        roles = [r.process.pid for r in self.roles.values() if r.process is not None and r.process.poll() is None]
        return [os.getpid(), *roles, *self.launcher.fork_servers().values()]

    def status(self) -> dict[str, Any]:
        now = self.clock()
        unresponsive_after = self.settings.daemon.unresponsive_after_s
        totals = {name: role.totals() for name, role in self.roles.items()}
        errors: Counter = Counter()
        for counts in totals.values():
            errors.update({k.removeprefix("errors."): v for k, v in counts.items() if k.startswith("errors.")})
        gateway, decision = totals["gateway"], totals["decision"]
        distill = self.roles["distillation"].gauges
        return {
            "daemon": {
                "pid": os.getpid(),
                "fork_servers": self.launcher.fork_servers(),
                "version": __version__,
                "uptime_s": round(now - self.started_at, 3),
                "run_dir": str(self.run_dir),
                # Where peers really connect: with a wildcard port in the configuration, the bound one.
                "peer_endpoint": self.roles["gateway"].gauges.get("peer_endpoint", self.settings.daemon.peer_endpoint),
                # curve, loopback or insecure (reachable from other hosts without CURVE: warned about)
                "peer_security": self.roles["gateway"].gauges.get("peer_security"),
                "internal_endpoints": self.settings.internal.endpoints,
                "internal_refused": self.internal_refused,
            },
            "roles": {
                name: {
                    "pid": role.process.pid if role.process else None,  # processes of this host only
                    "state": role.state(now, unresponsive_after),
                    "silent_s": None if (silent := role.silent_s(now)) is None else round(silent, 3),
                    "uptime_s": round(now - role.started_at, 3) if role.process or role.remote_pid else 0.0,
                    # A role on another host: where it runs; silent_s is the time since it was last heard.
                    "remote": {"host": role.remote_host, "pid": role.remote_pid} if role.remote else None,
                    "restarts": role.restarts,
                    "last_exit_code": role.last_exit_code,
                    "last_exit_reason": role.last_exit_reason,
                    "counters": dict(totals[name]),
                    "gauges": role.gauges,
                }
                for name, role in self.roles.items()
            },
            "peers_connected": self.roles["gateway"].gauges.get("peers_connected", 0),
            "observations": gateway["observations"],
            "actions": gateway["actions_sent"],
            "episodes": gateway["episodes"],
            "errors": {"total": sum(errors.values()), "by_code": dict(errors)},
            "student_version": self.roles["decision"].gauges.get("student_version", 0),
            "candidate_version": distill.get("version", 0),  # the newest trained, promoted or not
            "published_version": distill.get("serving_version", 0),  # the newest that passed the gate
            "decisions": {
                "total": decision["decisions"],
                "by_teacher": decision["decided_by_teacher"],
                "by_student": decision["decisions"] - decision["decided_by_teacher"],
            },
            # Files that could not be read, moved aside (by decision or the distiller, each file once).
            "checkpoints_quarantined": decision["checkpoints_quarantined"]
            + totals["distillation"]["checkpoints_quarantined"],
            "registry_rebuilt": totals["distillation"]["registry_rebuilt"],
            "teacher_queries": totals["teacher"]["labels"],
            "labels_requested": decision["labels_requested"],
            "distillation": {
                "train_steps": totals["distillation"]["train_steps"],
                "loss": distill.get("loss"),
                "agreement": distill.get("agreement"),
                "buffer": distill.get("buffer", 0),
                "training": distill.get("training", "ok"),
                "training_error": distill.get("training_error"),
                # New versions wait in memory, unwritten, until the disk has space again.
                "disk_full": distill.get("disk_full", False),
            },
        }


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code} without a reason (see the log)"
