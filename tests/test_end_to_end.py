"""The whole path with real processes: daemon, roles, Gymnasium peers, supervision, shutdown."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from runtime import rundir
from runtime.errors import ExitCode
from runtime.peer import Peer
from runtime.peer.gym import run_gym_peers
from runtime.processes import process_alive as alive
from runtime.processes import wait_for_exit
from runtime.supervisor.daemon import SAME_EXITS_TO_FAIL
from runtime.supervisor.launch import ChildDaemon, private_run_dir
from runtime.testing import agentrt, make_distribution, start_daemon
from runtime.wire.transport import socket_dir


def test_two_peers_counts_match_status(daemon):
    result = daemon.cli(
        "attach",
        "gym",
        "CartPole-v1",
        "--episodes",
        "6",
        "--peers",
        "2",
        "--endpoint",
        daemon.endpoint,
        "--json",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 6
    assert summary["decided_by_student"] + summary["decided_by_teacher"] == summary["steps"]
    # The runtime counts every copy of an observation a peer sent again unanswered (on a busy machine).
    sent, resends = summary["steps"] + summary["resends"], summary["resends"]
    status = daemon.wait_until(
        lambda s: (
            s["actions"] == s["observations"] == s["decisions"]["total"] == sent
            and s["teacher_queries"] >= s["decisions"]["by_teacher"]
        ),
        what="counters to catch up, the teacher asked at least for every decision it made",
    )
    assert status["errors"]["total"] == 0
    teacher_decided = summary["decided_by_teacher"]
    assert teacher_decided <= status["decisions"]["by_teacher"] <= teacher_decided + resends
    # The peers said bye; the gateway forgot them.
    assert daemon.wait_until(lambda s: s["peers_connected"] == 0, what="peers detached")
    status_text = daemon.cli("status")
    assert status_text.returncode == 0 and "decision" in status_text.stdout


def test_student_learns_and_weights_are_hot_swapped(daemon):
    # Play until an episode was served by a newer student than the first (a slow machine trains
    # slower than it plays), for a few hundred episodes at most.
    versions: list[int] = []
    run_gym_peers(
        daemon.endpoint,
        "CartPole-v1",
        episodes=300,
        peers=2,
        on_episode=lambda episode: versions.append(episode.student_version),
        should_stop=lambda: len(versions) >= 6 and versions[-1] > versions[0],
    )
    assert versions[-1] > versions[0] >= 0, versions
    status = daemon.wait_until(lambda s: s["student_version"] >= 2, what="a published student")
    assert status["distillation"]["train_steps"] > 0
    checkpoints = sorted(p.name for p in (daemon.run_dir / "checkpoints").iterdir())
    assert f"student-v{status['student_version']}.safetensors" in checkpoints
    # While the distiller runs, a candidate being written is a temp file (write, fsync, rename);
    # once the daemon has stopped, none may be left behind.
    daemon.stop(remove_run_dir=False)
    assert not [p.name for p in (daemon.run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_decision_killed_is_restarted_and_peers_keep_getting_actions(daemon):
    env = gymnasium.make("CartPole-v1")
    peers = [Peer(daemon.endpoint, env.observation_space, env.action_space, resend_s=0.2) for _ in range(2)]
    for peer in peers:
        peer.connect(wait_s=10)
    obs, _ = env.reset(seed=0)
    for peer in peers:
        peer.act(obs)
    before = daemon.status()["roles"]
    os.kill(before["decision"]["pid"], signal.SIGKILL)
    answered = []

    def keep_acting(peer):
        answered.append(peer.act(obs).decided_by)

    threads = [threading.Thread(target=keep_acting, args=(peer,)) for peer in peers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)  # how fast is the latency benchmark's business; here: that both are answered
    assert len(answered) == 2 and set(answered) <= {"student", "teacher"}, answered
    after = daemon.wait_ready()["roles"]
    assert after["decision"]["restarts"] == 1 and after["decision"]["pid"] != before["decision"]["pid"]
    assert (after["decision"]["last_exit_code"], after["decision"]["last_exit_reason"]) == (-9, "killed by SIGKILL")
    for name in ("gateway", "perception", "execution", "teacher", "distillation"):
        assert after[name]["pid"] == before[name]["pid"] and after[name]["restarts"] == 0, name
    assert "role_exited" in daemon.log()
    for peer in peers:
        peer.close()


def test_down_leaves_no_process_and_no_ipc_file(daemon):
    pids = [role["pid"] for role in daemon.status()["roles"].values()] + [daemon.process.pid]
    result = daemon.cli("down")
    assert result.returncode == 0, result.stderr
    # `down` returns only when they are all gone: no waiting here.
    assert not [pid for pid in pids if alive(pid)]
    assert daemon.process.wait(timeout=60) == 0
    assert list(socket_dir(daemon.run_dir).iterdir()) == []
    assert not (daemon.run_dir / "daemon.pid").exists()


def test_down_removes_an_ipc_peer_endpoints_file():
    """libzmq leaves the file of an ipc endpoint behind when the socket closes."""
    run_dir = private_run_dir()
    peers = run_dir / "peers.sock"
    daemon = start_daemon(endpoint=f"ipc://{peers}", run_dir=run_dir)
    try:
        env = gymnasium.make("CartPole-v1")
        with Peer(daemon.endpoint, env.observation_space, env.action_space, timeout_s=60) as peer:
            assert peer.act(np.zeros(4, dtype=np.float32)).seq == 1
        assert peers.is_socket()
        result = daemon.cli("down")
        assert result.returncode == 0, result.stderr
        assert not peers.exists()
    finally:
        daemon.stop()


def test_sessions_open_at_shutdown_end_with_reason_shutdown():
    daemon = start_daemon()
    try:
        env = gymnasium.make("CartPole-v1")
        with Peer(daemon.endpoint, env.observation_space, env.action_space, timeout_s=60) as peer:
            peer.act(np.zeros(4, dtype=np.float32))
            daemon.stop(remove_run_dir=False)  # the peer never said bye
            assert [event["reason"] for event in daemon.events("peer_detached")] == ["shutdown"]
    finally:
        daemon.stop()


def test_sigterm_stops_everything(daemon):
    pids = [role["pid"] for role in daemon.status()["roles"].values()]
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=60) == 0
    assert not wait_for_exit(pids, timeout_s=60)
    assert list(socket_dir(daemon.run_dir).iterdir()) == []


def process_group(pgid: int) -> list[int]:
    """The pids of the processes in group ``pgid``, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("when", ["starting", "running"])
def test_ctrl_c_stops_every_process_cleanly_with_exit_130(when):
    """A terminal's Ctrl-C sends SIGINT to the whole foreground process group: the daemon, its fork
    servers and its roles at once, the fork servers perhaps still importing torch."""
    daemon = ChildDaemon(new_session=True)
    try:
        if when == "starting":  # the fork servers were started just before this line is logged
            deadline = time.monotonic() + 60
            while '"daemon_started"' not in daemon.log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            daemon.wait_ready()
        os.killpg(daemon.process.pid, signal.SIGINT)
        assert daemon.process.wait(timeout=60) == ExitCode.INTERRUPTED
        log = daemon.log_path.read_text()
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
        assert json.loads((daemon.run_dir / rundir.DAEMON_EXIT).read_text())["code"] == ExitCode.INTERRUPTED
        deadline = time.monotonic() + 60
        while process_group(daemon.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_group(daemon.process.pid) == []
        assert list(socket_dir(daemon.run_dir).iterdir()) == []
    finally:
        daemon.stop()


def test_roles_exit_when_the_daemon_is_killed(daemon):
    pids = [role["pid"] for role in daemon.status()["roles"].values()]
    daemon.process.kill()
    daemon.process.wait()
    assert not wait_for_exit(pids, timeout_s=60)
    status = daemon.cli("status")
    assert status.returncode == ExitCode.FAILURE
    assert f"its last daemon (pid {daemon.process.pid}) ended without stopping" in status.stderr, status.stderr
    as_json = daemon.cli("status", "--json")
    assert as_json.returncode == ExitCode.FAILURE
    assert json.loads(as_json.stdout) == {
        "running": False,
        "run_dir": str(daemon.run_dir),
        "last_exit": None,
        "killed_pid": daemon.process.pid,
    }


def test_peer_started_before_the_daemon_waits_for_it(run_dir):
    env = gymnasium.make("CartPole-v1")
    endpoint = f"ipc://{run_dir}/peers"  # known before the daemon starts, and no port to race for
    peer = Peer(endpoint, env.observation_space, env.action_space)
    welcomed = []
    waiter = threading.Thread(target=lambda: welcomed.append(peer.connect(wait_s=120)))
    waiter.start()
    running = start_daemon(endpoint=endpoint)
    try:
        waiter.join(timeout=120)
        assert welcomed and welcomed[0]["peer_id"]
        action = peer.act(np.zeros(4, dtype=np.float32))
        assert action.action.shape == () and action.decided_by in ("student", "teacher")
    finally:
        peer.close()
        running.stop()


def test_perception_and_execution_do_not_load_torch(shared_daemon):
    import psutil

    status = shared_daemon.wait_until(lambda s: "torch_loaded" in s["roles"]["perception"]["gauges"])
    roles, servers = status["roles"], status["daemon"]["fork_servers"]
    assert roles["perception"]["gauges"]["torch_loaded"] is False
    assert roles["execution"]["gauges"]["torch_loaded"] is False
    assert roles["gateway"]["gauges"]["torch_loaded"] is False
    assert roles["decision"]["gauges"]["torch_loaded"] is True
    # Each forked from its own fork server: the light roles share pages with a torch-free one.
    parents = {name: psutil.Process(role["pid"]).ppid() for name, role in roles.items()}
    assert parents == {
        name: servers["models" if name in ("decision", "distillation", "teacher") else "light"] for name in roles
    }
    assert "torch" not in " ".join(psutil.Process(servers["light"]).cmdline())


CRASHING_ROLE = """
    import os
    from runtime import hookimpl

    @hookimpl
    def agentrt_role_started(role, config):
        if role == os.environ["CRASH_ROLE"]:
            os._exit(3)  # right after start-up, every time: a crash loop
"""


def test_a_role_that_keeps_failing_the_same_way_is_failed_not_restarted_forever(tmp_path):
    site = make_distribution(tmp_path, "crasher", {"crasher": CRASHING_ROLE}, {"crasher": "crasher"})
    env = {"PYTHONPATH": str(site), "CRASH_ROLE": "teacher", "AGENTRT_DAEMON_RESTART_BACKOFF_S": "0.05"}
    running = start_daemon(env=env, wait=False)
    try:
        status = running.wait_until(
            lambda s: s["roles"]["teacher"]["state"] == "failed", timeout=120, what="the teacher marked failed"
        )
        teacher = status["roles"]["teacher"]
        assert teacher["restarts"] == SAME_EXITS_TO_FAIL - 1 and teacher["last_exit_code"] == 3
        assert teacher["last_exit_reason"] == "exited with code 3 without a reason (see the log)"
        # Not essential: the daemon keeps serving, with the student alone.
        running.wait_until(
            lambda s: all(r["state"] == "running" for n, r in s["roles"].items() if n != "teacher"),
            what="the other roles running",
        )
        env_ = gymnasium.make("CartPole-v1")
        with Peer(running.endpoint, env_.observation_space, env_.action_space, timeout_s=30) as peer:
            assert peer.act(np.zeros(4, dtype=np.float32), policy="student").decided_by == "student"
        assert running.status()["roles"]["teacher"]["restarts"] == SAME_EXITS_TO_FAIL - 1  # no further restarts
        assert '"role_failed"' in running.log()
    finally:
        running.stop()


def test_an_essential_role_that_keeps_failing_stops_the_daemon_with_its_reason(tmp_path, run_dir):
    site = make_distribution(tmp_path, "crasher", {"crasher": CRASHING_ROLE}, {"crasher": "crasher"})
    env = {"PYTHONPATH": str(site), "CRASH_ROLE": "execution", "AGENTRT_DAEMON_RESTART_BACKOFF_S": "0.05"}
    result = agentrt(
        "up", "--detach", "--run-dir", str(run_dir), "--peer-endpoint", "tcp://127.0.0.1:*", env=env, timeout=120
    )
    assert result.returncode == 78, result.stderr
    assert f"execution exited {SAME_EXITS_TO_FAIL} times in a row with code 3" in result.stderr
    assert not (run_dir / "daemon.pid").exists()


def test_a_daemon_killed_outright_is_not_running_for_the_cli_and_up_starts_afresh(run_dir):
    killed = start_daemon(run_dir=run_dir)
    roles = [role["pid"] for role in killed.status()["roles"].values()]
    killed.process.kill()
    killed.process.wait()
    assert not wait_for_exit(roles, timeout_s=60)
    assert (run_dir / "daemon.pid").exists() and list(socket_dir(run_dir).iterdir())  # what it left behind
    for command in ("status", "down"):
        result = agentrt(command, "--run-dir", str(run_dir))
        assert result.returncode == 1 and "no daemon is running" in result.stderr, result.stderr
    # The pid in the file may name another process by now (pids are reused): the daemon's lock says it is stale.
    (run_dir / "daemon.pid").write_text(f"{os.getpid()}\n")
    again = start_daemon(run_dir=run_dir)  # cleans the leftovers and serves
    try:
        assert again.status()["daemon"]["pid"] == again.process.pid
        assert int((run_dir / "daemon.pid").read_text()) == again.process.pid
        assert f'"previous_pid": "{os.getpid()}"' in again.log() and '"stale_run_dir_cleaned"' in again.log()
    finally:
        again.stop(remove_run_dir=False)


def test_a_stopped_teacher_is_noticed_once_and_the_student_answers_until_it_returns():
    """The teacher acts for every observation; stopped, it costs one timeout, not one per batch."""
    daemon = start_daemon(
        '[query]\npolicy = "always"\n[query.params]\nteacher_acts = true\n[teacher]\ntimeout_ms = 300\n'
    )
    teacher_pid = None
    try:
        env = gymnasium.make("CartPole-v1")
        with Peer(daemon.endpoint, env.observation_space, env.action_space, timeout_s=30) as peer:
            obs, _ = env.reset(seed=0)
            assert peer.act(obs).decided_by == "teacher"
            teacher_pid = daemon.status()["roles"]["teacher"]["pid"]
            os.kill(teacher_pid, signal.SIGSTOP)
            stopped_actions = [peer.act(obs) for _ in range(40)]
            assert {action.decided_by for action in stopped_actions} == {"student"}
            decision = daemon.wait_until(
                lambda s: s["roles"]["decision"]["counters"].get("teacher_unavailable", 0) >= 30,
                what="the student answering for the stopped teacher",
            )["roles"]["decision"]
            assert decision["gauges"]["teacher_available"] is False
            # Noticed once (a request or two may have been parked when it stopped), not per observation.
            assert 1 <= decision["counters"]["teacher_timeouts"] <= 3
            os.kill(teacher_pid, signal.SIGCONT)
            teacher_pid = None
            # A probe (at most one a second) finds it back; then it acts again.
            back = None
            for _ in range(2000):
                back = peer.act(obs)
                if back.decided_by == "teacher":
                    break
            assert back is not None and back.decided_by == "teacher"
        daemon.wait_until(
            lambda s: s["roles"]["decision"]["gauges"]["teacher_available"] is True, what="the teacher available"
        )
    finally:
        if teacher_pid is not None:
            os.kill(teacher_pid, signal.SIGCONT)
        daemon.stop()


def test_status_ready_fails_while_a_role_does_not_serve(daemon):
    assert daemon.cli("status", "--ready").returncode == 0
    pid = daemon.status()["roles"]["execution"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        daemon.wait_until(lambda s: s["roles"]["execution"]["state"] != "running", what="execution not running")
        not_ready = daemon.cli("status", "--ready")
        assert not_ready.returncode == 1 and "not ready: execution" in not_ready.stderr
    finally:
        os.kill(pid, signal.SIGCONT)
    daemon.wait_until(lambda s: s["roles"]["execution"]["state"] == "running", what="execution running again")
    assert daemon.cli("status", "--ready").returncode == 0
