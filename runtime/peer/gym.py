"""Gymnasium environments as peers: ``agentrt attach gym ENV_ID``. Each environment is one peer
with its own session; all of them step in lockstep so the runtime can decide for them in one batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import gymnasium
import numpy as np

from runtime.peer import ClientKeys, Peer, results
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
    # Observations sent again unanswered (``Peer.resend_s``; edge peers wait for no answer): the
    # runtime counts each copy it gets as an observation.
    resends: int = 0
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
            "resends": self.resends,
            **edge,
        }


class Episodes:
    """What both runners keep per environment: its observation, return, length and teacher steps,
    and what happens when an episode ends (a result, ``on_episode``, a reset with the next seed).
    Of the episodes that end, the first ``episodes`` are results: environments stepped side by side
    can end more in their last step."""

    def __init__(
        self,
        envs: list[gymnasium.Env],
        seed: int,
        summary: AttachSummary,
        on_episode: Callable[[EpisodeResult], None] | None,
        episodes: int,
    ) -> None:
        self.envs, self.summary, self.on_episode, self.episodes = envs, summary, on_episode, episodes
        count = len(envs)
        self.observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
        self.returns, self.lengths, self.teacher_steps = [0.0] * count, [0] * count, [0] * count
        self.rewards = [0.0] * count  # the reward for each environment's last action
        self.next_seed = seed + count

    def starting(self, i: int) -> bool:
        return self.lengths[i] == 0

    def step(self, i: int, action: np.ndarray, by_teacher: bool, student_version: int) -> None:
        """Step environment ``i`` with ``action``; record the step, and the episode if it ended."""
        env = self.envs[i]
        self.observations[i], reward, terminated, truncated, _ = env.step(_to_env_action(action, env))
        self.rewards[i] = float(reward)
        self.returns[i] += self.rewards[i]
        self.lengths[i] += 1
        self.teacher_steps[i] += by_teacher
        self.summary.steps += 1
        self.summary.by_teacher += by_teacher
        self.summary.by_student += not by_teacher
        if terminated or truncated:
            result = EpisodeResult(i, self.returns[i], self.lengths[i], self.teacher_steps[i], student_version)
            if len(self.summary.episodes) < self.episodes:
                self.summary.episodes.append(result)
                if self.on_episode:
                    self.on_episode(result)
            self.observations[i] = env.reset(seed=self.next_seed)[0]
            self.next_seed += 1
            self.returns[i], self.lengths[i], self.teacher_steps[i] = 0.0, 0, 0


def _play(
    clients: Sequence[Peer | EdgePeer],
    envs: list[gymnasium.Env],
    summary: AttachSummary,
    episodes: int,
    seed: int,
    wait_s: float,
    on_episode: Callable[[EpisodeResult], None] | None,
    should_stop: Callable[[], bool] | None,
    step_all: Callable[[Episodes], None],
    step_hz: float | None = None,
) -> AttachSummary:
    """Connect ``clients``, call ``step_all`` (every environment one step) until ``episodes``
    episodes have finished or ``should_stop``, ``step_hz`` times a second at most; close everything."""
    started = time.monotonic()
    try:
        for client in clients:
            client.connect(wait_s=wait_s)
        state = Episodes(envs, seed, summary, on_episode, episodes)
        period = 1.0 / step_hz if step_hz else 0.0
        next_step = time.monotonic()
        while len(summary.episodes) < episodes and not (should_stop and should_stop()):
            if period:  # a control loop's rate, as a robot's
                next_step += period
                time.sleep(max(0.0, next_step - time.monotonic()))
            step_all(state)
    finally:
        for client in clients:
            client.close()
        for env in envs:
            env.close()
        summary.duration_s = time.monotonic() - started
    return summary


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

    def step_all(state: Episodes) -> None:
        # Every observation first, then every answer: the runtime decides for all of them in one batch.
        for i, client in enumerate(clients):
            client.submit(
                state.observations[i], reward=state.rewards[i], episode_start=state.starting(i), policy=policy
            )
        for i, answer in enumerate(results(clients)):
            state.step(i, answer.action, answer.decided_by == "teacher", answer.student_version)

    summary = AttachSummary(env_id)
    try:
        return _play(clients, envs, summary, episodes, seed, wait_s, on_episode, should_stop, step_all)
    finally:
        summary.resends = sum(client.resends for client in clients)


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
    student (``EdgePeer``), asking for labels as ``query`` chooses, each peer with a copy of it (None:
    none, the student alone).
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
            query=replace(query, seed=query.seed + i) if query else None,  # a budget of its own
            transitions=transitions,
            curve=curve,
            seed=seed + i,
        )
        for i, env in enumerate(envs)
    ]

    def step_all(state: Episodes) -> None:
        for i, client in enumerate(clients):
            action = client.act(state.observations[i], reward=state.rewards[i], episode_start=state.starting(i))
            state.step(i, np.asarray(action), False, client.version)

    summary = AttachSummary(env_id, edge=[client.stats for client in clients])
    return _play(clients, envs, summary, episodes, seed, wait_s, on_episode, should_stop, step_all, step_hz)
