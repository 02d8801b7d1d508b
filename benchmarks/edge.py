#!/usr/bin/env python3
"""The edge mode: a decision at the edge vs a round trip through the runtime, labels, promotion → edge.

What is measured
----------------
A private daemon (built-in configuration) and, in this process, CartPole-v1 edge peers
(``runtime.peer.edge.EdgePeer``, the ``safetensors+json`` layout run with numpy), in three phases:

1. **learning** (``--learn`` seconds, or until the last 10 episodes average ≥ 475): ``--peers``
   edge peers step their environments in lockstep at ``--step-hz`` (a robot's control loop), each
   acting with its own copy of the student and sending the observations its ``EdgeQuery`` picks
   as ``label`` messages. Promotions happen as the distiller learns; each is pushed to the peers.
   Recorded: every ``act`` call in that paced loop (``edge_paced_p50_us``: it includes taking a
   pushed student and sending a label when there is one; a loop that sleeps between steps wakes
   with cold caches, so on a busy machine it reads higher), the student's forward pass alone
   inside it (``edge_forward_p50_us``), labels sent per episode, and each version's
   **promotion → edge** delay: from the distiller's announcement (``announced_at`` of the
   ``student`` message, wall clock) to the peer taking it in the ``act`` before the decision that
   uses it.
2. **swaps** (``--swaps``): more promotion → edge samples. One edge peer acts with labels off (so
   the distiller, without new labels, publishes nothing of its own) while the benchmark makes the
   two newest versions serve in turn through the distiller's rollback control path (what
   ``agentrt student rollback`` does); each new serving version is pushed like a promotion.
3. **edge vs round trip** (same run, same daemon, the same way): ``--n`` decisions back to back
   by one edge peer (query policy on: ``act`` as a control loop calls it, label sends included;
   ``edge_p50_us``), then ``--n`` by one SDK peer (``runtime.peer.Peer``, ``policy="student"``),
   each waiting for its action (``runtime_p50_us``): the per-decision latency without the edge mode.

``ratio_p50`` = round trip p50 ÷ edge decision p50. Issue 14's goals: edge decision p50 ≤ 50 µs,
promotion → edge p50 ≤ 100 ms. Every process started here (the daemon and its roles) is stopped by
pid in a ``finally``. ``--quick``: 15 s of learning, 5 swaps, 1000 decisions each way.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from typing import Any

import benchlib
import numpy as np


def learn(endpoint: str, args: argparse.Namespace) -> dict[str, Any]:
    import gymnasium

    from runtime.peer.edge import EdgePeer, EdgeQuery

    envs = [gymnasium.make(benchlib.ENV_ID) for _ in range(args.peers)]
    peers = [
        EdgePeer(endpoint, env.observation_space, env.action_space, name=f"bench-edge{i}", query=EdgeQuery(seed=i))
        for i, env in enumerate(envs)
    ]
    act_us: list[float] = []
    returns: collections.deque[float] = collections.deque(maxlen=10)
    episodes = 0
    try:
        for peer in peers:
            peer.connect(wait_s=120)
        observations = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
        totals, starts = [0.0] * len(envs), [True] * len(envs)
        period, next_step = 1.0 / args.step_hz, time.monotonic()
        deadline = time.monotonic() + args.learn
        while time.monotonic() < deadline and not (len(returns) == 10 and np.mean(returns) >= 475):
            next_step += period
            time.sleep(max(0.0, next_step - time.monotonic()))
            for i, (peer, env) in enumerate(zip(peers, envs, strict=True)):
                started = time.perf_counter_ns()
                action = peer.act(observations[i], episode_start=starts[i])
                act_us.append((time.perf_counter_ns() - started) / 1000)
                observations[i], reward, terminated, truncated, _ = env.step(action)
                totals[i] += float(reward)
                starts[i] = terminated or truncated
                if starts[i]:
                    returns.append(totals[i])
                    episodes += 1
                    observations[i], totals[i] = env.reset()[0], 0.0
        benchlib.progress(f"learning: {episodes} episodes, last 10 returns {np.mean(returns) if returns else 0:.0f}")
    finally:
        for peer in peers:
            peer.close()
        for env in envs:
            env.close()
    stats = [peer.stats for peer in peers]
    return {
        "act_us": act_us,
        "forward_us": [us for s in stats for us in s.decision_us],
        "labels": sum(s.labels_sent for s in stats),
        "episodes": episodes,
        "last_returns": float(np.mean(returns)) if returns else None,
        "promotion_s": [delay for s in stats for delay in s.promotion_to_edge_s],
        "versions": sorted({v for s in stats for v in s.versions}),
    }


def swaps(daemon: Any, endpoint: str, args: argparse.Namespace, versions: list[int]) -> list[float]:
    import gymnasium

    from runtime.peer.edge import EdgePeer
    from runtime.supervisor import control
    from runtime.wire.transport import DISTILLATION_CONTROL

    promoted = [v for v in versions if v > 0][-2:]
    if len(promoted) < 2 or not args.swaps:
        return []
    env = gymnasium.make(benchlib.ENV_ID)
    peer = EdgePeer(endpoint, env.observation_space, env.action_space, name="bench-edge-swaps", query=None)
    try:
        peer.connect(wait_s=60)
        obs = env.reset(seed=1)[0]
        period = 1.0 / args.step_hz
        for index in range(args.swaps):
            target = promoted[index % 2] if peer.version != promoted[index % 2] else promoted[(index + 1) % 2]
            control.request(
                daemon.run_dir, "rollback", args={"to": target}, endpoint=DISTILLATION_CONTROL, timeout_s=10
            )
            deadline = time.monotonic() + 10
            while peer.version != target and time.monotonic() < deadline:
                time.sleep(period)
                obs, _, terminated, truncated, _ = env.step(peer.act(obs))
                if terminated or truncated:
                    obs = env.reset()[0]
        return list(peer.stats.promotion_to_edge_s)
    finally:
        peer.close()
        env.close()


def timed_decisions(endpoint: str, n: int, edge: bool) -> list[float]:
    """``n`` decisions back to back on CartPole, each timed: at the edge (an ``EdgePeer`` with its
    query policy on, so label sends are included), or a round trip (``Peer.act``, policy "student")."""
    import gymnasium

    from runtime.peer import Peer
    from runtime.peer.edge import EdgePeer, EdgeQuery

    env = gymnasium.make(benchlib.ENV_ID)
    if edge:
        edge_peer = EdgePeer(endpoint, env.observation_space, env.action_space, name="bench-edge", query=EdgeQuery())
        peer, decide = edge_peer, edge_peer.act
    else:
        sdk_peer = Peer(endpoint, env.observation_space, env.action_space, name="bench-round-trip")
        peer, decide = sdk_peer, lambda obs: int(sdk_peer.act(obs, policy="student").action)
    latencies = []
    try:
        peer.connect(wait_s=60)
        obs = env.reset(seed=2)[0]
        for _ in range(n):
            started = time.perf_counter_ns()
            action = decide(obs)
            latencies.append((time.perf_counter_ns() - started) / 1000)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs = env.reset()[0]
    finally:
        peer.close()
        env.close()
    return latencies


def measure(args: argparse.Namespace) -> dict[str, Any]:
    p = benchlib.percentile
    with benchlib.private_daemon() as daemon:
        endpoint = daemon.endpoint
        benchlib.progress(f"learning with {args.peers} edge peers for at most {args.learn:g} s")
        learnt = learn(endpoint, args)
        benchlib.progress(f"{args.swaps} swaps between the two newest versions")
        swapped = swaps(daemon, endpoint, args, learnt["versions"])
        benchlib.progress(f"{args.n} decisions at the edge, then {args.n} round trips through the runtime")
        local = timed_decisions(endpoint, args.n, edge=True)
        trips = timed_decisions(endpoint, args.n, edge=False)
        status = daemon.status()
    promotions = learnt["promotion_s"] + swapped
    summary = {
        "edge_p50_us": benchlib.rounded(p(local, 50)),
        "edge_p99_us": benchlib.rounded(p(local, 99)),
        "edge_paced_p50_us": benchlib.rounded(p(learnt["act_us"], 50)),
        "edge_forward_p50_us": benchlib.rounded(p(learnt["forward_us"], 50)),
        "runtime_p50_us": benchlib.rounded(p(trips, 50)),
        "runtime_p99_us": benchlib.rounded(p(trips, 99)),
        "ratio_p50": benchlib.rounded(p(trips, 50) / p(local, 50)),
        "labels_sent": learnt["labels"],
        "episodes": learnt["episodes"],
        "labels_per_episode": benchlib.rounded(learnt["labels"] / max(learnt["episodes"], 1)),
        "labels_counted": benchlib.counter(status, "gateway", "edge_labels"),
        "last_10_returns": benchlib.rounded(learnt["last_returns"]),
        "versions": learnt["versions"],
        "promotions": len(promotions),
        "promotions_while_learning": len(learnt["promotion_s"]),
        "promotion_to_edge_p50_ms": benchlib.rounded(p(np.asarray(promotions) * 1000, 50)),
        "promotion_to_edge_p99_ms": benchlib.rounded(p(np.asarray(promotions) * 1000, 99)),
        "decisions_edge": len(local),
        "round_trips": len(trips),
    }
    show(summary)
    return summary


def show(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="edge mode: CartPole-v1, same run")
    for column in ("figure", "p50", "p99", "goal"):
        table.add_column(column, justify="right")
    table.add_row("edge decision (µs)", str(summary["edge_p50_us"]), str(summary["edge_p99_us"]), "p50 ≤ 50")
    table.add_row("edge decision in the paced control loop (µs)", str(summary["edge_paced_p50_us"]), "", "")
    table.add_row("  of which the student's forward (µs)", str(summary["edge_forward_p50_us"]), "", "")
    table.add_row(
        "round trip through the runtime (µs)", str(summary["runtime_p50_us"]), str(summary["runtime_p99_us"]), ""
    )
    table.add_row(
        "promotion → edge (ms)",
        str(summary["promotion_to_edge_p50_ms"]),
        str(summary["promotion_to_edge_p99_ms"]),
        "p50 ≤ 100",
    )
    table.add_row("labels per episode", str(summary["labels_per_episode"]), "", "")
    console = benchlib.console()
    console.print(table)
    console.print(
        f"{summary['episodes']} episodes while learning (last 10: {summary['last_10_returns']}), "
        f"{summary['labels_sent']} labels, versions {summary['versions']}, {summary['promotions']} promotions timed"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The edge mode: local decisions, labels, promotion → edge.")
    parser.add_argument("--learn", type=float, default=60.0, help="seconds of learning at most (default 60)")
    parser.add_argument("--peers", type=int, default=2, help="edge peers while learning (default 2)")
    parser.add_argument("--step-hz", type=float, default=500.0, help="control-loop rate (default 500)")
    parser.add_argument("--swaps", type=int, default=20, help="serving changes timed after learning (default 20)")
    parser.add_argument("--n", type=int, default=3000, help="decisions timed each way (default 3000)")
    parser.add_argument("--quick", action="store_true", help="15 s of learning, 5 swaps, 1000 decisions each way")
    args = parser.parse_args(argv)
    if args.quick:
        args.learn, args.swaps, args.n = 15.0, 5, 1000
    return args


if __name__ == "__main__":
    sys.exit(benchlib.main("edge", measure, parse_args()))
