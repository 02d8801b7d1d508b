"""Calibrating a discrete teacher: the temperature at which its softmax says how sure its decision is.

A teacher copied from a controller is certain of every action on its own states (logits of |60|:
at T = 2 the smaller action's median probability is 1e-12), so soft targets carry nothing that
hard labels do not. Its own argmax is trivially "right" on those states: fitting a temperature to
it would only make it sharper. We calibrate against a noisy expert instead, the teacher deciding
on a slightly uncertain state:

1. **States**: the teacher's own trajectories (``episodes`` episodes from ``seed``), and the
   typical change of each observation dimension over one environment step (its standard
   deviation), the resolution at which a once-per-step controller sees the state.
2. **Target**: per state, the share of ``draws`` perturbed copies (Gaussian, ``noise_steps``
   times that one-step standard deviation per dimension) on which the teacher picks each action:
   near its decision boundary the target is close to uniform, far from it one-hot.
3. **Temperature**: the ``T`` minimising the mean cross-entropy between those targets and
   ``softmax(logits / T)`` (one parameter, convex in ``1 / T``). The teacher's preferences keep
   their order; only their confidence is fitted.

The return structure was tried first and says nothing on these states: with paired rollouts (take
each action, then follow the teacher with 10-25% random actions for 100 steps), a good CartPole
teacher survives equally whatever its first action on 80-100% of its own states, and the fitted
temperature runs off to infinity (uniform targets).

``softened_percentiles`` reports what a temperature makes of the teacher on its own states:
entropy (nats) and the probability left to the actions it does not choose (for two actions, the
smaller action's probability).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from runtime.learn.evaluation import log_softmax

Logits = Callable[[np.ndarray], np.ndarray]  # observations (B, ...) -> logits (B, A)

#: The metadata key of a checkpoint's calibrated temperature (``MLP.architecture``'s file format).
TEMPERATURE_KEY = "temperature"
PERCENTILES = (10, 50, 90)


def stored_temperature(metadata: Mapping[str, str]) -> float | None:
    """A checkpoint's calibrated temperature, None if it has none; ValueError if it is not a
    positive, finite number."""
    if TEMPERATURE_KEY not in metadata:
        return None
    try:
        temperature = float(metadata[TEMPERATURE_KEY])
    except ValueError:
        temperature = float("nan")
    if not 0 < temperature < float("inf"):
        raise ValueError(f"{TEMPERATURE_KEY} {metadata[TEMPERATURE_KEY]!r} is not a positive number")
    return temperature


@dataclass(frozen=True)
class Trajectories:
    """The teacher's own states (N, ...) and the standard deviation of each dimension's one-step change."""

    observations: np.ndarray
    step_std: np.ndarray


def teacher_trajectories(env_id: str, teacher: Logits, episodes: int, seed: int) -> Trajectories:
    """The states of the teacher's own episodes (seeds ``seed``, ``seed + 1``, ...), acting greedily."""
    env = gym.make(env_id)
    states, steps = [], []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            episode_states, done = [obs], False
            while not done:
                obs, _, terminated, truncated, _ = env.step(int(np.argmax(teacher(obs[None])[0])))
                episode_states.append(obs)
                done = terminated or truncated
            visited = np.asarray(episode_states, dtype=np.float64)
            states.append(visited[:-1])
            steps.append(np.diff(visited, axis=0))
    finally:
        env.close()
    return Trajectories(np.concatenate(states).astype(np.float32), np.concatenate(steps).std(axis=0))


def noisy_expert_targets(
    teacher: Logits, trajectories: Trajectories, actions: int, draws: int, noise_steps: float, seed: int
) -> np.ndarray:
    """(N, actions): per state, the share of perturbed copies on which the teacher picks each action."""
    observations = trajectories.observations
    random = np.random.default_rng(seed)
    noise = random.normal(size=(len(observations), draws, *observations.shape[1:])) * trajectories.step_std
    perturbed = (observations[:, None] + noise_steps * noise).astype(np.float32)
    chosen = np.argmax(teacher(perturbed.reshape(-1, *observations.shape[1:])), axis=1).reshape(-1, draws)
    return np.stack([(chosen == action).mean(axis=1) for action in range(actions)], axis=1)


def cross_entropy(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of ``targets`` under ``softmax(logits / temperature)``."""
    return float(-(targets * log_softmax(np.asarray(logits, dtype=np.float64) / temperature)).sum(axis=1).mean())


#: The range ``fit_temperature`` searches; an answer at its top means uniform targets (T -> infinity).
TEMPERATURE_RANGE = (0.05, 1e4)


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, low: float = TEMPERATURE_RANGE[0], high: float = TEMPERATURE_RANGE[1]
) -> float:
    """The temperature in [low, high] minimising ``cross_entropy``: golden-section search on
    ``1 / T``, where the loss is convex (the softmax's log-partition is convex in the scale). An
    optimum beyond a bound returns (about) that bound."""
    a, b = 1.0 / high, 1.0 / low
    ratio = (5**0.5 - 1) / 2
    for _ in range(200):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if cross_entropy(logits, targets, 1 / c) <= cross_entropy(logits, targets, 1 / d):
            b = d
        else:
            a = c
    return 1.0 / ((a + b) / 2)


def softened_percentiles(logits: np.ndarray, temperature: float) -> dict[str, list[float]]:
    """Percentiles (10, 50, 90) of the entropy (nats) of ``softmax(logits / temperature)`` and of
    the probability it leaves to the actions other than the most likely one."""
    log_probs = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    probabilities = np.exp(log_probs)
    entropy = -(probabilities * log_probs).sum(axis=1)
    others = 1.0 - probabilities.max(axis=1)
    return {
        "entropy": [float(v) for v in np.percentile(entropy, PERCENTILES)],
        "others": [float(v) for v in np.percentile(others, PERCENTILES)],
    }
