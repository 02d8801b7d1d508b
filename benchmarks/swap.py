#!/usr/bin/env python3
"""Hot swap under load: weight publish → decision serving the new version, and what swaps cost peers.

What is measured
----------------
The run directory of a private daemon is seeded, before it starts, with ``--swaps + 1`` student
versions of the default student (built as decision builds it, weights perturbed per version),
written with the distiller's own ``CheckpointStore`` and recorded in its ``Registry``; version 1
serves. While 8 SDK peers (CartPole-v1, ``policy="student"``, teacher kept out as in
``latency.py``) keep the runtime busy in ``--clients`` client processes, the benchmark publishes
versions 2, 3, ... every ``--interval`` seconds through the real path of ``agentrt student
rollback --to N``: the distiller's control socket (``runtime.supervisor.control.request``, what
the CLI calls, without starting a CLI process per swap) → the distiller writes the registry and
publishes ``weights`` on its PUB socket → decision loads the safetensors file between two batches.
With no labels requested the distiller never trains, so no publish but ours happens.

Per swap:

* **publish → served** (``swap_p50_ms``, ``swap_p99_ms``): from the distiller's publish (its
  ``student_rolled_back`` log line, written right after the ``weights`` message is sent; wall clock
  turned into this machine's monotonic clock) to the first action any peer receives that carries
  the new ``student_version`` (what a peer sees; it includes one trip back through execution and
  the gateway). If the log line is missing, the control reply's arrival stands in.
* **publish → loaded** (``load_p50_ms``): to decision's ``weights_swapped`` log line; of which
  ``swap_in_p50_ms`` is decision's own work (reading the file, loading the weights, checking the
  numpy forward: the line's ``load_ms``), the rest the wait for decision to get to the message.
* **request → served** (``rollback_p50_ms``): from sending the rollback request, as a person
  would see it (includes the registry's SQLite writes and the distiller's load of the file).

Under load: every request's round trip is recorded. Each interval between two publishes is cut in
two: requests sent in the first half are **near** a swap, those in the second half **far** from
it (the control, interleaved with the swaps, so slow drifts of a shared machine hit both alike).
``ratio_p99`` = near p99 ÷ far p99; ``delayed_by_swaps`` counts near requests slower than the far
p99, beyond the 1 % expected by chance. ``--baseline`` seconds of load before the first swap are
reported too (``baseline_p99_ms``), for reference only. ``dropped`` counts requests the SDK had
to resend (no answer within 1 s) or that timed out, plus messages any role dropped and errors
answered. Issue 12's goal:
p50 ≤ 5 ms, no dropped request.

Every process started here is stopped by pid in a ``finally``. ``--quick``: 5 swaps, 2 s baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import benchlib

RESEND_S = 1.0
NEAR_BEFORE_S = 0.02  # a request sent this long before a publish may still be in flight when it lands


# --------------------------------------------------------------------------------------------------
# Seeding the run directory
# --------------------------------------------------------------------------------------------------
def seed_versions(run_dir: Path, count: int) -> None:
    """``count`` promoted versions of the default student in ``run_dir``; version 1 serves."""
    import torch

    from runtime import config
    from runtime.config import Settings
    from runtime.learn.models import build_student
    from runtime.learn.registry import PROMOTED, Registry, VersionRecord, checkpoint_path
    from runtime.plugin import pluginmanager
    from runtime.wire.spaces import agent_spaces

    settings = Settings.of(config.load(path=None, environ={"AGENTRT_RUN_DIR": str(run_dir)}))
    plugins = pluginmanager.load(settings.plugins.table())
    observation_space, action_space = agent_spaces(settings.agent.table())
    student = build_student(plugins, settings, observation_space, action_space)
    registry = Registry(run_dir)
    generator = torch.Generator().manual_seed(0)
    try:
        for version in range(1, count + 1):
            state = {
                name: tensor + 0.01 * torch.randn(tensor.shape, generator=generator)
                for name, tensor in student.state_dict().items()
            }
            record = VersionRecord(
                version, version - 1 or None, time.time(), 0, 0, None, None, None, PROMOTED, checkpoint_path(version)
            )
            registry.add(record, state, {"benchmark": "swap"})
        registry.serve(1, "benchmarks/swap.py")
    finally:
        registry.close()


# --------------------------------------------------------------------------------------------------
# Client processes: peers in lockstep, every round trip recorded
# --------------------------------------------------------------------------------------------------
def run_peers(command: dict[str, Any]) -> dict[str, Any]:
    import gymnasium
    import numpy as np

    from runtime.peer import Peer

    envs = [gymnasium.make(benchlib.ENV_ID) for _ in range(command["peers"])]
    peers = [
        Peer(command["endpoint"], env.observation_space, env.action_space, name=f"swap-{i}", resend_s=RESEND_S)
        for i, env in enumerate(envs)
    ]
    sent, received, versions = [], [], []
    timeouts = 0
    try:
        for peer in peers:
            peer.connect(wait_s=60.0)
        obs = [env.reset(seed=command["seed"] + i)[0] for i, env in enumerate(envs)]
        starts = [True] * len(peers)
        stop_at = command["stop_at"]
        while time.monotonic() < stop_at:
            at = []
            for i, peer in enumerate(peers):
                at.append(time.monotonic())
                peer.submit(obs[i], episode_start=starts[i], policy="student")
            for i, peer in enumerate(peers):
                try:
                    answer = peer.result()
                except TimeoutError:
                    timeouts += 1
                    action = 0
                else:
                    sent.append(at[i])
                    received.append(time.monotonic())
                    versions.append(answer.student_version)
                    action = int(answer.action)
                obs[i], _, terminated, truncated, _ = envs[i].step(action)
                starts[i] = terminated or truncated
                if starts[i]:
                    obs[i], _ = envs[i].reset()
        return {
            "sent": np.asarray(sent),
            "received": np.asarray(received),
            "version": np.asarray(versions, dtype=np.int64),
            "resends": sum(p.resends for p in peers),
            "reconnects": sum(p.reconnects - 1 for p in peers),  # the first connect makes a socket too
            "timeouts": timeouts,
        }
    finally:
        for peer in peers:
            peer.close()
        for env in envs:
            env.close()


def client_worker(index: int, commands: Any, results: Any) -> None:
    benchlib.worker_loop(index, commands, results, run_peers)


# --------------------------------------------------------------------------------------------------
def log_events(log_path: Path, event: str, role: str) -> dict[int, dict[str, Any]]:
    """version -> the first ``event`` line logged by ``role`` for it, with ``at``: its wall-clock time (s)."""
    found: dict[int, dict[str, Any]] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if event not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == event and record.get("role") == role and "version" in record:
            stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
            found.setdefault(int(record["version"]), {**record, "at": stamp.timestamp()})
    return found


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from runtime.supervisor import control
    from runtime.supervisor.launch import private_run_dir
    from runtime.wire.transport import DISTILLATION_CONTROL

    run_dir = private_run_dir()
    seed_versions(run_dir, args.swaps + 1)
    env = {"AGENTRT_QUERY_PARAMS": benchlib.STUDENT_ONLY_QUERY_PARAMS}
    workers: benchlib.Workers | None = None
    swaps: list[dict[str, Any]] = []
    try:
        with benchlib.private_daemon(env, run_dir=run_dir) as daemon:
            status = daemon.status()
            if status["student_version"] != 1:
                raise RuntimeError(f"decision serves version {status['student_version']}, not the seeded 1")
            workers = benchlib.Workers(client_worker, args.clients)
            # Peers connect while the workers start; the phases are timed from when the first one answers.
            time.sleep(0.5)
            runtime_total = args.warmup + args.baseline + args.swaps * args.interval + 1.5
            stop_at = time.monotonic() + 15.0 + runtime_total  # room for the workers to start
            per_client = [args.peers // args.clients + (i < args.peers % args.clients) for i in range(args.clients)]
            for i, count in enumerate(per_client):
                workers.send(i, {"endpoint": daemon.endpoint, "peers": count, "seed": 100 * i, "stop_at": stop_at})
            daemon.wait_until(lambda s: s["decisions"]["total"] > 0, timeout=15.0, what="the first decision")
            before = daemon.status()
            time.sleep(args.warmup)
            baseline_from = time.monotonic()
            time.sleep(args.baseline)
            baseline_to = time.monotonic()
            offset = time.time() - time.monotonic()
            for version in range(2, args.swaps + 2):
                requested = time.monotonic()
                control.request(
                    daemon.run_dir, "rollback", args={"to": version}, endpoint=DISTILLATION_CONTROL, timeout_s=10
                )
                swaps.append({"version": version, "requested": requested, "replied": time.monotonic()})
                time.sleep(max(0.0, requested + args.interval - time.monotonic()))
            answers = workers.collect(args.clients, stop_at - time.monotonic() + 60)
            after = daemon.status()
            published = log_events(daemon.log_path, "student_rolled_back", "distillation")
            loaded = log_events(daemon.log_path, "weights_swapped", "decision")
    finally:
        if workers is not None:
            workers.stop()

    sent = np.concatenate([a["sent"] for a in answers])
    received = np.concatenate([a["received"] for a in answers])
    version = np.concatenate([a["version"] for a in answers])
    latency_ms = (received - sent) * 1000
    for swap in swaps:
        v = swap["version"]
        publish = published[v]["at"] - offset if v in published else swap["replied"]
        served = received[version == v]
        swap["publish"] = publish
        swap["served_ms"] = (served.min() - publish) * 1000 if len(served) else None
        swap["loaded_ms"] = (loaded[v]["at"] - offset - publish) * 1000 if v in loaded else None
        swap["load_ms"] = loaded[v].get("load_ms") if v in loaded else None
        swap["rollback_ms"] = (served.min() - swap["requested"]) * 1000 if len(served) else None
    if any(s["served_ms"] is None for s in swaps):
        missing = [s["version"] for s in swaps if s["served_ms"] is None]
        raise RuntimeError(f"no peer was ever served versions {missing}")

    # Interleaved control: the first half of each interval after a publish is "near" a swap, the
    # second half "far" from it; slow drifts of a shared machine hit both halves alike.
    near = np.zeros(len(sent), dtype=bool)
    far = np.zeros(len(sent), dtype=bool)
    for swap in swaps:
        middle = swap["publish"] + args.interval / 2
        near |= (sent >= swap["publish"] - NEAR_BEFORE_S) & (sent < middle)
        far |= (sent >= middle) & (sent < swap["publish"] + args.interval - NEAR_BEFORE_S)
    in_baseline = (sent >= baseline_from) & (received <= baseline_to)
    base, during, control_ = latency_ms[in_baseline], latency_ms[near], latency_ms[far]
    far_p99 = float(np.percentile(control_, 99))
    above = int((during > far_p99).sum())
    served = [s["served_ms"] for s in swaps]
    loaded_ms = [s["loaded_ms"] for s in swaps if s["loaded_ms"] is not None]
    load_ms = [s["load_ms"] for s in swaps if s["load_ms"] is not None]
    rollback = [s["rollback_ms"] for s in swaps]
    resends = sum(a["resends"] for a in answers)
    timeouts = sum(a["timeouts"] for a in answers)
    role_dropped = benchlib.dropped(after) - benchlib.dropped(before)
    errors = after["errors"]["total"] - before["errors"]["total"]
    p = benchlib.percentile
    r = benchlib.rounded
    summary: dict[str, Any] = {
        "swaps": len(swaps),
        "peers": args.peers,
        "clients": args.clients,
        "interval_s": args.interval,
        "swap_p50_ms": r(p(served, 50)),
        "swap_p99_ms": r(p(served, 99)),
        "swap_max_ms": r(max(served)),
        "load_p50_ms": r(p(loaded_ms, 50)),
        "load_p99_ms": r(p(loaded_ms, 99)),
        "swap_in_p50_ms": r(p(load_ms, 50), 3),
        "swap_in_p99_ms": r(p(load_ms, 99), 3),
        "rollback_p50_ms": r(p(rollback, 50)),
        "rollback_p99_ms": r(p(rollback, 99)),
        "published_from_log": sum(s["version"] in published for s in swaps),
        "baseline_requests": len(base),
        "baseline_p50_ms": r(p(base, 50), 3),
        "baseline_p99_ms": r(p(base, 99), 3),
        "far_requests": len(control_),
        "far_p50_ms": r(p(control_, 50), 3),
        "far_p99_ms": r(far_p99, 3),
        "near_requests": len(during),
        "near_p50_ms": r(p(during, 50), 3),
        "near_p99_ms": r(p(during, 99), 3),
        "near_max_ms": r(float(during.max()) if len(during) else None, 3),
        "ratio_p99": r(p(during, 99) / far_p99, 3) if len(during) and far_p99 else None,
        "ratio_p50": r(p(during, 50) / p(control_, 50), 3) if len(during) else None,
        "above_far_p99": above,
        "delayed_by_swaps": max(0, round(above - 0.01 * len(during))),
        "dropped": resends + timeouts + role_dropped + errors,
        "resends": resends,
        "timeouts": timeouts,
        "role_dropped": role_dropped,
        "errors": errors,
        "final_student_version": after["student_version"],
        "decisions_per_s": r(len(latency_ms) / (received.max() - sent.min()), 1),
    }
    print_table(summary, swaps)
    if args.plot:
        write_plot(args.plot, sent, latency_ms, swaps)
    return summary


def print_table(summary: dict[str, Any], swaps: list[dict[str, Any]]) -> None:
    from rich.table import Table

    console = benchlib.console()
    table = Table(
        title=f"hot swap under load: {summary['swaps']} swaps, {summary['peers']} peers, "
        f"{summary['interval_s']:g} s apart"
    )
    table.add_column("figure")
    for column in ("p50", "p99", "max / count"):
        table.add_column(column, justify="right")
    table.add_row("publish → first action of the new version (ms)", *_cells(summary, "swap"))
    table.add_row("publish → decision loaded it (ms, log)", *_cells(summary, "load"))
    table.add_row("  of which decision's own work (ms, log's load_ms)", *_cells(summary, "swap_in"))
    table.add_row("rollback request → first action (ms)", *_cells(summary, "rollback"))
    for label, key in (
        ("round trip, before any swap (ms)", "baseline"),
        ("round trip, far from a swap: 2nd half of each interval (ms)", "far"),
        ("round trip, near a swap: 1st half of each interval (ms)", "near"),
    ):
        table.add_row(
            label,
            f"{summary[f'{key}_p50_ms']:.2f}",
            f"{summary[f'{key}_p99_ms']:.2f}",
            f"{summary[f'{key}_requests']} req",
        )
    table.add_row("near ÷ far", f"{summary['ratio_p50']:.2f}×", f"{summary['ratio_p99']:.2f}×", "")
    table.add_row(
        "requests delayed by swaps (near, over far p99, beyond 1 %)", "", "", str(summary["delayed_by_swaps"])
    )
    table.add_row(
        "requests dropped (resent after 1 s, timed out, dropped by a role, errors)",
        "",
        "",
        str(summary["dropped"]),
    )
    console.print(table)
    detail = Table(title="per swap (ms)")
    for column in ("version", "publish → served", "publish → loaded", "request → served"):
        detail.add_column(column, justify="right")
    for swap in swaps:
        detail.add_row(
            str(swap["version"]),
            f"{swap['served_ms']:.2f}",
            f"{swap['loaded_ms']:.2f}" if swap["loaded_ms"] is not None else "-",
            f"{swap['rollback_ms']:.2f}",
        )
    console.print(detail)


def _cells(summary: dict[str, Any], name: str) -> list[str]:
    cells = [summary.get(f"{name}_p50_ms"), summary.get(f"{name}_p99_ms"), summary.get(f"{name}_max_ms")]
    return [f"{c:.2f}" if c is not None else "" for c in cells]


def write_plot(path: str, sent: Any, latency_ms: Any, swaps: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = sent.min()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.scatter(sent - origin, latency_ms, s=2, alpha=0.4, label="round trip")
    for i, swap in enumerate(swaps):
        ax.axvline(
            swap["publish"] - origin, color="tab:red", alpha=0.5, linewidth=1, label="publish" if i == 0 else None
        )
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("round trip (ms, log)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Weight publish → serving, and what swaps cost peers under load.")
    parser.add_argument("--swaps", type=int, default=20, help="versions published (default 20)")
    parser.add_argument("--interval", type=float, default=0.75, help="seconds between publishes (default 0.75)")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of load without swaps first (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds of load first (default 1)")
    parser.add_argument("--peers", type=int, default=8, help="peers (default 8)")
    parser.add_argument("--clients", type=int, default=1, help="client processes (default 1)")
    parser.add_argument("--quick", action="store_true", help="5 swaps 0.5 s apart, 2 s baseline")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG")
    args = parser.parse_args(argv)
    if args.quick:
        args.swaps, args.interval, args.baseline, args.warmup = 5, 0.5, 2.0, 0.5
    if args.swaps < 1 or args.peers < 1 or not 1 <= args.clients <= args.peers:
        parser.error("--swaps and --peers must be positive, 1 <= --clients <= --peers")
    return args


if __name__ == "__main__":
    sys.exit(benchlib.main("swap", measure, parse_args()))
