"""Supervision: restart backoff, liveness (stats as heartbeats), and faults injected into a real
daemon under load. The first tests run the daemon's bookkeeping on fake processes and a fake clock;
the rest use real processes and wait for events, never for time."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import gymnasium
import numpy as np
import pytest

from runtime import config as config_module
from runtime.peer import Peer
from runtime.peer.gym import AttachSummary, run_gym_peers
from runtime.processes import process_alive, wait_for_exit
from runtime.roles import ROLES
from runtime.supervisor.daemon import Daemon
from runtime.testing import start_daemon
from runtime.wire import protocol

_pids = itertools.count(900_000)


class FakeProcess:
    """A role process that exits when a test says so, and records the signals it is sent."""

    def __init__(self) -> None:
        self.pid = next(_pids)
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)

    def wait(self, timeout: float | None = None) -> int:
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        self.signals.append(signal.SIGKILL)
        self.returncode = -signal.SIGKILL


class FakeLauncher:
    def __init__(self) -> None:
        self.started: list[tuple[str, FakeProcess]] = []

    def start(self, role: str, run_dir: str) -> FakeProcess:
        process = FakeProcess()
        self.started.append((role, process))
        return process

    def prepare(self) -> None:
        pass

    def fork_servers(self) -> dict[str, int]:
        return {}

    def stop(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def supervised(tmp_path):
    """A daemon's supervision on fake processes and a fake clock, every role started."""
    settings = {
        "run_dir": str(tmp_path),
        "restart_backoff_s": 0.1,
        "restart_backoff_max_s": 1.0,
        "restart_reset_s": 30.0,
        "unresponsive_after_s": 2.0,
        "kill_unresponsive_after_s": 5.0,
    }
    config = config_module.merge(config_module.defaults(), {"daemon": settings}, "test")
    clock = Clock()
    daemon = Daemon(config, launcher=FakeLauncher(), clock=clock)
    for role in daemon.roles.values():
        daemon._spawn(role)
    return daemon, clock


def report(daemon: Daemon, *names: str) -> None:
    """Each named role sends its stats, as it does every daemon.stats_interval_s."""
    for name in names:
        pid = daemon.roles[name].process.pid
        stats = protocol.encode("stats", role=name, pid=pid, counters={}, gauges={})
        daemon.take_stats(protocol.decode(stats))


def crash(daemon: Daemon, clock: Clock, name: str, code: int) -> float:
    """Make ``name`` exit with ``code``, let the daemon see it, and return the backoff it chose;
    then move the clock to the restart and let the daemon restart it."""
    role = daemon.roles[name]
    role.process.returncode = code
    daemon._supervise()
    assert role.process is None and role.restart_at is not None
    backoff = role.backoff
    clock.now = role.restart_at
    daemon._supervise()
    assert role.process is not None and role.process.poll() is None
    return backoff


def test_restart_backoff_doubles_up_to_its_maximum_and_resets_after_a_long_run(supervised):
    daemon, clock = supervised
    # Different exit codes, so that the role is not failed for exiting the same way five times.
    backoffs = [crash(daemon, clock, "decision", code) for code in range(1, 8)]
    assert backoffs == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert daemon.status()["roles"]["decision"]["restarts"] == 7
    clock.now += 30.0  # up for restart_reset_s
    assert crash(daemon, clock, "decision", 9) == pytest.approx(0.1)
    assert crash(daemon, clock, "decision", 10) == pytest.approx(0.2)
    # The other roles were left alone.
    assert all(role.restarts == 0 for name, role in daemon.roles.items() if name != "decision")


def test_a_remote_role_is_waited_for_shown_lost_and_a_second_process_does_not_take_its_place(tmp_path):
    config = config_module.merge(
        config_module.defaults(),
        {
            "daemon": {"run_dir": str(tmp_path), "unresponsive_after_s": 2.0, "kill_unresponsive_after_s": 5.0},
            "internal": {"endpoints": "tcp://127.0.0.1:7420", "remote_roles": ["teacher"]},
        },
        "test",
    )
    clock = Clock()
    daemon = Daemon(config, launcher=FakeLauncher(), clock=clock)

    def remote(host: str, pid: int) -> None:
        stats = protocol.encode("stats", role="teacher", pid=pid, counters={"labels": 1}, gauges={}, host=host)
        daemon.take_stats(protocol.decode(stats))
        daemon._supervise()

    teacher = daemon.status()["roles"]["teacher"]
    assert (teacher["state"], teacher["pid"], teacher["remote"]) == ("waiting", None, {"host": None, "pid": None})
    remote("gpu-1", 7)
    clock.now += 1.0
    remote("gpu-2", 8)  # while gpu-1 reports: a second process, not the one shown
    teacher = daemon.status()["roles"]["teacher"]
    assert teacher["state"] == "running" and teacher["remote"] == {"host": "gpu-1", "pid": 7}
    assert teacher["restarts"] == 0 and teacher["silent_s"] == pytest.approx(1.0)
    clock.now += 2.5  # gpu-1 silent past unresponsive_after_s
    daemon._supervise()
    assert daemon.status()["roles"]["teacher"]["state"] == "lost"
    remote("gpu-2", 8)  # now it takes over, as a new incarnation; counters add up
    teacher = daemon.status()["roles"]["teacher"]
    assert teacher["state"] == "running" and teacher["remote"] == {"host": "gpu-2", "pid": 8}
    assert teacher["restarts"] == 1 and teacher["counters"]["labels"] == 2


def test_a_silent_role_is_unresponsive_then_killed_and_restarted(supervised):
    daemon, clock = supervised
    names = list(daemon.roles)
    others = [name for name in names if name != "decision"]
    assert {r["state"] for r in daemon.status()["roles"].values()} == {"starting"}
    report(daemon, *names)
    hung = daemon.roles["decision"].process
    for _ in range(21):  # 2.1 s in steps of 0.1 s: the others report, decision does not
        clock.now += 0.1
        report(daemon, *others)
        daemon._supervise()
    roles = daemon.status()["roles"]
    assert roles["decision"]["state"] == "unresponsive" and roles["decision"]["silent_s"] == pytest.approx(2.1)
    assert all(roles[name]["state"] == "running" for name in others)
    assert hung.signals == []  # not killed yet: only reported
    for _ in range(30):  # 3 s more: past kill_unresponsive_after_s
        clock.now += 0.1
        report(daemon, *others)
        daemon._supervise()
    assert hung.signals == [signal.SIGKILL]
    decision = daemon.roles["decision"]
    assert decision.process is None or decision.process is not hung  # reaped; restarted after its backoff
    clock.now += 1.0
    daemon._supervise()
    status = daemon.status()["roles"]["decision"]
    assert status["pid"] != hung.pid and status["restarts"] == 1 and status["state"] == "starting"
    assert (status["last_exit_code"], status["last_exit_reason"]) == (-9, "killed: no report for 5 s (unresponsive)")
    report(daemon, "decision")
    assert daemon.status()["roles"]["decision"]["state"] == "running"


def test_a_role_that_reports_again_in_time_is_running_and_not_killed(supervised):
    daemon, clock = supervised
    report(daemon, *daemon.roles)
    slow = daemon.roles["teacher"].process
    clock.now += 4.0  # past unresponsive_after_s, short of kill_unresponsive_after_s
    daemon._supervise()
    assert daemon.status()["roles"]["teacher"]["state"] == "unresponsive"
    report(daemon, "teacher")
    clock.now += 4.0
    report(daemon, "teacher")
    daemon._supervise()
    assert daemon.status()["roles"]["teacher"]["state"] == "running" and slow.signals == []


def test_an_unreadable_exit_report_costs_the_reason_not_the_daemon(supervised, tmp_path):
    daemon, clock = supervised
    (tmp_path / "exits" / "decision.json").mkdir(parents=True)  # reading it fails (IsADirectoryError)
    crash(daemon, clock, "decision", 3)
    assert daemon.roles["decision"].last_exit_reason == "exited with code 3 without a reason (see the log)"


# --- real processes ------------------------------------------------------------------------------
#: Deadlines short enough for a test, long enough that a role on a loaded machine keeps them.
LIVENESS = {"AGENTRT_DAEMON_UNRESPONSIVE_AFTER_S": "2", "AGENTRT_DAEMON_KILL_UNRESPONSIVE_AFTER_S": "6"}
KILLED_UNRESPONSIVE = "killed: no report for 6 s (unresponsive)"


def running_again(name: str, old_pid: int):
    """A status predicate: ``name`` runs as a new process, and every role runs."""

    def check(status: dict) -> bool:
        roles = status["roles"]
        return roles[name]["pid"] not in (None, old_pid) and all(r["state"] == "running" for r in roles.values())

    return check


def stop_decision_until_replaced(daemon) -> dict:
    """SIGSTOP decision; wait until status says it is unresponsive, then until the daemon killed and
    replaced it. Returns the status then. The stopped process is killed by pid if the test fails."""
    stopped = daemon.status()["roles"]["decision"]["pid"]
    os.kill(stopped, signal.SIGSTOP)
    try:
        daemon.wait_until(
            lambda s: (s["roles"]["decision"]["pid"], s["roles"]["decision"]["state"]) == (stopped, "unresponsive"),
            what="decision reported unresponsive",
        )
        status = daemon.wait_until(running_again("decision", stopped), what="decision killed and restarted")
        assert not wait_for_exit([stopped], timeout_s=30)
        return status
    finally:
        if process_alive(stopped):
            os.kill(stopped, signal.SIGKILL)


def test_a_stopped_decision_is_unresponsive_then_killed_and_restarted():
    daemon = start_daemon(env=LIVENESS)
    try:
        before = daemon.status()["roles"]
        decision = stop_decision_until_replaced(daemon)["roles"]["decision"]
        assert decision["restarts"] == 1
        assert (decision["last_exit_code"], decision["last_exit_reason"]) == (-9, KILLED_UNRESPONSIVE)
        env = gymnasium.make("CartPole-v1")
        with Peer(daemon.endpoint, env.observation_space, env.action_space, timeout_s=60) as peer:
            assert env.action_space.contains(int(peer.act(np.zeros(4, dtype=np.float32)).action))
        after = daemon.status()["roles"]
        assert all(after[name]["pid"] == before[name]["pid"] for name in ROLES if name != "decision")
        assert '"role_unresponsive"' in daemon.log() and '"role_unresponsive_killed"' in daemon.log()
    finally:
        daemon.stop()


def test_a_silent_peer_is_detached_after_the_peer_timeout():
    daemon = start_daemon(env={"AGENTRT_PROTOCOL_PEER_TIMEOUT_S": "2"})
    env = gymnasium.make("CartPole-v1")
    silent, lively, garbled = (
        Peer(daemon.endpoint, env.observation_space, env.action_space, name=name, timeout_s=60)
        for name in ("silent", "lively", "garbled")
    )
    try:
        for peer in (silent, lively, garbled):
            peer.connect(wait_s=30)
            peer.act(np.zeros(4, dtype=np.float32))
        deadline = time.monotonic() + 60
        status = daemon.status()
        while time.monotonic() < deadline:
            assert lively.heartbeat() or lively.heartbeat()  # a heartbeat keeps a session, as an observation does
            garbled.socket.send(b"\xc1")  # so does any message, even one refused as malformed
            status = daemon.status()
            if status["roles"]["gateway"]["counters"].get("peers_detached"):
                break
        assert status["roles"]["gateway"]["counters"]["peers_detached"] == 1 and status["peers_connected"] == 2
        assert status["roles"]["gateway"]["counters"]["errors.MALFORMED_MESSAGE"] > 0
        assert '"reason": "timeout"' in daemon.log()
        # The detached peer's next observation is refused (NOT_ATTACHED); the SDK opens a new session.
        assert silent.act(np.zeros(4, dtype=np.float32)).decided_by in ("student", "teacher")
        assert silent.reconnects == 1 and lively.reconnects == 0
    finally:
        for peer in (silent, lively, garbled):
            peer.close()
        daemon.stop()


def test_faults_under_eight_peers_cost_no_request():
    """kill -9 of each role in turn, then SIGSTOP of decision, while eight CartPole peers run: every
    request is answered (the SDK resends and reconnects), and status reports each restart."""
    daemon = start_daemon(env=LIVENESS)
    done = threading.Event()
    outcome: list[AttachSummary | BaseException] = []

    def peers() -> None:
        try:
            outcome.append(run_gym_peers(daemon.endpoint, "CartPole-v1", 10**6, peers=8, should_stop=done.is_set))
        except BaseException as exc:  # noqa: BLE001 (reported by the test below)
            outcome.append(exc)

    thread = threading.Thread(target=peers)
    thread.start()
    try:

        def serving_more_than(actions: int):
            def check(status: dict) -> bool:
                assert not outcome, outcome  # the peers stopped: the error says why
                return status["actions"] > actions + 8 * 10  # ten more steps of every peer

            return check

        daemon.wait_until(serving_more_than(0), what="the peers served")
        for name in ROLES:
            status = daemon.status()
            pid, restarts = status["roles"][name]["pid"], status["roles"][name]["restarts"]
            os.kill(pid, signal.SIGKILL)
            status = daemon.wait_until(running_again(name, pid), what=f"{name} restarted")
            role = status["roles"][name]
            assert role["restarts"] == restarts + 1
            assert (role["last_exit_code"], role["last_exit_reason"]) == (-9, "killed by SIGKILL")
            assert status["daemon"]["peer_endpoint"] == daemon.endpoint  # a new gateway binds the same port
            daemon.wait_until(serving_more_than(status["actions"]), what=f"the peers served after {name} restarted")
        status = stop_decision_until_replaced(daemon)
        assert status["roles"]["decision"]["last_exit_reason"] == KILLED_UNRESPONSIVE
        daemon.wait_until(serving_more_than(status["actions"]), what="the peers served after decision was replaced")
    finally:
        done.set()
        thread.join(timeout=120)
        daemon.stop()
    [summary] = outcome
    assert isinstance(summary, AttachSummary), summary  # no request went unanswered (no TimeoutError, no error)
    assert summary.steps > 0
