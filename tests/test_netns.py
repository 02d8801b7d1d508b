"""Three hosts in three network namespaces: the runtime, a remote teacher and CartPole peers,
joined by veth pairs with private addresses. Both links are cut (``ip link set ... down``) until
the daemon reports the teacher lost, then restored: peers and the teacher reconnect by themselves,
and every observation a peer sent is answered (late, after retries) or fails with an error.

Needs root (or a user namespace that allows it), ``unshare``, ``nsenter`` and ``ip``; skipped with
the reason otherwise. The recovery times it prints are in docs/architecture.md (Remote roles).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runtime.processes import wait_for_exit
from runtime.testing import start_daemon, start_remote_role, stop_child
from runtime.wire.keys import KeyStore, generate_client

RUNTIME_TO_TEACHER = ("rt-t", "10.213.1.1", "t0", "10.213.1.2")
RUNTIME_TO_PEERS = ("rt-p", "10.213.2.1", "p0", "10.213.2.2")
INTERNAL_PORT = 7420
PEER_PORT = 7411
# Every process here is bounded: the namespaces' holders, and the peers' own deadline.
HOLD_S = 900
PEERS_MAX_S = 300


def namespaces_unavailable() -> str | None:
    """Why this machine cannot run the test, or None."""
    missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    try:
        probe = subprocess.run(
            ["unshare", "-n", "ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    if probe.returncode != 0:
        return f"cannot create a network namespace with a veth pair here: {probe.stderr.strip()}"
    return None


UNAVAILABLE = namespaces_unavailable() if sys.platform == "linux" else "Linux only"
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"network namespaces: {UNAVAILABLE}")

PEERS_SCRIPT = textwrap.dedent(
    """
    # Peers that count: every act() is sent, then answered or failed; one JSON line per outcome.
    import json, os, sys, threading, time
    import gymnasium
    from runtime.peer import ClientKeys, Peer

    endpoint, server_key, client_key, out, stop_file, peers, max_s = sys.argv[1:8]
    keys = ClientKeys.from_files(server_key, client_key)
    lock = threading.Lock()
    lines = open(out, "a", buffering=1)
    deadline = time.monotonic() + float(max_s)

    def write(**fields):
        with lock:
            lines.write(json.dumps(fields) + "\\n")

    def run(index):
        env = gymnasium.make("CartPole-v1")
        peer = Peer(endpoint, env.observation_space, env.action_space, name=f"ns-peer-{index}", curve=keys)
        sent = answered = errored = 0
        try:
            peer.connect(wait_s=60)
            obs, _ = env.reset(seed=index)
            while time.monotonic() < deadline and not os.path.exists(stop_file):
                sent += 1
                try:
                    answer = peer.act(obs)
                except Exception as exc:  # a PeerError or TimeoutError: the request failed, visibly
                    errored += 1
                    write(peer=index, t=time.time(), error=f"{type(exc).__name__}: {exc}")
                    continue
                answered += 1
                write(peer=index, t=time.time(), by=answer.decided_by)
                obs, _, terminated, truncated, _ = env.step(int(answer.action))
                if terminated or truncated:
                    obs, _ = env.reset()
        finally:
            write(peer=index, summary=True, sent=sent, answered=answered, errored=errored,
                  resends=peer.resends, reconnects=peer.reconnects)
            peer.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(int(peers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    """
)


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def inside(holder: subprocess.Popen) -> list[str]:
    """The prefix that runs a command in ``holder``'s network namespace."""
    return ["nsenter", "-t", str(holder.pid), "-n", "--"]


class Hosts:
    """Three network namespaces, each held by a sleeping ``unshare`` process, and the veth pairs
    from the runtime's namespace to the other two."""

    def __init__(self) -> None:
        self.holders: dict[str, subprocess.Popen] = {}
        for name in ("runtime", "teacher", "peers"):
            self.holders[name] = subprocess.Popen(["unshare", "-n", "sleep", str(HOLD_S)])
        deadline = time.monotonic() + 30
        # The holder runs in its own namespace once its net namespace differs from ours.
        while any(self.namespace(h) == os.readlink("/proc/self/ns/net") for h in self.holders.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("unshare did not enter its namespace")
            time.sleep(0.05)
        for holder in self.holders.values():
            sh(*inside(holder), "ip", "link", "set", "lo", "up")
        for other, (near, near_ip, far, far_ip) in (("teacher", RUNTIME_TO_TEACHER), ("peers", RUNTIME_TO_PEERS)):
            far_pid = str(self.holders[other].pid)
            sh(
                *self.run_in("runtime"),
                "ip",
                "link",
                "add",
                near,
                "type",
                "veth",
                "peer",
                "name",
                far,
                "netns",
                far_pid,
            )
            sh(*self.run_in("runtime"), "ip", "addr", "add", f"{near_ip}/24", "dev", near)
            sh(*self.run_in("runtime"), "ip", "link", "set", near, "up")
            sh(*self.run_in(other), "ip", "addr", "add", f"{far_ip}/24", "dev", far)
            sh(*self.run_in(other), "ip", "link", "set", far, "up")

    @staticmethod
    def namespace(holder: subprocess.Popen) -> str:
        try:
            return os.readlink(f"/proc/{holder.pid}/ns/net")
        except OSError:
            return ""

    def run_in(self, name: str) -> list[str]:
        return inside(self.holders[name])

    def link(self, device: str, state: str) -> None:
        sh(*self.run_in("runtime"), "ip", "link", "set", device, state)

    def close(self) -> None:
        # The veth pairs go with their namespaces.
        for holder in self.holders.values():
            if holder.poll() is None:
                holder.kill()
            holder.wait()


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def test_peers_and_a_remote_teacher_in_other_namespaces_recover_from_a_cut_link(tmp_path):
    store = KeyStore(tmp_path / "keys")
    server_key = store.generate_server()
    teacher_keys = generate_client(tmp_path / "teacher-host", "gpu-teacher")
    store.authorize(teacher_keys[0], "gpu-teacher", role=True)
    peer_keys = generate_client(tmp_path / "peer-host", "robots")
    store.authorize(peer_keys[0], "robots")

    hosts = Hosts()
    wrapper = tmp_path / "python-in-runtime-ns"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(hosts.run_in("runtime"))} {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    processes: list[subprocess.Popen] = []
    daemon = None
    try:
        # Internal endpoints on every interface of the runtime's host (its own roles dial them over
        # loopback), CURVE between roles; peers reach the gateway on the peers' link, with CURVE.
        daemon = start_daemon(
            f'[internal]\nendpoints = "tcp://0.0.0.0:{INTERNAL_PORT}"\nremote_roles = ["teacher"]\n'
            f'[security]\ncurve = true\nkeys_dir = "{store.directory}"\n'
            "[query.params]\nact_below_confidence = 1.0\n",
            endpoint=f"tcp://{RUNTIME_TO_PEERS[1]}:{PEER_PORT}",
            python=str(wrapper),
        )
        teacher = start_remote_role(
            "teacher",
            f"tcp://{RUNTIME_TO_TEACHER[1]}:{INTERNAL_PORT}",
            tmp_path / "teacher.log",
            (server_key, teacher_keys[1]),
            prefix=hosts.run_in("teacher"),
        )
        processes.append(teacher)
        daemon.wait_until(lambda s: s["roles"]["teacher"]["state"] == "running", timeout=90, what="the teacher joined")

        script = tmp_path / "peers.py"
        script.write_text(PEERS_SCRIPT)
        outcomes, stop_file = tmp_path / "peers.jsonl", tmp_path / "stop"
        peers = subprocess.Popen(
            [
                *hosts.run_in("peers"),
                sys.executable,
                str(script),
                f"tcp://{RUNTIME_TO_PEERS[1]}:{PEER_PORT}",
                str(server_key),
                str(peer_keys[1]),
                str(outcomes),
                str(stop_file),
                "2",
                str(PEERS_MAX_S),
            ],
            cwd=Path(__file__).parent.parent,
        )
        processes.append(peers)
        # Before the cut: both peers answered, the teacher among those deciding.
        wait_for(
            lambda: {o["peer"] for o in read_lines(outcomes) if o.get("by") == "teacher"} == {0, 1},
            120,
            "teacher-decided answers for both peers",
        )

        cut_at = time.time()
        hosts.link(RUNTIME_TO_TEACHER[0], "down")
        hosts.link(RUNTIME_TO_PEERS[0], "down")
        lost = daemon.wait_until(lambda s: s["roles"]["teacher"]["state"] == "lost", timeout=60, what="teacher lost")
        assert lost["roles"]["teacher"]["remote"]["pid"] == teacher.pid
        restored_at = time.time()
        hosts.link(RUNTIME_TO_TEACHER[0], "up")
        hosts.link(RUNTIME_TO_PEERS[0], "up")

        # Recovery: the same teacher process reports again, and both peers are answered again,
        # by the teacher too once decision's probe finds it.
        back = daemon.wait_until(
            lambda s: s["roles"]["teacher"]["state"] == "running", timeout=60, what="the teacher back"
        )
        teacher_back_s = time.time() - restored_at
        assert back["roles"]["teacher"]["remote"]["pid"] == teacher.pid and back["roles"]["teacher"]["restarts"] == 0

        def after(predicate):
            return [o for o in read_lines(outcomes) if o.get("t", 0) > restored_at and predicate(o)]

        wait_for(lambda: {o["peer"] for o in after(lambda o: o.get("by") == "teacher")} == {0, 1}, 60, "teacher again")
        stop_file.touch()
        peers.wait(timeout=120)
        assert peers.returncode == 0

        lines = read_lines(outcomes)
        summaries = [line for line in lines if line.get("summary")]
        assert len(summaries) == 2
        for summary in summaries:
            # Nothing silently dropped: every observation sent was answered or failed with an error.
            assert summary["sent"] == summary["answered"] + summary["errored"], summary
            assert summary["answered"] > 0
        retried = sum(s["resends"] for s in summaries)
        assert retried > 0  # the requests in flight during the cut were sent again, not lost
        first_answer = {p: min(o["t"] for o in after(lambda o, p=p: o["peer"] == p and "by" in o)) for p in (0, 1)}
        first_teacher = min(o["t"] for o in after(lambda o: o.get("by") == "teacher"))
        figures = {
            "cut_s": round(restored_at - cut_at, 2),
            "peers_answered_again_s": {p: round(t - restored_at, 2) for p, t in first_answer.items()},
            "teacher_reporting_again_s": round(teacher_back_s, 2),
            "teacher_deciding_again_s": round(first_teacher - restored_at, 2),
            "sent": sum(s["sent"] for s in summaries),
            "answered": sum(s["answered"] for s in summaries),
            "errored": sum(s["errored"] for s in summaries),
            "resends": retried,
            "reconnects": sum(s["reconnects"] for s in summaries),
        }
        print("netns recovery:", json.dumps(figures))
        status = daemon.status()
        assert status["roles"]["teacher"]["state"] == "running"
    finally:
        for process in reversed(processes):
            stop_child(process)
        if daemon is not None:
            daemon.stop()
        hosts.close()
        wait_for_exit([h.pid for h in hosts.holders.values()], 10)
