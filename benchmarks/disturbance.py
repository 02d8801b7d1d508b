#!/usr/bin/env python3
"""Other peers' throughput while one peer sends poison observations, and while the teacher is stopped.

What is measured
----------------
A private daemon with the built-in configuration (the teacher acts and labels: the default query
policy, not the student-only path of ``throughput.py``) serves ``--peers`` CartPole-v1 peers of the
SDK in ``--clients`` client processes, as ``agentrt attach gym`` plays them. Phases of
``--seconds`` each, in this order:

1. **baseline**
2. **poison**: one more peer, in its own process, sends observations that are inside CartPole's
   declared space but huge (velocities of 3e38: finite, so the gateway passes them). The built-in
   student's output for them is not finite and the built-in teacher's neither, so each one costs
   the student, the query policy and a teacher request, and is answered with ``UNAVAILABLE``. The
   poison peer sends the next as soon as it has the answer to the last.
3. **baseline**
4. **teacher stopped**: the teacher process is stopped (SIGSTOP) for the phase, then continued
   (SIGCONT); the next phase starts once decision reports the teacher available again.
5. **baseline**

``ratio_poison`` and ``ratio_teacher_stopped`` = the good peers' decisions/s in that phase ÷ the
mean of the two baselines around it (issue 12 asks for ≥ 0.8). An untimed warm-up phase comes
first: the student learns fastest at the start, and the less it needs the teacher, the faster the
peers go. Each phase also reports the share of the good peers' decisions the teacher made, decision's
``teacher_timeouts`` and ``teacher_unavailable`` (observations the student decided because the
teacher was marked unavailable): the poison must not cost the others their teacher.

Every process started here (daemon and roles, clients, the poison peer) is stopped by pid in a
``finally``, also on Ctrl-C and SIGTERM; a stopped teacher is continued first. ``--quick``: 3 s phases.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from typing import Any

import benchlib

POISON_VELOCITY = 3e38  # finite float32, inside CartPole's unbounded velocity bounds
TEACHER_BACK_TIMEOUT_S = 60.0


def poison_peer(command: dict[str, Any]) -> dict[str, Any]:
    """A worker's command: one peer sending poison observations for ``seconds``, in lockstep."""
    import gymnasium
    import numpy as np

    from runtime.peer import Peer
    from runtime.peer.sdk import PeerError

    env = gymnasium.make(benchlib.ENV_ID)
    peer = Peer(command["endpoint"], env.observation_space, env.action_space, name="poison")
    poison = np.array([0.0, POISON_VELOCITY, 0.0, -POISON_VELOCITY], dtype=np.float32)
    answers: dict[str, int] = {}
    try:
        peer.connect(wait_s=60.0)
        deadline = time.monotonic() + command["seconds"]
        while time.monotonic() < deadline:
            try:
                answer = peer.act(poison)
                outcome = f"action by {answer.decided_by}"
            except PeerError as exc:
                outcome = f"error {exc.code}"
            answers[outcome] = answers.get(outcome, 0) + 1
    finally:
        peer.close()
        env.close()
    return {"poison": answers}


def handle(command: dict[str, Any]) -> Any:
    if command["op"] == "poison":
        return poison_peer(command)
    return benchlib.play_gym_peers(command)


def worker(index: int, commands: Any, results: Any) -> None:
    benchlib.worker_loop(index, commands, results, handle)


def teacher_available(daemon: Any) -> bool:
    decision = daemon.status()["roles"]["decision"]
    return bool(decision.get("gauges", {}).get("teacher_available", True)) and decision.get("state") == "running"


def run_phase(
    name: str, workers: benchlib.Workers, daemon: Any, args: argparse.Namespace, poison: bool
) -> dict[str, Any]:
    per_client = [args.peers // args.clients + (1 if i < args.peers % args.clients else 0) for i in range(args.clients)]
    for i, peers in enumerate(per_client):
        workers.send(
            i,
            {
                "op": "play",
                "endpoint": daemon.endpoint,
                "peers": peers,
                "policy": "auto",
                "seconds": args.seconds,
                "seed": 100 * i,
            },
        )
    if poison:
        workers.send(args.clients, {"op": "poison", "endpoint": daemon.endpoint, "seconds": args.seconds})
    before = daemon.status()
    results = workers.collect(args.clients + int(poison), args.seconds + 120)
    after = daemon.status()
    played = [r for r in results if "steps" in r]
    steps = sum(r["steps"] for r in played)
    by_teacher = sum(r["by_teacher"] for r in played)
    seconds = max(r["seconds"] for r in played)
    row = {
        "phase": name,
        "per_s": round(steps / seconds, 1),
        "steps": steps,
        "teacher_share": round(by_teacher / steps, 4) if steps else None,
        "errors": after["errors"]["total"] - before["errors"]["total"],
        "teacher_timeouts": benchlib.counter(after, "decision", "teacher_timeouts")
        - benchlib.counter(before, "decision", "teacher_timeouts"),
        "teacher_unavailable": benchlib.counter(after, "decision", "teacher_unavailable")
        - benchlib.counter(before, "decision", "teacher_unavailable"),
    }
    for r in results:
        if "poison" in r:
            row["poison_answers"] = r["poison"]
    benchlib.progress(f"{name}: {row['per_s']:,.0f} decisions/s, teacher decided {row['teacher_share']:.1%}")
    return row


@contextlib.contextmanager
def teacher_stopped(daemon: Any) -> Any:
    pid = daemon.status()["roles"]["teacher"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):  # the daemon may have killed it as unresponsive
            os.kill(pid, signal.SIGCONT)


def wait_teacher_back(daemon: Any) -> float:
    started = time.monotonic()
    while not teacher_available(daemon):
        if time.monotonic() - started > TEACHER_BACK_TIMEOUT_S:
            raise TimeoutError(f"decision did not report the teacher available within {TEACHER_BACK_TIMEOUT_S:g} s")
        time.sleep(0.2)
    return time.monotonic() - started


def measure(args: argparse.Namespace) -> dict[str, Any]:
    workers: benchlib.Workers | None = None
    rows = []
    try:
        with benchlib.private_daemon() as daemon:
            workers = benchlib.Workers(worker, args.clients + 1)
            # Untimed: the student learns fastest at first, and a faster student means fewer teacher waits.
            run_phase("warm-up", workers, daemon, args, poison=False)
            rows.append(run_phase("baseline", workers, daemon, args, poison=False))
            rows.append(run_phase("poison", workers, daemon, args, poison=True))
            rows.append(run_phase("baseline", workers, daemon, args, poison=False))
            with teacher_stopped(daemon):
                rows.append(run_phase("teacher stopped", workers, daemon, args, poison=False))
            back_s = wait_teacher_back(daemon)
            rows.append(run_phase("baseline", workers, daemon, args, poison=False))
            final = daemon.status()
    finally:
        if workers is not None:
            workers.stop()
    baselines = [row["per_s"] for row in rows if row["phase"] == "baseline"]
    summary: dict[str, Any] = {
        "seconds": args.seconds,
        "peers": args.peers,
        "phases": rows,
        "ratio_poison": round(rows[1]["per_s"] / ((baselines[0] + baselines[1]) / 2), 4),
        "ratio_teacher_stopped": round(rows[3]["per_s"] / ((baselines[1] + baselines[2]) / 2), 4),
        "teacher_timeouts_poison": rows[1]["teacher_timeouts"],
        "teacher_unavailable_poison": rows[1]["teacher_unavailable"],
        "teacher_back_s": round(back_s, 2),
        "teacher_restarts": final["roles"]["teacher"].get("restarts", 0),
        "dropped": benchlib.dropped(final),
    }
    print_table(rows)
    return summary


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="Good peers' decisions/s while one peer sends poison, and while the teacher is stopped")
    columns = (
        "phase",
        "decisions/s",
        "teacher decided",
        "errors",
        "teacher timeouts",
        "teacher unavailable",
        "poison answers",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("phase", "poison answers") else "right")
    for row in rows:
        table.add_row(
            row["phase"],
            f"{row['per_s']:,.1f}",
            f"{row['teacher_share']:.1%}",
            str(row["errors"]),
            str(row["teacher_timeouts"]),
            str(row["teacher_unavailable"]),
            ", ".join(f"{k}: {v}" for k, v in row.get("poison_answers", {}).items()),
        )
    benchlib.console().print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=8, help="good peers (default 8)")
    parser.add_argument("--clients", type=int, default=2, help="client processes the good peers share (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s phases")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 3.0
    if args.peers < 1 or not 1 <= args.clients <= args.peers or not args.seconds > 0:
        parser.error("--peers and --seconds must be positive, 1 <= --clients <= --peers")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    raise SystemExit(benchlib.main("disturbance", measure, arguments))
