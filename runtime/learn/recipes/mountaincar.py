"""Produce the built-in MountainCar-v0 teacher: ``python -m runtime.learn.recipes.mountaincar``.

Procedure (deterministic for a given seed, about a minute on one CPU core):

1. Expert: pump energy, push the way the car moves (right at rest). The car's engine is too weak
   to climb the hill directly; pushing along the velocity adds energy on every swing. It averages
   about -120 (the goal in about 120 steps; random actions never reach it: -200, the time limit).
   As logits (left, none, right): ``(-s, -|s| - 1, s)`` with ``s = VELOCITY_SCALE * velocity``, so
   the teacher is confident where the car moves fast and unsure near a turning point.
2. Imitation with DAgger (Ross et al. 2011), as for CartPole (runtime/learn/imitation.py): a
   2-64-64-3 ReLU MLP, cross-entropy on the expert's action.
3. Keep the result only if it averages >= ``ACCEPT_RETURN`` over 100 fresh episodes; write it
   as safetensors (atomically) with the architecture and the measured return in the metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from runtime.learn.imitation import dagger, evaluate, network_policy, save_if_accepted
from runtime.learn.recipes import ASSETS

ENV_ID = "MountainCar-v0"
VELOCITY_SCALE = 100.0  # velocities are at most 0.07: logits up to about +-7
HIDDEN = [64, 64]
ACCEPT_RETURN = -130.0
EVAL_EPISODES = 100
EVAL_SEED = 99_000
DEFAULT_OUTPUT = ASSETS / "mountaincar_teacher.safetensors"


def expert_logits(observations: np.ndarray) -> np.ndarray:
    """The expert as logits (B, 3) over (left, none, right) for observations (position, velocity)."""
    push = np.asarray(observations, dtype=np.float64)[:, 1] * VELOCITY_SCALE + 1e-6  # at rest: right
    return np.stack([-push, -np.abs(push) - 1.0, push], axis=1).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    net = dagger(ENV_ID, expert_logits, HIDDEN, args.seed, rounds=4, episodes_per_round=10, steps_per_round=1500)
    expert_return = evaluate(ENV_ID, expert_logits, EVAL_EPISODES, EVAL_SEED)
    mean_return = evaluate(ENV_ID, network_policy(net), EVAL_EPISODES, EVAL_SEED)
    report = {"mean_return": round(mean_return, 1), "expert_mean_return": round(expert_return, 1)}
    metadata = {
        "env": ENV_ID,
        "mean_return": f"{mean_return:.1f}",
        "expert_mean_return": f"{expert_return:.1f}",
        "eval_episodes": str(EVAL_EPISODES),
        "eval_seed": str(EVAL_SEED),
        "seed": str(args.seed),
        "procedure": "runtime/learn/recipes/mountaincar.py",
    }
    return save_if_accepted(net, args.output, report, ACCEPT_RETURN, metadata)


if __name__ == "__main__":
    raise SystemExit(main())
