"""Gymnasium environments as peers: ``agentrt attach gym ENV_ID``. Each environment is one peer
with its own session; all of them step in lockstep so the runtime can decide for them in one batch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium
import numpy as np

from runtime.peer import ClientKeys, Peer
from runtime.peer.edge import EdgePeer, EdgeQuery, EdgeStats


@dataclass
class EpisodeResult:
    peer: int
    episode_return: float
    steps: int
    by_teacher: int
    student_version: int


@dataclass
class AttachSummary:
    env_id: str
    episodes: list[EpisodeResult] = field(default_factory=list)
    steps: int = 0
    by_student: int = 0
    by_teacher: int = 0
    duration_s: float = 0.0
    edge: list[EdgeStats] = field(default_factory=list)  # each edge peer's, in edge mode

    def as_dict(self) -> dict:
        returns = [e.episode_return for e in self.episodes]
        edge = {}
        if self.edge:
            latencies = [us for stats in self.edge for us in stats.decision_us]
            edge = {
                "edge": {
                    "labels_sent": sum(s.labels_sent for s in self.edge),
                    "transitions_sent": sum(s.transitions_sent for s in self.edge),
                    "versions": sorted({v for s in self.edge for v in s.versions}),
                    "decision_us_p50": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
                }
            }
        return {
            "env": self.env_id,
            "episodes": len(self.episodes),
            "steps": self.steps,
            "mean_return": float(np.mean(returns)) if returns else None,
            "returns": returns,
            "decided_by_student": self.by_student,
            "decided_by_teacher": self.by_teacher,
            "duration_s": round(self.duration_s, 3),
            **edge,
        }


def run_gym_peers(
    endpoint: str,
    env_id: str,
    episodes: int,
    peers: int = 1,
    policy: str = "auto",
    seed: int = 0,
    wait_s: float = 60.0,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    curve: ClientKeys | None = None,
) -> AttachSummary:
    """Run ``peers`` environments against the runtime until ``episodes`` episodes have finished."""
    envs = [gymnasium.make(env_id) for _ in range(peers)]
    clients = [
        Peer(endpoint, env.observation_space, env.action_space, name=f"{env_id}#{i}", curve=curve)
        for i, env in enumerate(envs)
    ]
    summary = AttachSummary(env_id)
    started = time.monotonic()
    try:
        for client in clients:
            client.connect(wait_s=wait_s)
        observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
        returns, lengths, teacher_steps = [0.0] * peers, [0] * peers, [0] * peers
        rewards = [0.0] * peers
        next_seed = seed + peers
        while len(summary.episodes) < episodes and not (should_stop and should_stop()):
            for i, (client, obs) in enumerate(zip(clients, observations, strict=True)):
                client.submit(obs, reward=rewards[i], episode_start=lengths[i] == 0, policy=policy)
            for i, (client, env) in enumerate(zip(clients, envs, strict=True)):
                answer = client.result()
                observations[i], reward, terminated, truncated, _ = env.step(_to_env_action(answer.action, env))
                rewards[i] = float(reward)
                returns[i] += rewards[i]
                lengths[i] += 1
                teacher = answer.decided_by == "teacher"
                teacher_steps[i] += teacher
                summary.steps += 1
                summary.by_teacher += teacher
                summary.by_student += not teacher
                if terminated or truncated:
                    result = EpisodeResult(i, returns[i], lengths[i], teacher_steps[i], answer.student_version)
                    summary.episodes.append(result)
                    if on_episode:
                        on_episode(result)
                    observations[i] = env.reset(seed=next_seed)[0]
                    next_seed += 1
                    returns[i], lengths[i], teacher_steps[i] = 0.0, 0, 0
    finally:
        for client in clients:
            client.close()
        for env in envs:
            env.close()
        summary.duration_s = time.monotonic() - started
    summary.episodes = summary.episodes[:episodes] if len(summary.episodes) > episodes else summary.episodes
    return summary


def _to_env_action(action: np.ndarray, env: gymnasium.Env):
    return int(action) if isinstance(env.action_space, gymnasium.spaces.Discrete) else action


def run_edge_gym_peers(
    endpoint: str,
    env_id: str,
    episodes: int,
    peers: int = 1,
    seed: int = 0,
    wait_s: float = 60.0,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    curve: ClientKeys | None = None,
    query: EdgeQuery | None = None,
    transitions: float = 0.0,
    format: str = "safetensors+json",
    step_hz: float | None = None,
) -> AttachSummary:
    """``run_gym_peers`` in the edge mode: each environment's peer acts with its own copy of the
    student (``EdgePeer``), asking for labels as ``query`` chooses (None: none, the student alone).
    ``step_hz``: the control loop's rate, as a robot's (every environment steps once per period);
    None: as fast as the environments go."""
    envs = [gymnasium.make(env_id) for _ in range(peers)]
    clients = [
        EdgePeer(
            endpoint,
            env.observation_space,
            env.action_space,
            name=f"{env_id}#edge{i}",
            format=format,
            query=query,
            transitions=transitions,
            curve=curve,
            seed=seed + i,
        )
        for i, env in enumerate(envs)
    ]
    summary = AttachSummary(env_id, edge=[client.stats for client in clients])
    started = time.monotonic()
    try:
        for client in clients:
            client.connect(wait_s=wait_s)
        observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
        returns, lengths, rewards = [0.0] * peers, [0] * peers, [0.0] * peers
        next_seed = seed + peers
        period = 1.0 / step_hz if step_hz else 0.0
        next_step = time.monotonic()
        while len(summary.episodes) < episodes and not (should_stop and should_stop()):
            if period:
                next_step += period
                time.sleep(max(0.0, next_step - time.monotonic()))
            for i, (client, env) in enumerate(zip(clients, envs, strict=True)):
                action = client.act(observations[i], reward=rewards[i], episode_start=lengths[i] == 0)
                observations[i], reward, terminated, truncated, _ = env.step(_to_env_action(np.asarray(action), env))
                rewards[i] = float(reward)
                returns[i] += rewards[i]
                lengths[i] += 1
                summary.steps += 1
                summary.by_student += 1
                if terminated or truncated:
                    result = EpisodeResult(i, returns[i], lengths[i], 0, client.version)
                    summary.episodes.append(result)
                    if on_episode:
                        on_episode(result)
                    observations[i] = env.reset(seed=next_seed)[0]
                    next_seed += 1
                    returns[i], lengths[i] = 0.0, 0
    finally:
        for client in clients:
            client.close()
        for env in envs:
            env.close()
        summary.duration_s = time.monotonic() - started
    summary.episodes = summary.episodes[:episodes]
    return summary
