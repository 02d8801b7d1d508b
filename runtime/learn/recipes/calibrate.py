"""Calibrate a discrete teacher checkpoint: ``python -m runtime.learn.recipes.calibrate PATH [--write]``.

Fits the teacher's temperature against a noisy expert on its own trajectories (the method is in
``runtime.learn.calibration``), on ``--fit-episodes`` episodes from ``--seed``, and reports, on as
many other episodes (from ``--seed + 10000``), the entropy and the smaller-action probability
percentiles of ``softmax(logits / T)`` at T = 1, at T = 2 (soft_target's default before
calibration) and at the fitted temperature. ``--write`` stores the temperature in the file's
metadata (key ``temperature``, with how it was fitted), rewriting it atomically; the checkpoint
teacher then offers it to the strategies as its calibrated temperature. Prints one JSON object.

The shipped CartPole teacher was calibrated with the defaults:
``python -m runtime.learn.recipes.calibrate plugins/assets/cartpole_teacher.safetensors --write``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from runtime.learn.calibration import (
    PERCENTILES,
    TEMPERATURE_KEY,
    TEMPERATURE_RANGE,
    cross_entropy,
    fit_temperature,
    noisy_expert_targets,
    softened_percentiles,
    teacher_trajectories,
)
from runtime.learn.checkpoints import load_safetensors, save_safetensors
from runtime.learn.imitation import network_policy
from runtime.learn.nets import MLP

REPORT_SEED_OFFSET = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a checkpoint-teacher safetensors file (MLP.architecture format)")
    parser.add_argument("--env", default=None, help="Gymnasium id (default: the file's 'env' metadata)")
    parser.add_argument("--fit-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=32, help="perturbed copies per state")
    parser.add_argument("--noise-steps", type=float, default=0.5, help="perturbation, in one-step standard deviations")
    parser.add_argument("--write", action="store_true", help="store the fitted temperature in the file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    state, metadata = load_safetensors(args.path)
    net = MLP.from_architecture(metadata)
    net.load_state_dict(state)
    teacher = network_policy(net.eval())
    env_id = args.env or metadata.get("env")
    if env_id is None:
        parser.error(f"{args.path} names no env in its metadata; give --env")
    with gym.make(env_id) as env:
        if not isinstance(env.action_space, spaces.Discrete):
            parser.error(
                f"{env_id} has {type(env.action_space).__name__} actions: only a discrete teacher has a softmax"
            )
        actions = int(env.action_space.n)
    fitted = teacher_trajectories(env_id, teacher, args.fit_episodes, args.seed)
    targets = noisy_expert_targets(teacher, fitted, actions, args.draws, args.noise_steps, args.seed)
    logits = teacher(fitted.observations)
    temperature = fit_temperature(logits, targets)
    report = teacher(
        teacher_trajectories(env_id, teacher, args.fit_episodes, args.seed + REPORT_SEED_OFFSET).observations
    )
    result = {
        "path": str(args.path),
        "env": env_id,
        "temperature": round(temperature, 3),
        "previous_temperature": metadata.get(TEMPERATURE_KEY),
        # At the range's edge the targets carry no preference the logits could be scaled to.
        "at_bound": not TEMPERATURE_RANGE[0] * 1.01 < temperature < TEMPERATURE_RANGE[1] * 0.99,
        "fit_states": len(logits),
        "fit_cross_entropy": {
            "T=2": round(cross_entropy(logits, targets, 2.0), 4),
            "fitted": round(cross_entropy(logits, targets, temperature), 4),
            "uniform": round(float(np.log(actions)), 4),
        },
        "report_states": len(report),
        "percentiles": list(PERCENTILES),
        "report": {
            name: softened_percentiles(report, value)
            for name, value in (("T=1", 1.0), ("T=2", 2.0), ("fitted", temperature))
        },
    }
    if args.write and result["at_bound"]:
        parser.error(f"the fitted temperature {temperature:.3g} is at the edge of {TEMPERATURE_RANGE}: not written")
    if args.write:
        calibration = (
            f"noisy expert: {args.draws} draws of {args.noise_steps} one-step std per state, "
            f"{args.fit_episodes} episodes from seed {args.seed}; runtime/learn/recipes/calibrate.py"
        )
        save_safetensors(
            state, args.path, {**metadata, TEMPERATURE_KEY: f"{temperature:.3f}", "calibration": calibration}
        )
        result["written"] = str(args.path)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
