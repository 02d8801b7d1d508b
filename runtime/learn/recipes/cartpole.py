"""Produce the built-in CartPole-v1 teacher: ``python -m runtime.learn.recipes.cartpole``.

Procedure (deterministic for a given seed, about 20 s on one CPU core):

1. Expert: a linear state-feedback controller, push right when ``K · obs > 0`` with gains
   ``K = (0.1, 0.5, 1.0, 0.5)`` on (cart position, cart velocity, pole angle, pole angular
   velocity). It keeps the pole up for the full 500 steps from every start state we tried.
2. Imitation with DAgger (Ross et al. 2011): roll out the current network (the expert on the
   first round), label every visited state with the expert's action, aggregate, and retrain a
   4-256-256-2 ReLU MLP (about 67k parameters, 30x the default student) with cross-entropy.
   The network's logits are the teacher's outputs; their softmax is a graded confidence that
   distillation at a temperature can use, which the expert's hard decision could not give.
3. Keep the result only if it averages >= 490 over 100 fresh episodes; write it as safetensors
   (atomically) with the architecture and the measured return in the file's metadata.
4. Calibrate it (its logits are far too sure for soft targets): ``python -m
   runtime.learn.recipes.calibrate PATH --write`` stores its temperature in the file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from runtime.learn.checkpoints import save_safetensors
from runtime.learn.imitation import dagger, evaluate, network_policy
from runtime.learn.nets import parameter_count
from runtime.learn.recipes import ASSETS

ENV_ID = "CartPole-v1"
EXPERT_GAINS = np.array([0.1, 0.5, 1.0, 0.5])
HIDDEN = [256, 256]
DEFAULT_OUTPUT = ASSETS / "cartpole_teacher.safetensors"


def expert_logits(observations: np.ndarray) -> np.ndarray:
    """The expert as logits (B, 2): push right when ``K · obs > 0``."""
    push = np.asarray(observations, dtype=np.float64) @ EXPERT_GAINS
    return np.stack([-push, push], axis=1).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    net = dagger(ENV_ID, expert_logits, HIDDEN, args.seed, rounds=4, episodes_per_round=10, steps_per_round=1500)
    mean_return = evaluate(ENV_ID, network_policy(net), episodes=100, seed=args.seed + 99_000)
    if mean_return < 490:
        print(json.dumps({"error": "teacher below 490 mean return", "mean_return": mean_return}))
        return 1
    metadata = {
        **net.architecture(),
        "env": ENV_ID,
        "mean_return_100": f"{mean_return:.1f}",
        "seed": str(args.seed),
        "procedure": "runtime/learn/recipes/cartpole.py",
    }
    save_safetensors(net.state_dict(), args.output, metadata)
    print(json.dumps({"written": str(args.output), "mean_return": mean_return, "parameters": parameter_count(net)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
