#!/usr/bin/env python3
"""Decisions per second with many peers at once: the runtime against a raw ROUTER echo, same clients.

What is measured
----------------
For each configuration (1 peer in 1 client process, 8 in 1, 32 in 4, 128 in 4), client processes
(``multiprocessing``, 'spawn') each run K peers of the SDK (``runtime.peer.Peer``, one per
CartPole-v1 environment) in lockstep, as ``agentrt attach gym`` does: submit one observation per
peer, then collect every action and step every env with it. Observations go with
``policy="student"``; the daemon also keeps the teacher out (``label_share = 0``,
``act_below_confidence = 0``, as ``latency.py``), so this is the student path at full load.

1. **runtime**: a private daemon (``ChildDaemon``, built-in configuration, own run directory, free
   port). One decision = one ``action`` answered to a peer.
2. **echo** (baseline): one single-process pyzmq ROUTER that sends every message straight back
   (``recv_multipart`` / ``send_multipart``, the runtime's poll-then-drain loop). The clients are
   the same processes and the same ``Peer`` objects: ``submit`` encodes the observation as for
   the runtime; the echoed bytes are decoded with ``runtime.wire.protocol.decode`` as the SDK
   decodes an action. So the client's cost is in both figures and the ratio is what the runtime's
   four processes and six hops cost against the cheapest server zmq allows.

All client processes start together at an agreed time; decisions answered within the timed
window (``--seconds``, after ``--warmup`` seconds of untimed load) count. Runtime and echo windows
alternate ``--rounds`` times per configuration, so slow drifts of a shared machine hit both alike.

``ratio_<peers>`` = runtime decisions/s ÷ echo decisions/s for that many peers (issue 12 asks
for ≥ 0.5 at 32 peers). The second table gives the CPU time per decision of each runtime role and
of the clients during the runtime windows (psutil, 10 ms ticks): where the time goes.

Every process started here (daemon and roles, echo server, clients) is stopped by pid in a
``finally``, also on Ctrl-C and SIGTERM. ``--quick``: 1 round of 1 s per configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

import benchlib

CONFIGS = ((1, 1), (8, 1), (32, 4), (128, 4))  # (peers, client processes)
ROLES = ("gateway", "perception", "decision", "execution")
POLL_MS = 100
DRAIN_LIMIT = 256


# --------------------------------------------------------------------------------------------------
# The echo server (a spawned process)
# --------------------------------------------------------------------------------------------------
def echo_server(index: int, commands: Any, results: Any) -> None:
    import queue

    import zmq

    from runtime.supervisor.launch import ANY_LOOPBACK_PORT

    benchlib.worker_setup()
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 10_000)  # the runtime's Transport defaults
    sock.setsockopt(zmq.RCVHWM, 10_000)
    sock.bind(ANY_LOOPBACK_PORT)
    results.put(("endpoint", sock.getsockopt_string(zmq.LAST_ENDPOINT)))
    next_check = 0.0
    try:
        while True:
            if sock.poll(POLL_MS):
                for _ in range(DRAIN_LIMIT):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    with contextlib.suppress(zmq.Again):
                        sock.send_multipart(frames, zmq.NOBLOCK)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.2
                try:
                    if commands.get_nowait() is None:
                        return
                except queue.Empty:
                    pass
    finally:
        sock.close()
        context.term()


# --------------------------------------------------------------------------------------------------
# Client processes: K peers each, in lockstep
# --------------------------------------------------------------------------------------------------
class Client:
    def __init__(self, mode: str, endpoint: str, peers: int, seed: int) -> None:
        import gymnasium

        from runtime.peer import Peer
        from runtime.wire import protocol

        self.protocol = protocol
        self.mode = mode
        self.envs = [gymnasium.make(benchlib.ENV_ID) for _ in range(peers)]
        self.peers = [
            Peer(endpoint, env.observation_space, env.action_space, name=f"tp-{seed}-{i}", resend_s=5.0)
            for i, env in enumerate(self.envs)
        ]
        for peer in self.peers:
            if mode == "runtime":
                peer.connect(wait_s=60.0)
            else:
                peer._new_socket()  # the echo has no sessions: a bare DEALER, as the SDK makes it
        self.obs = [env.reset(seed=seed * 1000 + i)[0] for i, env in enumerate(self.envs)]
        self.starts = [True] * peers
        self.decided_by: dict[str, int] = {}

    def echo_result(self, peer: Any) -> Any:
        """What ``Peer.result`` does with an action, done with the echoed observation."""
        protocol = self.protocol
        while True:
            if not peer.socket.poll(int(peer.timeout_s * 1000)):
                raise TimeoutError("the echo server did not answer")
            message = protocol.decode(peer.socket.recv(), protocol.socket_cap(peer.max_message_bytes))
            if message["seq"] == peer.seq:
                return message

    def run(self, start_at: float, end_at: float) -> dict[str, Any]:
        count = 0
        envs, peers, obs, starts = self.envs, self.peers, self.obs, self.starts
        runtime = self.mode == "runtime"
        while True:
            for i, peer in enumerate(peers):
                peer.submit(obs[i], episode_start=starts[i], policy="student")
            for i, peer in enumerate(peers):
                if runtime:
                    answer = peer.result()
                    action = int(answer.action)
                    self.decided_by[answer.decided_by] = self.decided_by.get(answer.decided_by, 0) + 1
                else:
                    self.echo_result(peer)
                    action = peer.seq % 2
                obs[i], _, terminated, truncated, _ = envs[i].step(action)
                starts[i] = terminated or truncated
                if starts[i]:
                    obs[i], _ = envs[i].reset()
            now = time.time()
            if now >= end_at:
                break
            if now >= start_at:
                count += len(peers)
        return {"count": count, "decided_by": dict(self.decided_by)}

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        for env in self.envs:
            env.close()


_clients: dict[str, Client] = {}


def handle(command: dict[str, Any]) -> Any:
    op = command["op"]
    if op == "setup":
        _clients[command["mode"]] = Client(command["mode"], command["endpoint"], command["peers"], command["seed"])
        return ("ready", command["mode"])
    if op == "run":
        return ("ran", _clients[command["mode"]].run(command["start_at"], command["end_at"]))
    if op == "teardown":
        for client in _clients.values():
            client.close()
        _clients.clear()
        return ("closed", None)
    raise ValueError(f"unknown op {op!r}")


def client_worker(index: int, commands: Any, results: Any) -> None:
    benchlib.worker_loop(index, commands, results, handle)


# --------------------------------------------------------------------------------------------------
def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    import psutil

    result = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        result[name] = total
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {"AGENTRT_QUERY_PARAMS": benchlib.STUDENT_ONLY_QUERY_PARAMS}
    echo: benchlib.Workers | None = None
    clients: benchlib.Workers | None = None
    configs = [c for c in CONFIGS if c[0] in args.peers]
    try:
        with benchlib.private_daemon(env) as daemon:
            echo = benchlib.Workers(echo_server, 1)
            clients = benchlib.Workers(client_worker, max(c for _, c in configs))
            ((_, echo_endpoint),) = echo.collect(1, 60)
            endpoints = {"runtime": daemon.endpoint, "echo": echo_endpoint}
            status = daemon.status()
            role_pids = {name: [status["roles"][name]["pid"]] for name in ROLES}
            rows = []
            before_all = daemon.status()
            for peers, processes in configs:
                per_process = [peers // processes + (1 if i < peers % processes else 0) for i in range(processes)]
                benchlib.progress(f"{peers} peers in {processes} client process(es): connecting")
                for mode in ("runtime", "echo"):
                    for i, k in enumerate(per_process):
                        clients.send(
                            i, {"op": "setup", "mode": mode, "endpoint": endpoints[mode], "peers": k, "seed": i}
                        )
                    clients.collect(processes, 120)
                rates: dict[str, list[float]] = {"runtime": [], "echo": []}
                cpu_total = dict.fromkeys([*ROLES, "clients"], 0.0)
                decided: dict[str, int] = {}
                runtime_decisions = 0
                for _ in range(args.rounds):
                    for mode in ("runtime", "echo"):
                        start_at = time.time() + 0.3 + args.warmup
                        end_at = start_at + args.seconds
                        for i in range(processes):
                            clients.send(i, {"op": "run", "mode": mode, "start_at": start_at, "end_at": end_at})
                        pids = {**role_pids, "clients": clients.pids[:processes]}
                        time.sleep(max(0.0, start_at - time.time()))
                        cpu_before = cpu_seconds(pids)
                        time.sleep(max(0.0, end_at - time.time()))
                        cpu_after = cpu_seconds(pids)
                        answers = clients.collect(processes, args.seconds + 120)
                        count = sum(a[1]["count"] for a in answers)
                        rates[mode].append(count / args.seconds)
                        if mode == "runtime":
                            runtime_decisions += count
                            for name in cpu_total:
                                cpu_total[name] += cpu_after[name] - cpu_before[name]
                            for a in answers:
                                for who, n in a[1]["decided_by"].items():
                                    decided[who] = decided.get(who, 0) + n
                for i in range(processes):
                    clients.send(i, {"op": "teardown"})
                clients.collect(processes, 60)
                runtime_rate = sum(rates["runtime"]) / len(rates["runtime"])
                echo_rate = sum(rates["echo"]) / len(rates["echo"])
                rows.append(
                    {
                        "peers": peers,
                        "processes": processes,
                        "runtime_per_s": round(runtime_rate, 1),
                        "echo_per_s": round(echo_rate, 1),
                        "ratio": round(runtime_rate / echo_rate, 4) if echo_rate else None,
                        "runtime_rounds": [round(r, 1) for r in rates["runtime"]],
                        "echo_rounds": [round(r, 1) for r in rates["echo"]],
                        "cpu_us_per_decision": {
                            name: round(seconds * 1e6 / runtime_decisions, 1) if runtime_decisions else None
                            for name, seconds in cpu_total.items()
                        },
                        "decided_by": decided,
                    }
                )
                benchlib.progress(
                    f"{peers} peers: runtime {runtime_rate:,.0f}/s, echo {echo_rate:,.0f}/s "
                    f"({runtime_rate / echo_rate if echo_rate else float('nan'):.3f}×)"
                )
            after_all = daemon.status()
    finally:
        for workers in (clients, echo):
            if workers is not None:
                workers.stop()
    teacher = after_all["decisions"]["by_teacher"] - before_all["decisions"]["by_teacher"]
    if teacher or any(set(row["decided_by"]) - {"student"} for row in rows):
        raise RuntimeError(f"the teacher decided {teacher} times: this was meant to time the student path")
    summary: dict[str, Any] = {
        "seconds": args.seconds,
        "rounds": args.rounds,
        "configs": rows,
        "dropped": benchlib.dropped(after_all) - benchlib.dropped(before_all),
        "errors": after_all["errors"]["total"] - before_all["errors"]["total"],
    }
    for row in rows:
        summary[f"runtime_per_s_{row['peers']}"] = row["runtime_per_s"]
        summary[f"echo_per_s_{row['peers']}"] = row["echo_per_s"]
        summary[f"ratio_{row['peers']}"] = row["ratio"]
    print_tables(rows, args)
    if args.plot:
        write_plot(args.plot, rows)
    return summary


def print_tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.table import Table

    console = benchlib.console()
    table = Table(title=f"decisions/s, runtime vs single-process ROUTER echo ({args.rounds}×{args.seconds:g} s each)")
    for column in ("peers", "client processes", "runtime /s", "echo /s", "runtime ÷ echo", "rounds (runtime | echo)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["peers"]),
            str(row["processes"]),
            f"{row['runtime_per_s']:,.0f}",
            f"{row['echo_per_s']:,.0f}",
            f"{row['ratio']:.3f}×" if row["ratio"] is not None else "-",
            f"{', '.join(f'{r:,.0f}' for r in row['runtime_rounds'])} | "
            f"{', '.join(f'{r:,.0f}' for r in row['echo_rounds'])}",
        )
    console.print(table)
    where = Table(title="CPU µs per runtime decision, by process (during the runtime windows)")
    where.add_column("peers", justify="right")
    for name in (*ROLES, "clients"):
        where.add_column(name, justify="right")
    for row in rows:
        cpu = row["cpu_us_per_decision"]
        where.add_row(str(row["peers"]), *(f"{cpu[n]:.0f}" if cpu[n] is not None else "-" for n in (*ROLES, "clients")))
    console.print(where)


def write_plot(path: str, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [r["peers"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(peers, [r["runtime_per_s"] for r in rows], "o-", color="tab:red", label="agentrt runtime")
    ax.plot(peers, [r["echo_per_s"] for r in rows], "s-", color="tab:blue", label="ROUTER echo")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("peers")
    ax.set_ylabel("decisions/s")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Decisions/s: runtime vs a raw ROUTER echo (see the docstring).")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed window per round and mode (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed load before each window (default 0.5)")
    parser.add_argument("--rounds", type=int, default=2, help="runtime/echo alternations per configuration")
    parser.add_argument(
        "--peers", type=int, nargs="+", default=[c[0] for c in CONFIGS], help="configurations to run: 1 8 32 128"
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s per configuration")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.warmup = 1.0, 1, 0.3
    if unknown := set(args.peers) - {c[0] for c in CONFIGS}:
        parser.error(f"--peers: no configuration for {sorted(unknown)}")
    return args


if __name__ == "__main__":
    sys.exit(benchlib.main("throughput", measure, parse_args()))
