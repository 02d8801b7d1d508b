#!/usr/bin/env python3
"""Float vs int8 vs pruned(0.5)+int8 students (``agentrt student compress``), on CartPole-v1 and
Pendulum-v1: bytes, per-decision latency, return of the student alone, agreement with the teacher.

What is measured
----------------
For each setup (CartPole-v1 with the default student, mlp [32], and with mlp [256, 256];
Pendulum-v1 with ``examples/pendulum.toml``, mlp [64, 64]) a private daemon learns from 4 gym
peers for ``--episodes`` episodes and is stopped; its serving version is the **float** student.
Then, on that stopped run directory, exactly as the command does (``runtime.learn.compress``):

* **int8**: ``--int8 --finetune-steps 0``: the float student quantized as it is;
* **pruned+int8**: ``--int8 --prune 0.5 --finetune-steps N`` (``--finetune-steps``, 3000) from the
  float version.

Each becomes a registry version through the promotion gate (``status``). For the three versions:

* ``bytes``: the checkpoint file (safetensors header and metadata included); ``weight_bytes``: its
  tensors alone; ``params``: nonzero parameters;
* ``latency_us``: median of one single-observation forward as decision runs it (``Decider.forward``:
  the numpy fast path where it applies), ``decision.torch_threads`` threads;
* ``agreement``: on the distiller's held-out set (teacher labels training never saw), as the
  gate measures it (share of equal choices; ``exp(-MSE)`` for Pendulum's torque);
* ``return``: the student alone (perception, ``Decider.forward``, actions clipped to the space),
  ``--eval-episodes`` episodes from fixed seeds; the teacher alone on the same seeds for reference.

Goal (issue 14): pruned+int8 passes the gate and keeps >= 0.95x the teacher's return at >= 4x
fewer bytes than the float student (``goal_met``). Both byte figures are reported: on a
226-parameter student the file's header (600-950 bytes of metadata) outweighs the weights,
hence the [256, 256] setup.

Every daemon is stopped by pid in a ``finally``; run directories are removed. ``--quick``: fewer
episodes (the figures are then those of a half-trained student).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SETUPS: list[dict[str, Any]] = [
    {"name": "cartpole-32", "env": "CartPole-v1", "config": None, "hidden": None},
    {"name": "cartpole-256x256", "env": "CartPole-v1", "config": None, "hidden": [256, 256]},
    {"name": "pendulum-64x64", "env": "Pendulum-v1", "config": ROOT / "examples" / "pendulum.toml", "hidden": None},
]
VARIANTS = ("float", "int8", "pruned+int8")


def train(setup: dict[str, Any], episodes: int) -> Path:
    """A run directory whose daemon learnt from gym peers for ``episodes`` episodes, then stopped."""
    from runtime.peer.gym import run_gym_peers
    from runtime.supervisor.launch import ChildDaemon

    env = {"AGENTRT_DAEMON_STATS_INTERVAL_S": "0.25"}
    if setup["hidden"]:
        env["AGENTRT_STUDENT_PARAMS"] = f"{{hidden = {setup['hidden']}}}"  # a TOML inline table
    daemon = ChildDaemon(config_path=setup["config"] and str(setup["config"]), env=env, defaults_only=True)
    try:
        daemon.wait_ready(benchlib.DAEMON_START_TIMEOUT_S)
        started = time.monotonic()
        run_gym_peers(daemon.endpoint, setup["env"], episodes=episodes, peers=4)
        daemon.wait_until(lambda s: s["student_version"] >= 1, what="a promoted student")
        benchlib.progress(f"{setup['name']}: trained {episodes} episodes in {time.monotonic() - started:.0f} s")
    finally:
        daemon.stop(remove_run_dir=False)
    return daemon.run_dir


def returns(policy: Any, env_id: str, episodes: int) -> list[float]:
    import gymnasium

    env = gymnasium.make(env_id)
    totals = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=50_000 + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        totals.append(total)
    return totals


def measure(run_dir: Path, setup: dict[str, Any], finetune_steps: int, eval_episodes: int) -> dict[str, Any]:
    import gymnasium
    import torch

    from runtime.config import Settings
    from runtime.learn.checkpoints import read_checkpoint
    from runtime.learn.compress import Compression, compress
    from runtime.learn.evaluation import teacher_policy_outputs
    from runtime.learn.loop import Decider
    from runtime.learn.models import build_teacher, perception_chain
    from runtime.learn.registry import Registry
    from runtime.plugin import pluginmanager
    from runtime.wire.spaces import actions_from_outputs, agent_spaces, output_size

    config = json.loads((run_dir / "config.json").read_text())
    registry = Registry(run_dir, readonly=True)
    float_version = registry.serving()
    registry.close()
    reports = {
        "int8": compress(config, Compression(int8=True), float_version),
        "pruned+int8": compress(config, Compression(True, 0.5, finetune_steps), float_version),
    }
    settings = Settings.of(config)
    plugins = pluginmanager.load(settings.plugins.table())
    observation_space, action_space = agent_spaces(settings.agent.table())
    chain = perception_chain(plugins, settings, observation_space)
    decider = Decider(plugins, settings, observation_space, action_space)
    torch.set_num_threads(settings.decision.torch_threads)
    registry = Registry(run_dir, readonly=True)
    versions = {"float": float_version, **{name: report["version"] for name, report in reports.items()}}
    rows: dict[str, Any] = {}
    for name, version in versions.items():
        record = registry.get(version)
        assert record is not None
        tensors, metadata = read_checkpoint(registry.file(record))
        decider.serve(version, tensors, metadata)

        def act(obs: np.ndarray) -> Any:
            features = chain(np.asarray(obs, dtype=np.float32), b"bench")
            return actions_from_outputs(decider.forward(features[None])[0], action_space)[0]

        # The float version's figures come with the first report, as the version it was made from.
        report, side, shape = (
            (reports["int8"], "original", "hidden_before")
            if name == "float"
            else (reports[name], "compressed", "hidden")
        )
        episode_returns = returns(act, setup["env"], eval_episodes)
        rows[name] = {
            "version": version,
            "status": record.status,
            "hidden": report["compression"][shape],
            **report[side],
            "return": float(np.mean(episode_returns)),
            "return_std": float(np.std(episode_returns)),
        }
    registry.close()
    teacher = build_teacher(plugins, settings, observation_space, action_space)

    def teacher_act(obs: np.ndarray) -> Any:
        outputs = teacher.label(np.asarray(obs, dtype=np.float32)[None])
        return actions_from_outputs(teacher_policy_outputs(outputs, width, discrete), action_space)[0]

    width, discrete = output_size(action_space), isinstance(action_space, gymnasium.spaces.Discrete)
    teacher_returns = returns(teacher_act, setup["env"], eval_episodes)
    teacher_return = float(np.mean(teacher_returns))
    compressed, original = rows["pruned+int8"], rows["float"]
    # Returns are negative on Pendulum: "keeps 0.95x" means losing at most 5% of the teacher's margin
    # over a return of 0 in either direction, i.e. return >= teacher - 0.05 * |teacher|.
    kept = compressed["return"] >= teacher_return - 0.05 * abs(teacher_return)
    return {
        "env": setup["env"],
        "teacher_return": teacher_return,
        "variants": rows,
        "bytes_ratio": original["bytes"] / compressed["bytes"],
        "weight_bytes_ratio": original["weight_bytes"] / compressed["weight_bytes"],
        "return_to_teacher": compressed["return"] / teacher_return,
        "goal_met": bool(kept and compressed["status"] == "promoted" and original["bytes"] / compressed["bytes"] >= 4),
    }


def table(results: dict[str, Any]) -> None:
    from rich.table import Table

    out = benchlib.console()
    grid = Table(
        "setup", "student", "hidden", "gate", "bytes", "weight bytes", "params", "µs/decision", "return", "agreement"
    )
    for setup, result in results.items():
        for name in VARIANTS:
            row = result["variants"][name]
            grid.add_row(
                setup,
                name,
                str(row["hidden"]),
                row["status"],
                str(row["bytes"]),
                str(row["weight_bytes"]),
                str(row["params"]),
                f"{row['latency_us']:.1f}",
                f"{row['return']:.1f}±{row['return_std']:.0f}",
                f"{row['agreement']:.3f}",
            )
        grid.add_row(setup, "teacher", "", "", "", "", "", "", f"{result['teacher_return']:.1f}", "", end_section=True)
    out.print(grid)


def run(args: argparse.Namespace) -> dict[str, Any]:
    episodes = {"CartPole-v1": 8 if args.quick else args.episodes, "Pendulum-v1": 8 if args.quick else args.episodes}
    results: dict[str, Any] = {}
    for setup in SETUPS:
        if args.only and setup["name"] not in args.only:
            continue
        run_dir = train(setup, episodes[setup["env"]])
        try:
            results[setup["name"]] = measure(run_dir, setup, args.finetune_steps, args.eval_episodes)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        benchlib.progress(f"{setup['name']}: measured")
    table(results)
    return {"setups": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60, help="training episodes per setup (4 peers)")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes each student plays alone")
    parser.add_argument("--finetune-steps", type=int, default=3000)
    parser.add_argument("--only", nargs="*", help="setups to run: " + ", ".join(s["name"] for s in SETUPS))
    parser.add_argument("--quick", action="store_true")
    return benchlib.main("compress", run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
