"""Produce the built-in InvertedDoublePendulum-v5 teacher (MuJoCo):
``python -m runtime.learn.recipes.inverted_double_pendulum``. Needs the ``mujoco`` extra.

A cart on a rail balancing two poles stacked end to end: nine observations (cart position, sines
and cosines of the two hinge angles, three velocities, a constraint force), one force in [-1, 1].
Harder than Pendulum-v1: the system is unstable in two modes at once, and a wrong push loses it
within a few steps (an episode ends when the top of the second pole drops below 1 m).

Procedure (deterministic for a given seed; about two minutes of CPU time, torch on one thread):

1. Expert: a linear-quadratic regulator for the upright equilibrium. The environment step (five
   RK4 steps of 0.01 s, the force held) is linearised by central differences of MuJoCo's own
   simulation around the upright rest state, ``x' = A x + B u`` over the state
   ``x = (cart, angle 1, angle 2, their velocities)``; the gains ``K`` come from the discrete
   Riccati recursion with ``Q = diag(1, 10, 10, 0.1, 0.1, 0.1)`` and ``R = 1``, and the expert
   pushes ``u = clip(-K x, -1, 1)``, reading the angles back from their sines and cosines. It
   balances to the 1,000-step limit from every start we tried: 9,360 per episode (random: ~50).
2. Imitation with DAgger, as for Pendulum (runtime/learn/imitation.py): a 9-256-256-1 ReLU MLP,
   mean squared error on the expert's force; the output is the force itself, unbounded (the
   runtime clips it to the action space).
3. Keep the result only if it is within 5% of the expert on the same 20 fresh episodes; write it
   as safetensors (atomically) with the architecture, the gains and the returns in the metadata.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import cache
from pathlib import Path

import gymnasium as gym
import numpy as np

from runtime.learn.checkpoints import save_safetensors
from runtime.learn.imitation import dagger, evaluate, network_policy
from runtime.learn.nets import parameter_count
from runtime.learn.recipes import ASSETS

ENV_ID = "InvertedDoublePendulum-v5"
LQR_Q = np.diag([1.0, 10.0, 10.0, 0.1, 0.1, 0.1])
LQR_R = np.array([[1.0]])
HIDDEN = [256, 256]
EVAL_EPISODES = 20
EVAL_SEED = 99_000
DEFAULT_OUTPUT = ASSETS / "inverted_double_pendulum_teacher.safetensors"


def linearised_step() -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of one environment step around the upright rest state, by central differences."""
    import mujoco

    env = gym.make(ENV_ID)
    model = env.unwrapped.model  # type: ignore[attr-defined]
    frame_skip = env.unwrapped.frame_skip  # type: ignore[attr-defined]
    env.close()
    data = mujoco.MjData(model)
    nq = model.nq

    def step(state: np.ndarray, force: float) -> np.ndarray:
        data.qpos[:], data.qvel[:], data.ctrl[:] = state[:nq], state[nq:], force
        mujoco.mj_forward(model, data)
        for _ in range(frame_skip):
            mujoco.mj_step(model, data)
        return np.concatenate([data.qpos, data.qvel])

    size, eps = 2 * nq, 1e-5
    a = np.stack([(step(e * eps, 0.0) - step(-e * eps, 0.0)) / (2 * eps) for e in np.eye(size)], axis=1)
    b = ((step(np.zeros(size), eps) - step(np.zeros(size), -eps)) / (2 * eps))[:, None]
    return a, b


@cache
def lqr_gains() -> np.ndarray:
    """Discrete-time LQR gains (1, 6) for the linearised step; the Riccati recursion converges in a
    few hundred iterations."""
    a, b = linearised_step()
    p = LQR_Q.copy()
    for _ in range(3000):
        k = np.linalg.solve(LQR_R + b.T @ p @ b, b.T @ p @ a)
        p = LQR_Q + a.T @ p @ (a - b @ k)
    return k


def expert_action(observations: np.ndarray) -> np.ndarray:
    """The expert's forces (B, 1) for observations (B, 9)."""
    observations = np.asarray(observations, dtype=np.float64)
    angles = np.arctan2(observations[:, 1:3], observations[:, 3:5])
    state = np.concatenate([observations[:, :1], angles, observations[:, 5:8]], axis=1)
    return np.clip(-(state @ lqr_gains().T), -1.0, 1.0).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    started = time.monotonic()
    net = dagger(ENV_ID, expert_action, HIDDEN, args.seed, rounds=5, episodes_per_round=4, steps_per_round=2000)
    expert_return = evaluate(ENV_ID, expert_action, EVAL_EPISODES, EVAL_SEED)
    teacher_return = evaluate(ENV_ID, network_policy(net), EVAL_EPISODES, EVAL_SEED)
    report = {
        "expert_mean_return": round(expert_return, 1),
        "teacher_mean_return": round(teacher_return, 1),
        "seconds": round(time.monotonic() - started, 1),
    }
    if teacher_return < 0.95 * expert_return:
        print(json.dumps({"error": "teacher not within 5% of the expert", **report}))
        return 1
    metadata = {
        **net.architecture(),
        "env": ENV_ID,
        "mean_return": f"{teacher_return:.1f}",
        "expert_mean_return": f"{expert_return:.1f}",
        "eval_episodes": str(EVAL_EPISODES),
        "eval_seed": str(EVAL_SEED),
        "seed": str(args.seed),
        "lqr_gains": json.dumps([round(float(g), 4) for g in lqr_gains()[0]]),
        "procedure": "runtime/learn/recipes/inverted_double_pendulum.py",
    }
    save_safetensors(net.state_dict(), args.output, metadata)
    print(json.dumps({"written": str(args.output), **report, "parameters": parameter_count(net)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
