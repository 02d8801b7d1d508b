#!/usr/bin/env python3
"""Distiller training speed while the runtime serves 8 peers, against a bare torch loop.

What is measured
----------------
A private daemon runs the built-in configuration with the ``share`` query policy (a quarter of
observations labelled, the teacher never acts) and ``distillation.cpu_share`` set to
``--cpu-share`` (default 1.0: a whole core, so that the figure is the training loop's own speed,
not the pacing cap; ``--cpu-share 0.5`` measures the shipped default, whose ceiling is then 0.5).
8 SDK peers (CartPole-v1) in one client process keep it busy.

Two kinds of window alternate, ``--rounds`` times, ``--seconds`` each, so that slow drifts of a
shared machine hit both alike:

* **distiller**: the peers send ``policy="auto"``: observations are labelled, the distiller trains
  continuously. Its steps/s come from the daemon's status counter ``train_steps`` (reported every
  ``daemon.stats_interval_s``, 0.25 s), its CPU time from psutil.
* **bare**: the peers send ``policy="student"`` (the same serving load, no labels: the distiller
  rests once its current cycle is trained) while a separate process runs a bare loop on the same
  model, batch and data: the configured student built as the distiller builds it
  (``runtime.learn.models.build_student``), Adam with the configured learning rate, the configured
  strategy's loss, minibatches of ``distillation.batch_size`` drawn at random from CartPole-v1
  observations labelled by the configured teacher; one thread, as the distiller. No replay
  buffer, no sockets, no pacing, no checks.

``ratio`` = distiller steps/s ÷ bare steps/s (issue 12: ≥ 0.8). ``ratio_per_cpu`` compares steps
per CPU second of the two processes, which takes the machine's contention out: what the
distiller's own bookkeeping costs per step. A bare loop on the idle runtime (before any load) is
reported too (``bare_idle_steps_per_s``).

Every process started here is stopped by pid in a ``finally``. ``--quick``: 1 round of 2 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import benchlib

LABEL_SHARE = 0.25
DATA_SAMPLES = 4096


def daemon_env(cpu_share: float) -> dict[str, str]:
    return {
        "AGENTRT_QUERY_POLICY": "share",
        "AGENTRT_QUERY_PARAMS": f"{{share = {LABEL_SHARE}}}",
        "AGENTRT_DISTILLATION_CPU_SHARE": str(cpu_share),
    }


# --------------------------------------------------------------------------------------------------
# The bare loop (a spawned process)
# --------------------------------------------------------------------------------------------------
class BareLoop:
    def __init__(self, cpu_share: float) -> None:
        import gymnasium
        import numpy as np
        import torch

        from runtime import config
        from runtime.config import Settings
        from runtime.learn.models import build_student, build_teacher
        from runtime.learn.trainer import Optimiser
        from runtime.plugin import pluginmanager
        from runtime.plugin.interfaces import StrategyInputs
        from runtime.wire.spaces import agent_spaces

        settings = Settings.of(config.load(path=None, environ=daemon_env(cpu_share)))
        distillation = settings.distillation
        torch.set_num_threads(distillation.torch_threads)
        plugins = pluginmanager.load(settings.plugins.table())
        observation_space, action_space = agent_spaces(settings.agent.table())
        self.torch, self.inputs_type = torch, StrategyInputs
        self.student = build_student(plugins, settings, observation_space, action_space)
        self.strategy = plugins.build("strategy", distillation.strategy, dict(distillation.params), action_space)
        self.optimiser = Optimiser(self.student, distillation.learning_rate, self.strategy).adam
        teacher = build_teacher(plugins, settings, observation_space, action_space)
        env = gymnasium.make(benchlib.ENV_ID)
        observations = []
        obs, _ = env.reset(seed=0)
        rng = np.random.default_rng(0)
        while len(observations) < DATA_SAMPLES:
            observations.append(obs)
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
            if terminated or truncated:
                obs, _ = env.reset()
        self.features = np.asarray(observations, dtype=np.float32)
        self.outputs = np.asarray(teacher.label(self.features), dtype=np.float32)
        self.batch_size = distillation.batch_size
        self.rng = rng

    def run(self, seconds: float) -> dict[str, float]:
        torch, student, strategy, adam = self.torch, self.student, self.strategy, self.optimiser
        steps = 0
        cpu_started = time.process_time()
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline:
            index = self.rng.integers(0, len(self.features), self.batch_size)
            features = torch.from_numpy(self.features[index])
            teacher = torch.from_numpy(self.outputs[index])
            outputs = student(features)
            loss = strategy.loss(
                self.inputs_type(
                    student_outputs=outputs,
                    teacher_outputs=teacher,
                    hard_labels=teacher.argmax(dim=1),
                    student_features=None,
                    teacher_features=None,
                    agreement=None,
                )
            )
            adam.zero_grad()
            loss.backward()
            adam.step()
            steps += 1
        elapsed = time.monotonic() - started
        return {"steps": steps, "seconds": elapsed, "cpu_s": time.process_time() - cpu_started}


_bare: list[BareLoop] = []


def bare_handle(command: dict[str, Any]) -> Any:
    if not _bare:
        _bare.append(BareLoop(command["cpu_share"]))
    if command["seconds"] <= 0:
        return {"ready": True}
    return _bare[0].run(command["seconds"])


def bare_worker(index: int, commands: Any, results: Any) -> None:
    benchlib.worker_loop(index, commands, results, bare_handle)


# --------------------------------------------------------------------------------------------------
# Peers (a spawned process)
# --------------------------------------------------------------------------------------------------
def peers_worker(index: int, commands: Any, results: Any) -> None:
    benchlib.worker_loop(index, commands, results, benchlib.play_gym_peers)


# --------------------------------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure(args: argparse.Namespace) -> dict[str, Any]:
    bare: benchlib.Workers | None = None
    peers: benchlib.Workers | None = None
    distiller_windows: list[dict[str, float]] = []
    bare_windows: list[dict[str, float]] = []
    try:
        bare = benchlib.Workers(bare_worker, 1)
        bare.send(0, {"cpu_share": args.cpu_share, "seconds": 0})  # builds model and data meanwhile
        with benchlib.private_daemon(daemon_env(args.cpu_share)) as daemon:
            peers = benchlib.Workers(peers_worker, 1)
            bare.collect(1, 120)
            bare.send(0, {"cpu_share": args.cpu_share, "seconds": 0.5})  # warm-up: torch's first steps are slow
            bare.collect(1, 60)
            bare.send(0, {"cpu_share": args.cpu_share, "seconds": args.seconds})
            (bare_idle,) = bare.collect(1, args.seconds + 60)
            benchlib.progress(f"bare loop, runtime idle: {bare_idle['steps'] / bare_idle['seconds']:.0f} steps/s")
            pid = daemon.status()["roles"]["distillation"]["pid"]

            def load(policy: str, seconds: float, seed: int) -> None:
                peers.send(
                    0, {"endpoint": daemon.endpoint, "peers": 8, "policy": policy, "seconds": seconds, "seed": seed}
                )

            # Labels first, until the distiller trains (it needs distillation.min_samples of them).
            for attempt in range(30):
                load("auto", 1.0, attempt)
                peers.collect(1, 60)
                if benchlib.counter(daemon.status(), "distillation", "train_steps") > 0:
                    break
            else:
                raise RuntimeError("the distiller did not start training within 30 s of labels")
            for round_ in range(args.rounds):
                settle = 0.5
                # distiller window: labels flow, the distiller trains
                load("auto", settle + args.seconds + 0.3, 10 + round_)
                time.sleep(settle)
                before, cpu_before, at = daemon.status(), cpu_s(pid), time.monotonic()
                time.sleep(args.seconds)
                after, cpu_after, until = daemon.status(), cpu_s(pid), time.monotonic()
                peers.collect(1, args.seconds + 60)
                steps = benchlib.counter(after, "distillation", "train_steps") - benchlib.counter(
                    before, "distillation", "train_steps"
                )
                distiller_windows.append({"steps": steps, "seconds": until - at, "cpu_s": cpu_after - cpu_before})
                # bare window: the same serving load without labels, the bare loop beside it
                load("student", settle + args.seconds + 0.3, 20 + round_)
                time.sleep(settle)
                bare.send(0, {"cpu_share": args.cpu_share, "seconds": args.seconds})
                (result,) = bare.collect(1, args.seconds + 60)
                bare_windows.append(result)
                peers.collect(1, args.seconds + 60)
                benchlib.progress(
                    f"round {round_ + 1}: distiller {steps / (until - at):.0f} steps/s, "
                    f"bare {result['steps'] / result['seconds']:.0f} steps/s"
                )
            final = daemon.status()
    finally:
        for workers in (peers, bare):
            if workers is not None:
                workers.stop()

    def rate(windows: list[dict[str, float]]) -> float:
        return sum(w["steps"] for w in windows) / sum(w["seconds"] for w in windows)

    def per_cpu(windows: list[dict[str, float]]) -> float | None:
        cpu = sum(w["cpu_s"] for w in windows)
        return sum(w["steps"] for w in windows) / cpu if cpu else None

    def cpu_share(windows: list[dict[str, float]]) -> float:
        return sum(w["cpu_s"] for w in windows) / sum(w["seconds"] for w in windows)

    distiller_rate, bare_rate = rate(distiller_windows), rate(bare_windows)
    distiller_cpu, bare_cpu = per_cpu(distiller_windows), per_cpu(bare_windows)
    idle_rate = bare_idle["steps"] / bare_idle["seconds"]
    r = benchlib.rounded
    summary: dict[str, Any] = {
        "cpu_share": args.cpu_share,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "distiller_steps_per_s": r(distiller_rate, 1),
        "bare_steps_per_s": r(bare_rate, 1),
        "bare_idle_steps_per_s": r(idle_rate, 1),
        "ratio": r(distiller_rate / bare_rate, 3) if bare_rate else None,
        "ratio_to_idle_bare": r(distiller_rate / idle_rate, 3) if idle_rate else None,
        "distiller_steps_per_cpu_s": r(distiller_cpu, 1),
        "bare_steps_per_cpu_s": r(bare_cpu, 1),
        "ratio_per_cpu": r(distiller_cpu / bare_cpu, 3) if distiller_cpu and bare_cpu else None,
        "distiller_cpu_share": r(cpu_share(distiller_windows), 3),
        "bare_cpu_share": r(cpu_share(bare_windows), 3),
        "distiller_windows": distiller_windows,
        "bare_windows": bare_windows,
        "labels": benchlib.counter(final, "distillation", "labels"),
        "train_steps_total": benchlib.counter(final, "distillation", "train_steps"),
        "teacher_decisions": final["decisions"]["by_teacher"],
    }
    print_table(summary)
    return summary


def print_table(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title=f"training steps/s, distiller serving 8 peers vs bare torch loop "
        f"(cpu_share {summary['cpu_share']:g}, {summary['rounds']}×{summary['seconds']:g} s)"
    )
    for column in ("loop", "steps/s", "steps per CPU s", "CPU share of a core"):
        table.add_column(column, justify="right")
    table.add_row(
        "distiller (runtime, 8 peers, labels)",
        f"{summary['distiller_steps_per_s']:.0f}",
        f"{summary['distiller_steps_per_cpu_s'] or 0:.0f}",
        f"{summary['distiller_cpu_share']:.2f}",
    )
    table.add_row(
        "bare loop (same 8 peers served, no labels)",
        f"{summary['bare_steps_per_s']:.0f}",
        f"{summary['bare_steps_per_cpu_s'] or 0:.0f}",
        f"{summary['bare_cpu_share']:.2f}",
    )
    table.add_row("bare loop (runtime idle)", f"{summary['bare_idle_steps_per_s']:.0f}", "", "")
    table.add_row(
        "distiller ÷ bare",
        f"{summary['ratio']:.3f}×" if summary["ratio"] is not None else "-",
        f"{summary['ratio_per_cpu']:.3f}×" if summary["ratio_per_cpu"] is not None else "-",
        "",
    )
    benchlib.console().print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Distiller steps/s serving 8 peers vs a bare torch loop.")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per window (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="distiller/bare alternations (default 2)")
    parser.add_argument("--cpu-share", type=float, default=1.0, help="distillation.cpu_share (default 1.0)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    if not 0 < args.cpu_share <= 1:
        parser.error("--cpu-share must be in (0, 1]")
    return args


if __name__ == "__main__":
    sys.exit(benchlib.main("distiller", measure, parse_args()))
