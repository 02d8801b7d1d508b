"""DAgger (Ross et al. 2011) from a scripted expert into a torch network: how the built-in teachers
are produced (runtime/learn/recipes/). Discrete actions are learned with cross-entropy on the
expert's choice, box actions with mean squared error on the expert's action."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from runtime.learn.checkpoints import save_safetensors
from runtime.learn.nets import CNN, MLP, parameter_count
from runtime.wire.spaces import actions_from_outputs, box, output_size

Policy = Callable[[np.ndarray], np.ndarray]  # observations (B, ...) -> outputs (B, output_size)


def rollout(env: gym.Env, policy: Policy, episodes: int, seed: int) -> tuple[np.ndarray, list[float]]:
    """Run ``policy`` for whole episodes; return the visited states and each episode's return."""
    discrete = isinstance(env.action_space, spaces.Discrete)
    states, returns = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            states.append(obs)
            action = actions_from_outputs(np.asarray(policy(obs[None])), env.action_space)[0]
            obs, reward, terminated, truncated, _ = env.step(int(action) if discrete else action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return np.asarray(states, dtype=np.float32), returns


def network_policy(net: nn.Module) -> Policy:
    def act(observations: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(observations, dtype=torch.float32)).numpy()

    return act


def evaluate(env_id: str, policy: Policy, episodes: int, seed: int) -> float:
    env = gym.make(env_id)
    try:
        return float(np.mean(rollout(env, policy, episodes, seed)[1]))
    finally:
        env.close()


def dagger(
    env_id: str,
    expert: Policy,
    hidden: list[int],
    seed: int,
    rounds: int,
    episodes_per_round: int,
    steps_per_round: int,
    initial_states: np.ndarray | None = None,
    final_lr_rounds: int = 0,
) -> MLP:
    """Roll out the current network (the expert on the first round), label every visited state with
    the expert, aggregate, retrain; ``initial_states`` seed the dataset with states the expert's own
    trajectories would never visit; the last ``final_lr_rounds`` rounds take finer steps."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # deterministic reductions; more threads only contend on a small machine
    env = gym.make(env_id)
    discrete = isinstance(env.action_space, spaces.Discrete)
    observation_shape = box(env.observation_space).shape
    net = MLP(observation_shape, output_size(env.action_space), hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    dataset = np.zeros((0, *observation_shape), dtype=np.float32) if initial_states is None else initial_states
    policy = expert
    for round_index in range(rounds):
        states, returns = rollout(env, policy, episodes_per_round, seed=seed + 1000 * round_index)
        dataset = np.concatenate([dataset, states])
        x = torch.as_tensor(dataset)
        targets = expert(dataset)
        y = torch.as_tensor(targets.argmax(axis=1) if discrete else targets)
        for group in optimizer.param_groups:
            group["lr"] = 3e-4 if round_index >= rounds - final_lr_rounds else 1e-3
        for _ in range(steps_per_round):
            index = torch.randint(0, len(x), (256,))
            outputs = net(x[index])
            loss = (
                nn.functional.cross_entropy(outputs, y[index])
                if discrete
                else nn.functional.mse_loss(outputs, y[index])
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        log_round(round_index, len(dataset), returns, loss.item())
        policy = network_policy(net)
    env.close()
    return net


def log_round(round_index: int, samples: int, returns: list[float], loss: float) -> None:
    """One DAgger round's progress, as a JSON line."""
    print(
        json.dumps(
            {
                "round": round_index,
                "samples": samples,
                "rollout_mean_return": round(float(np.mean(returns)), 1),
                "loss": round(loss, 5),
            }
        ),
        flush=True,
    )


def save_if_accepted(
    net: MLP | CNN, output: Path, report: dict[str, Any], accept_return: float, metadata: dict[str, str]
) -> int:
    """A recipe's last step: write ``net`` as safetensors (its architecture and ``metadata`` in the
    file) if ``report["mean_return"]`` reaches ``accept_return``; print the outcome; the exit code."""
    if report["mean_return"] < accept_return:
        print(json.dumps({"error": f"teacher below {accept_return} mean return", **report}))
        return 1
    save_safetensors(net.state_dict(), output, {**net.architecture(), **metadata})
    print(json.dumps({"written": str(output), **report, "parameters": parameter_count(net)}))
    return 0
