"""Built-in perception transforms: observation -> features."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from runtime import hookimpl
from runtime.interfaces import StreamStep
from runtime.params import with_defaults


class RunningNormalize(StreamStep):
    """Standardise features with a running mean and variance shared by all streams (Welford),
    clipped to ±``clip`` standard deviations; keeps learning while the agent runs."""

    def __init__(self, input_space: spaces.Space, clip: float, epsilon: float) -> None:
        shape = input_space.shape
        self.output_space = spaces.Box(-clip, clip, shape=shape, dtype=np.float32)
        self.count = 0
        self.mean = np.zeros(shape, dtype=np.float64)
        self.m2 = np.zeros(shape, dtype=np.float64)
        self.clip = clip
        self.epsilon = epsilon

    def __call__(self, features: np.ndarray, stream: bytes) -> np.ndarray:
        self.count += 1
        delta = features - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (features - self.mean)
        std = np.sqrt(self.m2 / max(self.count - 1, 1)) + self.epsilon
        return np.clip((features - self.mean) / std, -self.clip, self.clip).astype(np.float32)


def build_normalize(params: dict[str, Any], input_space: spaces.Space) -> RunningNormalize:
    options = with_defaults("perception normalize", params, {"clip": 5.0, "epsilon": 1e-8})
    if not isinstance(input_space, spaces.Box):
        raise ValueError("perception normalize needs a box observation space")
    return RunningNormalize(input_space, float(options["clip"]), float(options["epsilon"]))


@hookimpl
def agentrt_register_perception_transforms() -> dict[str, Any]:
    return {"normalize": build_normalize}
