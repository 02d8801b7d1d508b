"""Produce the built-in pixel teacher for MountainCar: ``python -m runtime.learn.recipes.mountaincar_cnn``.

The teacher the GPU is for (issue 13, item 5): a CNN that reads only pixels, the last two frames of
``agentrt/MountainCarFrames-v0`` (runtime/peer/envs.py), about 270 000 parameters (1 MB), where the
students that learn from it are convolutional nets of a few thousand (examples/mountaincar_cnn.toml).

Procedure (deterministic for a given seed; a few minutes on one CPU core):

1. Labels: the built-in MountainCar teacher (``builtin:mountaincar``, an MLP on the state), asked
   about the state behind every frame pair the recipe visits (``unwrapped.state``).
2. DAgger (Ross et al. 2011), as for the state teachers (runtime/learn/imitation.py), but over
   frames: the first round rolls out the state teacher, the later ones the CNN; every visited frame
   pair is labelled and kept. The loss is cross-entropy to the state teacher's softmax (soft
   targets), so the CNN keeps its confidence: sure where the car moves fast, unsure at rest.
3. Keep the result only if it averages >= ``ACCEPT_RETURN`` over ``EVAL_EPISODES`` fresh episodes;
   write it as safetensors (atomically) with the architecture and the measured return in the metadata.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from runtime.learn.checkpoints import load_safetensors
from runtime.learn.imitation import Policy, evaluate, log_round, network_policy, save_if_accepted
from runtime.learn.nets import CNN, from_architecture
from runtime.learn.recipes import ASSETS

#: ``act(frames (H, W, 2), state (2,)) -> logits (1, 3)``: who drives while the recipe visits states.
Actor = Callable[[np.ndarray, np.ndarray], np.ndarray]

ENV_ID = "agentrt/MountainCarFrames-v0"
# Named by module, as a peer would: the learning layer does not import the peer SDK (runtime.peer).
MAKE_ID = f"runtime.peer.envs:{ENV_ID}"
STATE_TEACHER = "builtin:mountaincar"
CHANNELS = [16, 32, 64]
HIDDEN = [256]
ACCEPT_RETURN = -140.0
EVAL_EPISODES = 30
EVAL_SEED = 99_000
ROUNDS = 4
EPISODES_PER_ROUND = 12
STEPS_PER_ROUND = 600
BATCH = 128
DEFAULT_OUTPUT = ASSETS / "mountaincar_cnn_teacher.safetensors"


def state_teacher() -> Policy:
    """The built-in state teacher (``builtin:mountaincar``), as logits (B, 3) for states (B, 2)."""
    state, metadata = load_safetensors(ASSETS / "mountaincar_teacher.safetensors")
    net = from_architecture(metadata)
    net.load_state_dict(state)
    return network_policy(net.eval())


def build_net() -> CNN:
    """The pixel teacher's network: frames (H, W, 2) in 0-255, scaled inside (it reads raw observations)."""
    shape = gym.make(MAKE_ID).observation_space.shape
    assert shape is not None
    return CNN(shape, 3, CHANNELS, hidden=HIDDEN, scale=1 / 255)


def visit(act: Actor, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Roll out ``act``; the frame pairs seen, the states behind them, each episode's return."""
    env = gym.make(MAKE_ID)
    frames, states, returns = [], [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            state = np.asarray(env.unwrapped.state, dtype=np.float32)  # type: ignore[attr-defined]
            frames.append(observation)
            states.append(state)
            observation, reward, terminated, truncated, _ = env.step(int(np.argmax(act(observation, state))))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return np.asarray(frames, dtype=np.float32), np.asarray(states), returns


def train(seed: int) -> CNN:
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # deterministic reductions; more threads only contend on a small machine
    teacher = state_teacher()
    net = build_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    frames = np.zeros((0, *net.input_shape), dtype=np.float32)
    targets = np.zeros((0, 3), dtype=np.float32)
    student = network_policy(net)

    def expert(_frames: np.ndarray, state: np.ndarray) -> np.ndarray:
        return teacher(state[None])

    def pixels(observation: np.ndarray, _state: np.ndarray) -> np.ndarray:
        return student(observation[None])

    act: Actor = expert
    for round_index in range(ROUNDS):
        seen, states, returns = visit(act, EPISODES_PER_ROUND, seed + 1000 * round_index)
        frames = np.concatenate([frames, seen])
        targets = np.concatenate([targets, torch.softmax(torch.as_tensor(teacher(states)), dim=1).numpy()])
        x, y = torch.as_tensor(frames), torch.as_tensor(targets)
        for _ in range(STEPS_PER_ROUND):
            index = torch.randint(0, len(x), (BATCH,))
            loss = -(y[index] * torch.log_softmax(net(x[index]), dim=1)).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        log_round(round_index, len(frames), returns, loss.item())
        act = pixels
    return net


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    net = train(args.seed).eval()
    mean_return = evaluate(MAKE_ID, network_policy(net), EVAL_EPISODES, EVAL_SEED)
    report = {"mean_return": round(mean_return, 1)}
    metadata = {
        "env": ENV_ID,
        "mean_return": f"{mean_return:.1f}",
        "state_teacher": STATE_TEACHER,
        "eval_episodes": str(EVAL_EPISODES),
        "eval_seed": str(EVAL_SEED),
        "seed": str(args.seed),
        "procedure": "runtime/learn/recipes/mountaincar_cnn.py",
    }
    return save_if_accepted(net, args.output, report, ACCEPT_RETURN, metadata)


if __name__ == "__main__":
    raise SystemExit(main())
