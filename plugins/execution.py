"""Built-in execution filters: turn a decided action into a safe one for the peer.

Pick by what the peer can take:

* ``clip``: always (the default): keeps actions inside the action space, whoever decided them.
* ``rate_limit``: box actions driving something that must not jump (motors, steering): bounds the
  change between a stream's consecutive actions. List it after ``clip``: then the action and the
  remembered previous one are both in bounds, and so is every action between them.

No torch here: the execution process loads this module and runs these filters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from runtime import hookimpl
from runtime.plugin.interfaces import StreamStep
from runtime.plugin.params import Param, and_, box_space, declare, gt, invalid, list_of, number, or_, positive_int
from runtime.plugin.streams import StreamState
from runtime.wire.spaces import box


class Clip(StreamStep):
    """Clamp box actions to the action space's bounds; clamp discrete actions to 0..n-1."""

    def __init__(self, action_space: spaces.Space) -> None:
        self.output_space = action_space
        if isinstance(action_space, spaces.Discrete):
            self.low, self.high = action_space.start, action_space.start + action_space.n - 1
        else:
            space = box(action_space)
            self.low, self.high = space.low, space.high

    def __call__(self, action: np.ndarray, stream: bytes) -> np.ndarray:
        return np.clip(action, self.low, self.high).astype(action.dtype, copy=False)


@declare("execution clip")
def build_clip(params: dict[str, Any], action_space: spaces.Space) -> Clip:
    """Clamp actions into the action space (the default filter)."""
    return Clip(action_space)


class RateLimit(StreamStep):
    """Each action component moves at most ``max_delta`` from the stream's previous action.

    The first action of a stream (and the first after ``reset``) passes unchanged. The previous
    action is the one sent, after limiting, so a far target is approached in steps of ``max_delta``.
    At most ``max_streams`` streams are remembered; the least recently used one is forgotten.
    """

    def __init__(self, action_space: spaces.Box, max_delta: np.ndarray, max_streams: int) -> None:
        self.output_space = action_space
        self.max_delta = max_delta
        self.previous: StreamState[np.ndarray] = StreamState(max_streams)

    def __call__(self, action: np.ndarray, stream: bytes) -> np.ndarray:
        previous = self.previous.get(stream)
        if previous is not None:
            action = np.clip(action, previous - self.max_delta, previous + self.max_delta).astype(
                action.dtype, copy=False
            )
        self.previous.put(stream, np.array(action, copy=True))
        return action

    def reset(self, stream: bytes) -> None:
        self.previous.forget(stream)


_POSITIVE = and_(number, gt(0))


@declare(
    "execution rate_limit",
    max_delta=Param(
        None,
        "largest change per step (required): one number, or one per action dimension",
        or_(_POSITIVE, list_of(_POSITIVE)),
    ),
    max_streams=Param(1024, "streams remembered; the least recently used is forgotten beyond that", positive_int),
)
def build_rate_limit(params: dict[str, Any], action_space: spaces.Space) -> RateLimit:
    """Bound the change between a stream's consecutive box actions (list it after ``clip``)."""
    component = "execution rate_limit"
    space = box_space(component, action_space, "a box action space (discrete actions have no rate to limit)")
    try:
        max_delta = np.broadcast_to(np.asarray(params["max_delta"], dtype=np.float64), space.shape).copy()
    except ValueError:
        raise invalid(
            component,
            "max_delta",
            f"one number, or a list broadcastable to shape {list(space.shape)}",
            params["max_delta"],
        ) from None
    if np.issubdtype(space.dtype, np.integer):
        # Integer actions move in whole steps: a fractional bound would be truncated towards zero
        # when cast back, which can overshoot the limit; a limit below 1 would freeze the action.
        max_delta = np.floor(max_delta)
        if (max_delta < 1).any():
            raise invalid(component, "max_delta", "at least 1 for an integer action space", params["max_delta"])
    return RateLimit(space, max_delta, params["max_streams"])


@hookimpl
def agentrt_register_execution_filters() -> dict[str, Any]:
    return {"clip": build_clip, "rate_limit": build_rate_limit}
