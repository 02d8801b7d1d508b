"""Built-in execution filters: turn a decided action into a safe one for the peer."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from runtime import hookimpl
from runtime.interfaces import StreamStep
from runtime.params import with_defaults


class Clip(StreamStep):
    """Clamp box actions to the action space's bounds; clamp discrete actions to 0..n-1."""

    def __init__(self, action_space: spaces.Space) -> None:
        self.output_space = action_space
        if isinstance(action_space, spaces.Discrete):
            self.low, self.high = action_space.start, action_space.start + action_space.n - 1
        else:
            self.low, self.high = action_space.low, action_space.high

    def __call__(self, action: np.ndarray, stream: bytes) -> np.ndarray:
        return np.clip(action, self.low, self.high).astype(action.dtype, copy=False)


def build_clip(params: dict[str, Any], action_space: spaces.Space) -> Clip:
    with_defaults("execution clip", params, {})
    return Clip(action_space)


@hookimpl
def agentrt_register_execution_filters() -> dict[str, Any]:
    return {"clip": build_clip}
