"""Produce the built-in Pendulum-v1 teacher: ``python -m runtime.learn.recipes.pendulum``.

Procedure (deterministic for a given seed: same weights and metadata on every run; about 40 s of
CPU time, torch pinned to one thread, so two cores are enough):

1. Expert: an energy-based swing-up controller with an LQR stabiliser near the top.

   Pendulum-v1 (g = 10, m = l = 1, dt = 0.05, torque limit 2) integrates
   ``w' = w + (15 sin(th) + 3 u) dt`` then ``th' = th + w' dt``, with ``th = 0`` upright and
   observations ``(cos th, sin th, w)``. Along its continuous-time flow the quantity
   ``E = w^2 / 2 + 15 (cos th - 1)`` obeys ``dE/dt = 3 u w``; it is 0 at rest upright and on the
   unforced swing that just reaches the top (the homoclinic orbit), and -30 at rest hanging down.

   * swing-up (``cos th <= 0.8``): pump energy towards the upright level,
     ``u = clip(k_E (0 - E) w, -2, 2)`` with ``k_E = 0.5``; energy is added while it is short of
     the upright level and removed when it overshoots. The torque alone (3 u <= 6 < 15) cannot
     lift the pendulum directly, hence the pumping.
   * stabiliser (``cos th > 0.8``, ``|th| < 0.64 rad``): ``u = clip(-(K_th th + K_w w), -2, 2)``
     with the discrete-time LQR gains of the linearised step (``A = [[1 + 15 dt^2, dt],
     [15 dt, 1]]``, ``B = [[3 dt^2], [3 dt]]``) for the environment's own cost weights
     ``Q = diag(1, 0.1)``, ``R = 0.001``: ``K = (19.69, 5.26)``, computed by ``lqr_gains`` from
     the Riccati recursion.

   It averages -142 over seeds 0-99 and -163 over the evaluation seeds 99000-99099 (random
   torques: about -1190; zero torque: about -1200). Returns are always <= 0; a start near the
   top costs almost nothing, the worst starts (hanging down, nearly at rest) need a few swings
   and cost about -350.
2. Imitation with DAgger (Ross et al. 2011): roll out the current network (the expert on the
   first round), label every visited state with the expert's torque, aggregate, and retrain a
   3-256-256-1 ReLU MLP (about 67k parameters) with mean squared error. The dataset also holds
   states drawn uniformly over the whole state space (angle in [-pi, pi), speed in [-8, 8]),
   labelled by the expert, because the teacher must label whatever states a young student
   drives the pendulum into, not only those near the expert's own trajectories. The output is
   the torque itself, unbounded: the runtime clips it to the action space.
3. Keep the result only if it is within 10% of the expert on the same 100 fresh episodes
   (seed 0 gives -164.0 against the expert's -163.0).
   Returns are negative, so "within 10%" means ``teacher_return >= 1.1 * expert_return`` (a cost
   at most 10% higher than the expert's). Write it as safetensors (atomically) with the
   architecture and the measured returns in the file's metadata.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from runtime.learn.checkpoints import save_safetensors
from runtime.learn.imitation import dagger, evaluate, network_policy
from runtime.learn.nets import MLP, parameter_count
from runtime.learn.recipes import ASSETS

ENV_ID = "Pendulum-v1"
DT = 0.05
GRAVITY_TERM = 15.0  # 3 g / (2 l)
TORQUE_TERM = 3.0  # 3 / (m l^2)
MAX_TORQUE = 2.0
MAX_SPEED = 8.0
ENERGY_GAIN = 0.5  # k_E of the swing-up law
SWITCH_COS = 0.8  # stabilise with LQR where cos(theta) > SWITCH_COS
LQR_Q = np.diag([1.0, 0.1])  # the environment's cost: theta^2 + 0.1 w^2 + 0.001 u^2
LQR_R = 0.001
HIDDEN = [256, 256]
EVAL_EPISODES = 100
EVAL_SEED = 99_000
DEFAULT_OUTPUT = ASSETS / "pendulum_teacher.safetensors"


def lqr_gains(q: np.ndarray = LQR_Q, r: float = LQR_R) -> np.ndarray:
    """Discrete-time LQR gains (K_theta, K_omega) for the upright linearisation of one env step."""
    a = np.array([[1.0 + GRAVITY_TERM * DT * DT, DT], [GRAVITY_TERM * DT, 1.0]])
    b = np.array([[TORQUE_TERM * DT * DT], [TORQUE_TERM * DT]])
    p = q.copy()
    for _ in range(5000):  # Riccati recursion; converges in a few hundred steps
        k = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p = q + a.T @ p @ (a - b @ k)
    return k[0]


LQR_GAINS = lqr_gains()


def expert_action(observations: np.ndarray) -> np.ndarray:
    """The expert's torques (B, 1) for observations (B, 3) = (cos theta, sin theta, theta dot)."""
    observations = np.asarray(observations, dtype=np.float64)
    cos, sin, speed = observations[:, 0], observations[:, 1], observations[:, 2]
    angle = np.arctan2(sin, cos)
    energy = 0.5 * speed**2 + GRAVITY_TERM * (cos - 1.0)
    swing_up = ENERGY_GAIN * (0.0 - energy) * speed
    stabilise = -(LQR_GAINS[0] * angle + LQR_GAINS[1] * speed)
    torque = np.where(cos > SWITCH_COS, stabilise, swing_up)
    return np.clip(torque, -MAX_TORQUE, MAX_TORQUE)[:, None].astype(np.float32)


def uniform_states(rng: np.random.Generator, count: int) -> np.ndarray:
    angle = rng.uniform(-np.pi, np.pi, count)
    speed = rng.uniform(-MAX_SPEED, MAX_SPEED, count)
    return np.stack([np.cos(angle), np.sin(angle), speed], axis=1).astype(np.float32)


def train(seed: int = 0) -> MLP:
    rng = np.random.default_rng(seed)
    return dagger(
        ENV_ID,
        expert_action,
        HIDDEN,
        seed,
        rounds=6,
        episodes_per_round=20,
        steps_per_round=2000,
        initial_states=uniform_states(rng, 20_000),
        final_lr_rounds=2,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    started = time.monotonic()
    net = train(args.seed)
    expert_return = evaluate(ENV_ID, expert_action, EVAL_EPISODES, EVAL_SEED)
    teacher_return = evaluate(ENV_ID, network_policy(net), EVAL_EPISODES, EVAL_SEED)
    # Returns are costs (<= 0): within 10% of the expert means at most 10% more cost.
    threshold = 1.1 * expert_return
    report = {
        "expert_mean_return": round(expert_return, 1),
        "teacher_mean_return": round(teacher_return, 1),
        "threshold": round(threshold, 1),
        "seconds": round(time.monotonic() - started, 1),
    }
    if teacher_return < threshold:
        print(json.dumps({"error": "teacher not within 10% of the expert", **report}))
        return 1
    metadata = {
        **net.architecture(),
        "env": ENV_ID,
        "mean_return": f"{teacher_return:.1f}",
        "expert_mean_return": f"{expert_return:.1f}",
        "eval_episodes": str(EVAL_EPISODES),
        "eval_seed": str(EVAL_SEED),
        "seed": str(args.seed),
        "lqr_gains": json.dumps([round(float(g), 4) for g in LQR_GAINS]),
        "energy_gain": str(ENERGY_GAIN),
        "switch_cos": str(SWITCH_COS),
        "procedure": "runtime/learn/recipes/pendulum.py",
    }
    save_safetensors(net.state_dict(), args.output, metadata)
    print(json.dumps({"written": str(args.output), **report, "parameters": parameter_count(net)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
