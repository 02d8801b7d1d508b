#!/usr/bin/env python3
"""Round-trip latency of the agentrt student path, against two baselines measured in the same run.

What is measured
----------------
1. **runtime**: a real daemon (``python -m runtime up``, default configuration, own temporary run
   directory, free TCP port) with one peer (``runtime.peer.Peer``) fed by a CartPole-v1 env. The
   daemon runs with ``AGENTRT_QUERY_PARAMS='{label_share = 0.0, act_below_confidence = 0.0}'`` and
   every observation is sent with ``policy="student"`` (the default ``cascade`` policy would let the
   teacher act while the student is untrained, ``student_version == 0``), so the teacher never acts
   and no labels are requested: we time the student path only. Every measured reply is checked to
   have ``decided_by == "student"``, and the daemon's counters are checked for zero teacher
   decisions and zero label requests. One sample = ``Peer.act(obs)``: encode, send, wait, decode.

2. **raw zmq ring** (baseline): the same topology with the runtime's work removed. The path of one
   observation through the runtime, counted from ``runtime/roles/*.py``, is six socket hops through
   four role processes (the gateway is traversed twice)::

       hop 1  peer DEALER        --tcp-->               gateway ROUTER     ("observation")
       hop 2  gateway PUSH       --ipc sock/perception-> perception PULL   (observed frames)
       hop 3  perception PUSH    --ipc sock/decision-->  decision PULL     (observed frames, forwarded)
       hop 4  decision PUSH      --ipc sock/execution--> execution PULL    (decided frames)
       hop 5  execution PUSH     --ipc sock/gateway-->   gateway PULL      (returned frames)
       hop 6  gateway ROUTER     --tcp-->               peer DEALER        ("action")

   The ring reproduces exactly this: four separate forwarder processes (``multiprocessing`` with
   the 'spawn' start method) standing in for gateway, perception, decision and execution, the same
   socket types, bind/connect sides and transports, and the same poll-then-drain loop as
   ``runtime.roles.base.Role``. Each forwards the bytes untouched (no msgpack decode or encode; the
   ROUTER identity travels as a leading frame instead of inside the message). The payload is a real
   encoded ``observation`` message, so it has the same size as the runtime's peer message; the
   ring sends those same bytes back. One sample = ``send`` + ``recv`` on the peer's DEALER.

3. **bare forward** (baseline): the default student built in-process the way decision builds it
   (``runtime.learn.nets.MLP((4,), 2, [32])``, ``torch.set_num_threads(1)``); one sample = one
   single-observation forward pass under ``torch.no_grad()`` (including ``torch.from_numpy``), on
   the observations the runtime saw.

All three run ``--warmup`` untimed round trips first, then ``--n`` timed ones each, measured with
``time.perf_counter_ns``. To spread slow drifts of a shared, noisy machine evenly over the three,
the timed samples are taken in ``--blocks`` interleaved blocks (runtime, ring, forward, runtime,
...); the garbage collector is off while timing. The daemon and the ring are both up during the
measurement, each idle while the other is timed.

How to read the ratios
----------------------
These machines are noisy and small (2 cores here): absolute microseconds move from run to run and
machine to machine, so compare ratios against the same-run baselines, not absolute numbers.

* ``runtime / raw ring`` (``ratio_p50``): what the runtime's per-hop work costs on top of moving the
  same bytes through the same processes and sockets: the gateway's decode and observation checks,
  the internal framing (a header and an array frame per hop, docs/architecture.md), the perception
  and execution chains, the peer's ``action`` encoded in execution, the query policy, peer SDK
  encode/decode, numpy/torch glue. 1.0 would mean the runtime adds nothing over its transport.
* ``runtime / bare forward``: how much of a round trip is the student itself. A large ratio means
  the latency is transport and bookkeeping, not the model; a better model kernel would not help.

Where the time goes: a second table gives the CPU time (user + system, from psutil, 10 ms clock
ticks, so roughly ±5 µs at n=3000) that each of the four processes of either path used during the
timed phase, divided by n. A round trip is strictly sequential, so on a machine this small the sum
of that row tracks the latency closely: the difference between the two rows is the runtime's own
per-role work, by role. (The runtime's row also holds its roles' idle polling while the baselines
are timed, which is small; teacher, distillation and the daemon's own CPU go to the JSON only, as
``cpu_us_per_trip_off_path``; ``decision_forward_us_last`` is decision's own ``student_latency_us``
gauge, the forward time of its last batch only.)

Session start: after the round trips, one more client sends ``--hellos`` hellos (about 100 bytes
each, declaring a 1,048,576-element box, so each is refused with SPACE_MISMATCH), pipelined in
blocks of 100, and then, as the same-run baseline, as many ``heartbeat`` messages from an attached
session (the cheapest message the gateway answers itself). The gateway's CPU time for each, divided
by the count, is ``gateway_cpu_us_per_hello`` and ``gateway_cpu_us_per_heartbeat``; issue 12 asks
for at most 500 µs per hello (it was 18.5 ms while the gateway built the declared space's bounds).

Output: the tables on stdout, then, as the LAST line of stdout, one JSON object (p50_us, p99_us,
mean_us, baseline_p50_us, baseline_p99_us, ratio_p50, bare_forward_p50_us, n, ...). Progress bars go
to stderr. ``--plot PATH`` writes a PNG (histograms and CDFs of the three distributions).

Every process started here (the daemon and, through it, its roles; the four ring processes) is
stopped by pid in a ``finally``, also on errors, Ctrl-C and SIGTERM; the temporary run directories
are removed, so nothing is left behind except the optional plot. If this script is killed outright
(SIGKILL), PR_SET_PDEATHSIG still stops the daemon (which stops its roles) and the ring processes;
only the ``/tmp/art-*`` directories then remain.

Usage: ``.venv/bin/python benchmarks/latency.py [--n 3000] [--warmup 300] [--plot lat.png] [--quick]``
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from runtime import extras
from runtime.processes import die_with_parent
from runtime.supervisor.launch import ANY_LOOPBACK_PORT, ChildDaemon, private_run_dir

HOPS = 6  # socket hops of one round trip (see the module docstring)
RING_PROCESSES = 4  # gateway, perception, decision, execution
DAEMON_START_TIMEOUT_S = 90.0
POLL_MS = 100  # the runtime roles' default poll timeout (Role.poll_timeout_ms)
DRAIN_LIMIT = 256  # runtime.roles.base.DRAIN_LIMIT
QUERY_PARAMS = "{label_share = 0.0, act_below_confidence = 0.0}"


# --------------------------------------------------------------------------------------------------
# Raw ring: module-level functions so that 'spawn' children can import them (keep the imports light).
# --------------------------------------------------------------------------------------------------
_stop_requested = False


def _on_sigterm(_signum: int, _frame: Any) -> None:
    global _stop_requested
    _stop_requested = True


def _ring_child_setup() -> zmq.Context:
    die_with_parent()
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us by pid
    return zmq.Context()


def _socket(context: zmq.Context, kind: int) -> zmq.Socket:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 10_000)  # the runtime's Transport default
    sock.setsockopt(zmq.RCVHWM, 10_000)
    return sock


def ring_gateway(next_endpoint: str, return_endpoint: str, bound: Any, ready: Any) -> None:
    """ROUTER for the peer (tcp, a port the OS picks, put on ``bound``) -> PUSH to 'perception';
    PULL from 'execution' -> ROUTER."""
    context = _ring_child_setup()
    peers = _socket(context, zmq.ROUTER)
    peers.setsockopt(zmq.ROUTER_MANDATORY, 1)
    peers.bind(ANY_LOOPBACK_PORT)
    bound.put(peers.getsockopt_string(zmq.LAST_ENDPOINT))
    returns = _socket(context, zmq.PULL)
    returns.bind(return_endpoint)
    onward = _socket(context, zmq.PUSH)
    onward.connect(next_endpoint)
    poller = zmq.Poller()
    poller.register(peers, zmq.POLLIN)
    poller.register(returns, zmq.POLLIN)
    ready.set()
    try:
        while not _stop_requested:
            for sock, _ in poller.poll(POLL_MS):
                for _ in range(DRAIN_LIMIT):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)  # [route, payload] either way
                    except zmq.Again:
                        break
                    (onward if sock is peers else peers).send_multipart(frames, zmq.NOBLOCK)
    finally:
        for sock in (onward, returns, peers):
            sock.close()
        context.term()


def ring_forwarder(inbox_endpoint: str, outbox_endpoint: str, ready: Any) -> None:
    """PULL (bound) -> PUSH (connected), bytes untouched: perception, decision or execution."""
    context = _ring_child_setup()
    inbox = _socket(context, zmq.PULL)
    inbox.bind(inbox_endpoint)
    outbox = _socket(context, zmq.PUSH)
    outbox.connect(outbox_endpoint)
    poller = zmq.Poller()
    poller.register(inbox, zmq.POLLIN)
    ready.set()
    try:
        while not _stop_requested:
            if poller.poll(POLL_MS):
                for _ in range(DRAIN_LIMIT):
                    try:
                        frames = inbox.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    outbox.send_multipart(frames, zmq.NOBLOCK)
    finally:
        outbox.close()
        inbox.close()
        context.term()


class RawRing:
    """The runtime's topology with forwarding-only processes; ``round_trip`` times one message."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.dir: Path | None = None
        self.processes: list[mp.process.BaseProcess] = []
        self.context: zmq.Context | None = None
        self.sock: zmq.Socket | None = None

    def start(self) -> None:
        self.dir = private_run_dir()
        ipc = {name: f"ipc://{self.dir}/{name}" for name in ("gateway", "perception", "decision", "execution")}
        spawn = mp.get_context("spawn")
        self._bound = spawn.Queue()
        specs: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            # consumers first, as the daemon starts them
            ("execution", ring_forwarder, (ipc["execution"], ipc["gateway"])),
            ("decision", ring_forwarder, (ipc["decision"], ipc["execution"])),
            ("perception", ring_forwarder, (ipc["perception"], ipc["decision"])),
            ("gateway", ring_gateway, (ipc["perception"], ipc["gateway"], self._bound)),
        ]
        events = []
        for name, target, args in specs:
            ready = spawn.Event()
            process = spawn.Process(target=target, args=(*args, ready), name=f"ring-{name}", daemon=True)
            process.start()
            self.processes.append(process)
            events.append((name, process, ready))

        self._events = events
        self.pids = {name: process.pid for name, process, _ in events}

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        for name, process, ready in self._events:
            if not ready.wait(max(deadline - time.monotonic(), 0.0)):
                raise RuntimeError(
                    f"raw ring process {name} (pid {process.pid}) did not start; exit code {process.exitcode}"
                )
        self.endpoint = self._bound.get(timeout=max(deadline - time.monotonic(), 1.0))
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)
        # The first message proves the ring is connected end to end (connects may still be retrying).
        self.sock.send(self.payload)
        if not self.sock.poll(10_000):
            raise RuntimeError("the raw ring did not answer its first message within 10 s")
        self.sock.recv()

    def round_trip(self) -> int:
        sock = self.sock
        started = time.perf_counter_ns()
        sock.send(self.payload)
        sock.recv()
        return time.perf_counter_ns() - started

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
        if self.context is not None:
            self.context.term()
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the loop exits and closes its sockets
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------
PATH_ROLES = ("gateway", "perception", "decision", "execution")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """user + system CPU seconds of each process so far (clock-tick resolution; 0.0 if unreadable)."""
    import psutil  # required when the benchmark starts

    result = {}
    for name, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
            result[name] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            result[name] = 0.0
    return result


def cpu_per_trip(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {name: round((after[name] - before[name]) * 1e6 / n, 1) for name in before}


@dataclass
class Summary:
    name: str
    samples_us: np.ndarray

    @property
    def p50(self) -> float:
        return float(np.percentile(self.samples_us, 50))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.samples_us, 99))

    @property
    def mean(self) -> float:
        return float(self.samples_us.mean())


class RuntimeClient:
    """One peer driven by a CartPole-v1 env: observation out, action in, env stepped with it."""

    def __init__(self, endpoint: str) -> None:
        import gymnasium

        from runtime.peer import Peer

        self.env = gymnasium.make("CartPole-v1")
        self.peer = Peer(
            endpoint, self.env.observation_space, self.env.action_space, name="latency-bench", timeout_s=30.0
        )
        self.peer.connect(wait_s=30.0)
        self.obs, _ = self.env.reset(seed=0)
        self.episode_start = True
        self.seen_obs: list[np.ndarray] = []
        self.decided_by: dict[str, int] = {}
        self.versions: set[int] = set()

    def round_trip(self, record: bool = True) -> int:
        obs = self.obs
        started = time.perf_counter_ns()
        result = self.peer.act(obs, policy="student", episode_start=self.episode_start)
        elapsed = time.perf_counter_ns() - started
        if record:
            self.decided_by[result.decided_by] = self.decided_by.get(result.decided_by, 0) + 1
            self.versions.add(result.student_version)
            if len(self.seen_obs) < 4096:
                self.seen_obs.append(obs)
        self.obs, _, terminated, truncated, _ = self.env.step(int(result.action))
        self.episode_start = terminated or truncated
        if self.episode_start:
            self.obs, _ = self.env.reset()
        return elapsed

    def close(self) -> None:
        try:
            self.peer.close()
        finally:
            self.env.close()


class BareForward:
    """The default student's forward pass, in-process, one thread, one observation at a time."""

    def __init__(self) -> None:
        import torch

        from runtime.learn.nets import MLP

        torch.set_num_threads(1)
        torch.manual_seed(0)
        self.torch = torch
        self.model = MLP((4,), 2, [32]).eval()
        self.inputs: list[np.ndarray] = [np.zeros((1, 4), dtype=np.float32)]
        self.index = 0

    def use_observations(self, observations: list[np.ndarray]) -> None:
        if observations:
            self.inputs = [np.asarray(o, dtype=np.float32)[None] for o in observations]

    def round_trip(self) -> int:
        torch, model = self.torch, self.model
        x = self.inputs[self.index % len(self.inputs)]
        self.index += 1
        started = time.perf_counter_ns()
        with torch.no_grad():
            model(torch.from_numpy(x))
        return time.perf_counter_ns() - started


HUGE_BOX = {"type": "box", "shape": [1 << 20], "dtype": "float32"}
PIPELINE = 100  # messages in flight at once while measuring session start


def gateway_cpu_per_message(endpoint: str, gateway_pid: int, n: int) -> dict[str, float]:
    """Gateway CPU µs per huge-space hello and per heartbeat (the baseline), ``n`` of each,
    sent over one DEALER in pipelined blocks; every reply is checked."""
    import gymnasium

    from runtime.wire import protocol, spaces

    env = gymnasium.make("CartPole-v1")
    agent = {
        "observation_space": spaces.to_wire(env.observation_space),
        "action_space": spaces.to_wire(env.action_space),
    }
    env.close()
    hello = protocol.encode("hello", **{**agent, "observation_space": HUGE_BOX})
    heartbeat = protocol.encode("heartbeat")
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)

    def exchange(payload: bytes, count: int, expected: str) -> None:
        for _ in range(count):
            sock.send(payload)
        for _ in range(count):
            if not sock.poll(30_000):
                raise RuntimeError(f"the gateway did not answer a {expected} request within 30 s")
            reply = protocol.decode(sock.recv())
            if reply.kind != expected:
                raise RuntimeError(f"expected {expected}, got {reply.kind}: {reply.fields}")

    def cost(payload: bytes, expected: str) -> float:
        before = cpu_seconds({"gateway": gateway_pid})
        for size in split(n, max(1, n // PIPELINE)):
            exchange(payload, size, expected)
        after = cpu_seconds({"gateway": gateway_pid})
        return cpu_per_trip(before, after, n)["gateway"]

    try:
        exchange(hello, 1, "error")  # warm-up
        exchange(protocol.encode("hello", peer_name="latency-hellos", **agent), 1, "welcome")
        exchange(heartbeat, 1, "heartbeat")
        per_hello = cost(hello, "error")
        per_heartbeat = cost(heartbeat, "heartbeat")
        sock.send(protocol.encode("bye"))
    finally:
        sock.close(linger=0)
    return {
        "gateway_cpu_us_per_hello": per_hello,
        "gateway_cpu_us_per_heartbeat": per_heartbeat,
        "ratio_hello_heartbeat": round(per_hello / max(per_heartbeat, 1e-9), 2),
        "hellos": n,
    }


def split(n: int, blocks: int) -> list[int]:
    base, extra = divmod(n, blocks)
    return [base + (1 if i < extra else 0) for i in range(blocks)]


def measure(runners: dict[str, Callable[[], int]], n: int, blocks: int) -> dict[str, np.ndarray]:
    """``n`` timed samples of each runner, in ``blocks`` interleaved blocks, with a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    samples = {name: np.empty(n, dtype=np.int64) for name in runners}
    filled = dict.fromkeys(runners, 0)
    progress = Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        tasks = {name: progress.add_task(name, total=n) for name in runners}
        gc.collect()
        gc.disable()
        try:
            for size in split(n, max(1, min(blocks, n))):
                for name, run in runners.items():
                    out, start = samples[name], filled[name]
                    for i in range(start, start + size):
                        out[i] = run()
                    filled[name] += size
                    progress.update(tasks[name], completed=filled[name])
        finally:
            gc.enable()
    return {name: values / 1000.0 for name, values in samples.items()}


def warm_up(runners: dict[str, Callable[[], int]], count: int) -> None:
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("warm-up", total=count * len(runners))
        for run in runners.values():
            for _ in range(count):
                run()
            progress.advance(task, count)


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
def print_table(
    results: list[Summary],
    n: int,
    payload_bytes: int,
    cpu: dict[str, dict[str, float]],
    session_start: dict[str, float],
) -> None:
    from rich.console import Console
    from rich.table import Table

    runtime = results[0]
    table = Table(
        title=f"agentrt round-trip latency (n={n}, {HOPS} hops, {RING_PROCESSES} processes, "
        f"{payload_bytes}-byte observation)"
    )
    table.add_column("path")
    for column in ("p50 µs", "p99 µs", "mean µs", "runtime ÷ this (p50)", "runtime ÷ this (p99)"):
        table.add_column(column, justify="right")
    for summary in results:
        table.add_row(
            summary.name,
            f"{summary.p50:.1f}",
            f"{summary.p99:.1f}",
            f"{summary.mean:.1f}",
            f"{runtime.p50 / summary.p50:.2f}×",
            f"{runtime.p99 / summary.p99:.2f}×",
        )
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console.width = max(console.width, 100)  # rich assumes 80 columns when piped
    console.print(table)
    console.print(
        f"runtime / raw ring  p50 {runtime.p50 / results[1].p50:.2f}×   "
        f"runtime / bare forward  p50 {runtime.p50 / results[2].p50:.1f}×"
    )
    where = Table(title="CPU µs per round trip, by process")
    where.add_column("path")
    for name in PATH_ROLES:
        where.add_column(name, justify="right")
    where.add_column("sum", justify="right")
    for path, by_role in cpu.items():
        where.add_row(path, *(f"{by_role[name]:.0f}" for name in PATH_ROLES), f"{sum(by_role.values()):.0f}")
    console.print(where)
    start = Table(title=f"Gateway CPU µs per message (n={session_start['hellos']} each)")
    start.add_column("message")
    start.add_column("gateway CPU µs", justify="right")
    start.add_row("hello declaring a 1,048,576-element box", f"{session_start['gateway_cpu_us_per_hello']:.1f}")
    start.add_row("heartbeat (baseline)", f"{session_start['gateway_cpu_us_per_heartbeat']:.1f}")
    console.print(start)
    sys.stdout.flush()


def write_plot(path: str, results: list[Summary]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = np.concatenate([s.samples_us for s in results])
    low, high = max(everything.min() * 0.8, 0.1), everything.max() * 1.2
    bins = np.geomspace(low, high, 120)
    colors = {"agentrt runtime": "tab:red", "raw zmq ring": "tab:blue", "bare forward": "tab:green"}
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(13, 5))
    for summary in results:
        color = colors.get(summary.name)
        label = f"{summary.name}  p50 {summary.p50:.0f} µs, p99 {summary.p99:.0f} µs"
        hist.hist(summary.samples_us, bins=bins, alpha=0.55, color=color, label=label)
        hist.axvline(summary.p50, color=color, linestyle="--", linewidth=1)
        ordered = np.sort(summary.samples_us)
        cdf.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), color=color, label=summary.name)
        cdf.axvline(summary.p99, color=color, linestyle=":", linewidth=1)
    hist.set_xscale("log")
    hist.set_xlabel("round-trip latency (µs, log scale)")
    hist.set_ylabel("samples")
    hist.set_title("histogram (dashed: p50)")
    hist.legend(fontsize=8)
    cdf.set_xscale("log")
    cdf.set_xlabel("round-trip latency (µs, log scale)")
    cdf.set_ylabel("fraction of round trips ≤ x")
    cdf.set_title("CDF (dotted: p99)")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"agentrt student path vs same-run baselines (n={len(results[0].samples_us)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Round-trip latency of the agentrt student path vs a raw zmq ring "
        "and a bare forward pass (see the module docstring)."
    )
    parser.add_argument("--n", type=int, default=3000, help="timed round trips per path (default 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="untimed round trips per path first (default 300)")
    parser.add_argument("--blocks", type=int, default=10, help="interleaved measurement blocks (default 10)")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG with histograms and CDFs")
    parser.add_argument(
        "--hellos", type=int, default=3000, help="hellos (and baseline heartbeats) for the session-start figure"
    )
    parser.add_argument("--quick", action="store_true", help="n=600, warm-up 100, 4 blocks, 1000 hellos (about 15 s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.warmup, args.blocks, args.hellos = 600, 100, 4, 1000
    if args.n < 1 or args.warmup < 0 or args.blocks < 1 or args.hellos < 1:
        parser.error("--n, --blocks and --hellos must be positive, --warmup non-negative")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from runtime.wire import protocol

    daemon: ChildDaemon | None = None
    ring: RawRing | None = None
    client: RuntimeClient | None = None
    succeeded = False
    try:
        # The default configuration, except that the teacher is kept out of the measured path.
        daemon = ChildDaemon(env={"AGENTRT_QUERY_PARAMS": QUERY_PARAMS}, defaults_only=True)
        sample_obs = np.zeros(4, dtype=np.float32)
        payload = protocol.encode("observation", seq=1, obs=sample_obs, policy="student", episode_start=False)
        ring = RawRing(payload)
        ring.start()
        forward = BareForward()
        ring.wait_ready()
        daemon.wait_ready(DAEMON_START_TIMEOUT_S)
        client = RuntimeClient(daemon.endpoint)

        runners: dict[str, Callable[[], int]] = {
            "agentrt runtime": client.round_trip,
            "raw zmq ring": ring.round_trip,
            "bare forward": forward.round_trip,
        }
        warm_up(
            {
                "agentrt runtime": lambda: client.round_trip(record=False),
                "raw zmq ring": ring.round_trip,
                "bare forward": forward.round_trip,
            },
            args.warmup,
        )
        forward.use_observations(client.seen_obs or [client.obs])
        roles = daemon.status()["roles"]
        runtime_pids = {name: roles[name]["pid"] for name in PATH_ROLES}
        off_path_pids = {name: roles[name]["pid"] for name in ("teacher", "distillation")}
        off_path_pids["daemon"] = daemon.process.pid
        off_before = cpu_seconds(off_path_pids)
        ring_pids = {name: ring.pids[name] for name in PATH_ROLES}
        cpu_before = cpu_seconds(runtime_pids), cpu_seconds(ring_pids)
        samples = measure(runners, args.n, args.blocks)
        cpu_after = cpu_seconds(runtime_pids), cpu_seconds(ring_pids)
        off_path = cpu_per_trip(off_before, cpu_seconds(off_path_pids), args.n)
        cpu = {
            "runtime": cpu_per_trip(cpu_before[0], cpu_after[0], args.n),
            "raw ring": cpu_per_trip(cpu_before[1], cpu_after[1], args.n),
        }

        session_start = gateway_cpu_per_message(daemon.endpoint, runtime_pids["gateway"], args.hellos)

        status = daemon.status()
        decided = dict(client.decided_by)
        if decided.get("student", 0) != args.n:
            raise RuntimeError(f"not every measured action was decided by the student: {decided}")
        if status["decisions"]["by_teacher"] or status["labels_requested"]:
            raise RuntimeError(
                f"the teacher was involved: decisions {status['decisions']}, "
                f"labels requested {status['labels_requested']}"
            )
        results = [Summary(name, values) for name, values in samples.items()]
        runtime, raw, bare = results
        print_table(results, args.n, len(payload), cpu, session_start)
        if args.plot:
            write_plot(args.plot, results)
            print(f"plot written to {args.plot}", file=sys.stderr)
        summary = {
            "n": args.n,
            "warmup": args.warmup,
            "blocks": args.blocks,
            "hops": HOPS,
            "processes": RING_PROCESSES,
            "payload_bytes": len(payload),
            "p50_us": round(runtime.p50, 2),
            "p99_us": round(runtime.p99, 2),
            "mean_us": round(runtime.mean, 2),
            "baseline_p50_us": round(raw.p50, 2),
            "baseline_p99_us": round(raw.p99, 2),
            "baseline_mean_us": round(raw.mean, 2),
            "ratio_p50": round(runtime.p50 / raw.p50, 3),
            "ratio_p99": round(runtime.p99 / raw.p99, 3),
            "bare_forward_p50_us": round(bare.p50, 2),
            "bare_forward_p99_us": round(bare.p99, 2),
            "bare_forward_mean_us": round(bare.mean, 2),
            "ratio_forward_p50": round(runtime.p50 / bare.p50, 2),
            "decided_by": decided,
            "student_versions": sorted(client.versions),
            "teacher_decisions": status["decisions"]["by_teacher"],
            "labels_requested": status["labels_requested"],
            "cpu_us_per_trip": cpu,
            "cpu_us_per_trip_off_path": off_path,
            "decision_forward_us_last": status["roles"]["decision"]["gauges"].get("student_latency_us"),
            **session_start,
        }
        succeeded = True
        return summary
    finally:
        errors: list[BaseException] = []
        for stop in (client.close if client else None, ring.stop if ring else None, daemon.stop if daemon else None):
            if stop is None:
                continue
            try:
                stop()
            except BaseException as exc:  # keep stopping the rest
                errors.append(exc)
        if errors and succeeded:
            raise errors[0]


def _terminated(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        extras.require("psutil", "bench", "the CPU-time table")
        if args.plot:
            extras.require("matplotlib", "bench", "--plot")
    except extras.MissingExtra as exc:
        print(f"latency: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminated)  # SIGTERM cleans up like Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    try:
        summary = run(args)
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"latency benchmark failed: {exc}", file=sys.stderr)
        return 1
    summary["machine"] = {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
