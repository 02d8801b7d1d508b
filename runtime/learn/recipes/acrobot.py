"""Produce the built-in Acrobot-v1 teacher: ``python -m runtime.learn.recipes.acrobot``.

Acrobot has no simple expert to imitate (swinging a two-link arm up takes pumping energy through
the elbow at the right phase), so this teacher is learned from rewards. Procedure (deterministic
for a given seed; about 3 minutes of CPU time, torch pinned to one thread):

1. Double DQN (van Hasselt et al. 2016) with a 6-128-128-3 ReLU MLP of Q-values, Huber loss,
   Adam (lr 6e-4), gamma 0.99, a replay of the last 50,000 transitions, minibatches of 128, one
   gradient step per environment step after 1,000 steps, the target network copied every 250
   steps, epsilon-greedy exploration annealed from 1.0 to 0.05 over the first 12% of the run.
   A time-limit truncation is not a terminal state: its target still bootstraps.
2. Every ``EVAL_EVERY`` steps the greedy policy plays 10 episodes; the best network so far is kept
   (DQN's greedy return oscillates from one evaluation to the next).
3. Keep the result only if its greedy policy averages >= ``ACCEPT_RETURN`` over 100 fresh
   episodes (random actions: about -500, the time limit); write it as safetensors (atomically)
   with the architecture and the measured return in the file's metadata.

The network's outputs are Q-values, served as the teacher's logits: their softmax ranks actions by
expected return, and the gaps between them (about a unit of return) are small enough that soft
targets at a temperature carry the ranking of the other actions, not only the best one.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from runtime.learn.checkpoints import save_safetensors
from runtime.learn.imitation import evaluate, network_policy
from runtime.learn.nets import MLP, parameter_count
from runtime.learn.recipes import ASSETS
from runtime.wire.spaces import box, output_size

ENV_ID = "Acrobot-v1"
HIDDEN = [128, 128]
STEPS = 100_000
LEARNING_RATE = 6e-4
GAMMA = 0.99
BUFFER = 50_000
BATCH = 128
LEARNING_STARTS = 1_000
TARGET_EVERY = 250
EXPLORATION_FRACTION = 0.12
FINAL_EPSILON = 0.05
EVAL_EVERY = 10_000
EVAL_EPISODES = 100
EVAL_SEED = 99_000
ACCEPT_RETURN = -100.0
DEFAULT_OUTPUT = ASSETS / "acrobot_teacher.safetensors"


def train(seed: int = 0, steps: int = STEPS) -> tuple[MLP, float]:
    """Double DQN; returns the network whose greedy policy scored best in the periodic evaluations
    and that score (mean of 10 episodes)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    env = gym.make(ENV_ID)
    env.action_space.seed(seed)
    observation_shape = box(env.observation_space).shape
    actions = output_size(env.action_space)
    net = MLP(observation_shape, actions, HIDDEN)
    target = copy.deepcopy(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    states = np.zeros((BUFFER, *observation_shape), dtype=np.float32)
    next_states = np.zeros_like(states)
    chosen = np.zeros(BUFFER, dtype=np.int64)
    rewards = np.zeros(BUFFER, dtype=np.float32)
    terminal = np.zeros(BUFFER, dtype=np.float32)
    best, best_return = copy.deepcopy(net), -np.inf
    obs, _ = env.reset(seed=seed)
    for step in range(steps):
        epsilon = max(FINAL_EPSILON, 1.0 - (1.0 - FINAL_EPSILON) * step / (EXPLORATION_FRACTION * steps))
        if rng.random() < epsilon:
            action = int(rng.integers(actions))
        else:
            with torch.no_grad():
                action = int(net(torch.as_tensor(obs[None])).argmax())
        next_obs, reward, terminated, truncated, _ = env.step(action)
        slot = step % BUFFER
        states[slot], next_states[slot], chosen[slot] = obs, next_obs, action
        rewards[slot], terminal[slot] = reward, float(terminated)
        obs = env.reset()[0] if terminated or truncated else next_obs
        if step >= LEARNING_STARTS:
            index = torch.as_tensor(rng.integers(0, min(step + 1, BUFFER), BATCH))
            x, x_next = torch.as_tensor(states[index]), torch.as_tensor(next_states[index])
            with torch.no_grad():  # double DQN: the online network picks, the target network values
                best_next = net(x_next).argmax(dim=1, keepdim=True)
                bootstrap = target(x_next).gather(1, best_next).squeeze(1)
                y = torch.as_tensor(rewards[index]) + GAMMA * (1 - torch.as_tensor(terminal[index])) * bootstrap
            q = net(x).gather(1, torch.as_tensor(chosen[index])[:, None]).squeeze(1)
            loss = nn.functional.smooth_l1_loss(q, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if step % TARGET_EVERY == 0:
            target.load_state_dict(net.state_dict())
        if (step + 1) % EVAL_EVERY == 0:
            score = evaluate(ENV_ID, network_policy(net), episodes=10, seed=seed + 50_000 + step)
            if score > best_return:
                best, best_return = copy.deepcopy(net), score
            print(json.dumps({"step": step + 1, "epsilon": round(epsilon, 3), "greedy_return": score}), flush=True)
    env.close()
    return best, float(best_return)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    started = time.monotonic()
    net, _ = train(args.seed, args.steps)
    mean_return = evaluate(ENV_ID, network_policy(net), EVAL_EPISODES, EVAL_SEED)
    report = {"mean_return": round(mean_return, 1), "seconds": round(time.monotonic() - started, 1)}
    if mean_return < ACCEPT_RETURN:
        print(json.dumps({"error": f"teacher below {ACCEPT_RETURN} mean return", **report}))
        return 1
    metadata = {
        **net.architecture(),
        "env": ENV_ID,
        "outputs": "q_values",
        "mean_return": f"{mean_return:.1f}",
        "eval_episodes": str(EVAL_EPISODES),
        "eval_seed": str(EVAL_SEED),
        "seed": str(args.seed),
        "steps": str(args.steps),
        "procedure": "runtime/learn/recipes/acrobot.py",
    }
    save_safetensors(net.state_dict(), args.output, metadata)
    print(json.dumps({"written": str(args.output), **report, "parameters": parameter_count(net)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
