"""Gymnasium environments whose observations carry more than one view of the world, for the
distillation examples (docs/distillation.md, *Tasks where the choice of states matters*).

The protocol's spaces are a Box or a Discrete (docs/protocol.md, Spaces): an observation that holds
two things, pixels for the student and the state for the teacher, or a task id and a task's
features, is one flat float32 Box whose parts lie at documented offsets. Perception's ``view``
transform and the ``view`` teacher (plugins/) each read their part, so the student and the teacher
see different things without any change to the wire.

Import this module to register the environments, or name it in the id, as Gymnasium allows:
``agentrt attach gym runtime.peer.envs:agentrt/MountainCarPixels-v0``.

* ``agentrt/MountainCarPixels-v0``: MountainCar-v0 whose observation is a ``PIXELS_HEIGHT`` x
  ``PIXELS_WIDTH`` grey image of the car on its hill (0-255, row-major, flattened) followed by the
  two state variables (position, velocity), ``PIXELS_HEIGHT * PIXELS_WIDTH + 2`` floats in all.
* ``agentrt/MountainCarFrames-v0``: MountainCar-v0 seen as pixels only, for a teacher that reads
  them (the built-in ``mountaincar_cnn`` CNN teacher): a ``(PIXELS_HEIGHT, PIXELS_WIDTH, 2)``
  image whose channels are the previous and the current frame (the same frame after a reset), so
  one observation shows which way the car moves.
* ``agentrt/MultiTaskCartPole-v0``, ``agentrt/MultiTaskAcrobot-v0``: CartPole-v1 and Acrobot-v1
  behind one shared observation and action space, so that one agent (one student) serves both:
  a one-hot task id (``MULTITASK_TASKS`` order) followed by the task's observation, zero-padded
  to the longest; actions are those of the task with the most, and an action a task does not
  have is taken as its last one.
* ``agentrt/MultiTask-v0``: every task of MULTITASK_TASKS in turn behind those shared spaces, one
  task per episode: a reset with a seed plays task ``seed % len(MULTITASK_TASKS)``, one without
  the next task in turn. ``info["task"]`` names the task being played (its Gymnasium id), so one
  peer (or a benchmark) drives both tasks.

Gymnasium and numpy only: peers never need torch.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from runtime.wire.spaces import box

PIXELS_HEIGHT, PIXELS_WIDTH = 24, 40
# The drawing: the valley's whole x range, [-1.2, 0.6], across the width, its height (sin 3x) down the
# image, the car a disc. At top speed (0.07 a step) the car moves about 1.4 px between frames; its
# edge is antialiased (pixel coverage), so slower moves still change intensities, and two stacked
# frames show which way it goes, the one thing the teacher's decision hangs on.
_X_LOW, _X_HIGH = -1.2, 0.6
_CAR_RADIUS = 1.8
_MARGIN = 2.5  # pixels kept free around the track, so the car stays whole in the picture
_ROWS, _COLS = np.mgrid[0:PIXELS_HEIGHT, 0:PIXELS_WIDTH].astype(np.float32) + 0.5  # pixel centres

MULTITASK_TASKS = ("CartPole-v1", "Acrobot-v1")


def render_mountaincar(state: np.ndarray) -> np.ndarray:
    """A (PIXELS_HEIGHT, PIXELS_WIDTH) float32 grey image, 0-255, of MountainCar's ``state``
    (position, velocity): a white disc where the car is on the hill."""
    position = float(state[0])
    col = _MARGIN + (position - _X_LOW) / (_X_HIGH - _X_LOW) * (PIXELS_WIDTH - 2 * _MARGIN)
    height = (np.sin(3 * position) + 1) / 2  # 0 at the valley's bottom, 1 at the top of the hills
    row = PIXELS_HEIGHT - _MARGIN - height * (PIXELS_HEIGHT - 2 * _MARGIN)
    distance = np.hypot(_COLS - col, _ROWS - row)
    return (255.0 * np.clip(_CAR_RADIUS + 0.5 - distance, 0.0, 1.0)).astype(np.float32)


class MountainCarPixels(gymnasium.ObservationWrapper):
    """MountainCar-v0 observed as pixels, then state: see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(gymnasium.make("MountainCar-v0", **kwargs))
        state_space = box(self.env.observation_space)
        pixels = PIXELS_HEIGHT * PIXELS_WIDTH
        self.observation_space = spaces.Box(
            np.concatenate([np.zeros(pixels), state_space.low]).astype(np.float32),
            np.concatenate([np.full(pixels, 255.0), state_space.high]).astype(np.float32),
            dtype=np.float32,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.concatenate([render_mountaincar(observation).ravel(), observation]).astype(np.float32)


class MountainCarFrames(gymnasium.Wrapper):
    """MountainCar-v0 observed as its last two frames: see the module docstring. The state stays
    readable as ``unwrapped.state``, for the recipe that labels frames by the state teacher."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(gymnasium.make("MountainCar-v0", **kwargs))
        self.observation_space = spaces.Box(0.0, 255.0, (PIXELS_HEIGHT, PIXELS_WIDTH, 2), dtype=np.float32)
        self.previous = np.zeros((PIXELS_HEIGHT, PIXELS_WIDTH), dtype=np.float32)

    def _observe(self, state: np.ndarray) -> np.ndarray:
        frame = render_mountaincar(state)
        frames = np.stack([self.previous, frame], axis=-1)
        self.previous = frame
        return frames

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        state, info = self.env.reset(**kwargs)
        self.previous = render_mountaincar(state)
        return self._observe(state), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        state, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(state), float(reward), terminated, truncated, info


def _multitask_space() -> tuple[spaces.Box, spaces.Discrete, list[int]]:
    """The shared observation space (bounds: the union over the tasks, zero padding included), the
    shared action space and each task's observation width."""
    task_spaces = []
    for env_id in MULTITASK_TASKS:
        env = gymnasium.make(env_id)
        action_space = env.action_space
        assert isinstance(action_space, spaces.Discrete)
        task_spaces.append((box(env.observation_space), action_space))
        env.close()
    widths = [int(np.prod(observation.shape)) for observation, _ in task_spaces]
    width = max(widths)
    low, high = np.zeros(width), np.zeros(width)
    for (observation, _), task_width in zip(task_spaces, widths, strict=True):
        low[:task_width] = np.minimum(low[:task_width], observation.low.ravel())
        high[:task_width] = np.maximum(high[:task_width], observation.high.ravel())
    tasks = len(MULTITASK_TASKS)
    observation_space = spaces.Box(
        np.concatenate([np.zeros(tasks), low]).astype(np.float32),
        np.concatenate([np.ones(tasks), high]).astype(np.float32),
        dtype=np.float32,
    )
    return observation_space, spaces.Discrete(max(int(action.n) for _, action in task_spaces)), widths


class MultiTask(gymnasium.Wrapper):
    """One of MULTITASK_TASKS behind the spaces all of them share: see the module docstring."""

    def __init__(self, task: str, **kwargs: Any) -> None:
        super().__init__(gymnasium.make(task, **kwargs))
        self.observation_space, self.action_space, widths = _multitask_space()
        self.task = MULTITASK_TASKS.index(task)
        task_actions = self.env.action_space
        assert isinstance(task_actions, spaces.Discrete)  # every task in MULTITASK_TASKS is
        self.task_actions = int(task_actions.n)
        self.prefix = np.eye(len(MULTITASK_TASKS), dtype=np.float32)[self.task]
        self.padding = np.zeros(max(widths) - widths[self.task], dtype=np.float32)

    def _observe(self, observation: np.ndarray) -> np.ndarray:
        return np.concatenate([self.prefix, np.ravel(observation), self.padding]).astype(np.float32)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        return self._observe(observation), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(min(int(action), self.task_actions - 1))
        return self._observe(observation), float(reward), terminated, truncated, info


class MultiTaskInTurn(gymnasium.Env):
    """Every task of MULTITASK_TASKS in turn, one per episode: see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        self.tasks = [MultiTask(task, **kwargs) for task in MULTITASK_TASKS]
        self.observation_space, self.action_space = self.tasks[0].observation_space, self.tasks[0].action_space
        self.current = len(self.tasks) - 1  # the first reset without a seed plays task 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self.current = (self.current + 1) % len(self.tasks) if seed is None else seed % len(self.tasks)
        observation, info = self.tasks[self.current].reset(seed=seed, options=options)
        return observation, {**info, "task": MULTITASK_TASKS[self.current]}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.tasks[self.current].step(action)
        return observation, reward, terminated, truncated, {**info, "task": MULTITASK_TASKS[self.current]}

    def close(self) -> None:
        for task in self.tasks:
            task.close()


gymnasium.register("agentrt/MountainCarPixels-v0", entry_point=f"{__name__}:MountainCarPixels")
gymnasium.register("agentrt/MountainCarFrames-v0", entry_point=f"{__name__}:MountainCarFrames")
for _task in MULTITASK_TASKS:
    gymnasium.register(
        f"agentrt/MultiTask{_task.split('-')[0]}-v0", entry_point=f"{__name__}:MultiTask", kwargs={"task": _task}
    )
gymnasium.register("agentrt/MultiTask-v0", entry_point=f"{__name__}:MultiTaskInTurn")
