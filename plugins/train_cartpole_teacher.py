"""Produce the built-in CartPole-v1 teacher: ``python -m plugins.train_cartpole_teacher``.

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
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from plugins.nets import MLP, parameter_count
from runtime.checkpoints import save_safetensors

EXPERT_GAINS = np.array([0.1, 0.5, 1.0, 0.5])
HIDDEN = [256, 256]
DEFAULT_OUTPUT = Path(__file__).parent / "assets" / "cartpole_teacher.safetensors"


def expert_action(observations: np.ndarray) -> np.ndarray:
    return (observations @ EXPERT_GAINS > 0).astype(np.int64)


def rollout(env: gym.Env, policy, episodes: int, seed: int) -> tuple[np.ndarray, list[float]]:
    states, returns = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            states.append(obs)
            obs, reward, terminated, truncated, _ = env.step(int(policy(obs[None])[0]))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return np.asarray(states, dtype=np.float32), returns


def network_policy(net: nn.Module):
    def act(observations: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(observations, dtype=torch.float32)).argmax(dim=1).numpy()
    return act


def train(seed: int = 0, rounds: int = 4, episodes_per_round: int = 10) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    env = gym.make("CartPole-v1")
    net = MLP((4,), 2, HIDDEN)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    dataset = np.zeros((0, 4), dtype=np.float32)
    policy = expert_action
    for round_index in range(rounds):
        states, returns = rollout(env, policy, episodes_per_round, seed=seed + 1000 * round_index)
        dataset = np.concatenate([dataset, states])
        x = torch.as_tensor(dataset)
        y = torch.as_tensor(expert_action(dataset))
        for _ in range(1500):
            index = torch.randint(0, len(x), (256,))
            loss = nn.functional.cross_entropy(net(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(json.dumps({"round": round_index, "samples": len(dataset), "rollout_mean_return": float(np.mean(returns)),
                          "loss": round(loss.item(), 5)}))
        policy = network_policy(net)
    _, returns = rollout(env, policy, 100, seed=seed + 99_000)
    return net, float(np.mean(returns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    net, mean_return = train(args.seed)
    if mean_return < 490:
        print(json.dumps({"error": "teacher below 490 mean return", "mean_return": mean_return}))
        return 1
    metadata = {"architecture": "mlp", "input_shape": json.dumps([4]), "output_size": "2",
                "hidden": json.dumps(HIDDEN), "activation": "relu", "env": "CartPole-v1",
                "mean_return_100": f"{mean_return:.1f}", "seed": str(args.seed),
                "procedure": "plugins/train_cartpole_teacher.py"}
    save_safetensors(net.state_dict(), args.output, metadata)
    print(json.dumps({"written": str(args.output), "mean_return": mean_return, "parameters": parameter_count(net)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
