"""Observation and action spaces: the wire form (docs/protocol.md, Spaces), Gymnasium spaces, checks.

The wire form is a map: ``{"type": "box", "shape": [...], "dtype": "float32", "low": <array>, "high": <array>}``
or ``{"type": "discrete", "n": <uint>}``. Low and high travel as protocol arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from runtime.errors import ConfigError, ProtocolError
from runtime.wire.protocol import ARRAY_DTYPES, ErrorCode, array_nbytes, decode_array, encode_array, quote

#: Any Gymnasium space; only Box and Discrete travel on the wire, and the helpers below refuse others.
Space = spaces.Space[Any]


def box(space: Space) -> spaces.Box:
    """``space`` as a Box; a TypeError names any space other than Box or Discrete."""
    if isinstance(space, spaces.Box):
        return space
    raise TypeError(f"space {space} is not supported here; use Box or Discrete")


def shape_of(space: Space) -> tuple[int, ...]:
    """``space.shape``; a TypeError names a space without one (only Box and Discrete travel on the wire)."""
    if space.shape is None:
        raise TypeError(f"space {space} has no shape; use Box or Discrete")
    return space.shape


def to_wire(space: Space) -> dict[str, Any]:
    if isinstance(space, spaces.Discrete):
        # `start` only when it is not 0: the form every peer written before it existed still matches.
        return {"type": "discrete", "n": int(space.n), **({"start": int(space.start)} if space.start else {})}
    space = box(space)
    return {
        "type": "box",
        "shape": list(space.shape),
        "dtype": space.dtype.name,
        "low": encode_array(space.low),
        "high": encode_array(space.high),
    }


def from_wire(data: Mapping[str, Any], what: str = "space", max_elements: int | None = None) -> Space:
    """Build a Gymnasium space from its wire form (or the same form written in TOML with plain lists).

    Raises ValueError for a bad description. ``max_elements`` bounds a box's size, so that a peer's
    hello cannot make the runtime allocate huge bound arrays.
    """
    kind = data.get("type")
    if kind == "discrete":
        n, start = data.get("n"), data.get("start", 0)
        if type(n) is not int or not 1 <= n <= np.iinfo(np.int64).max:
            raise ValueError(f"{what}: discrete space needs a positive integer n (at most 2**63-1)")
        if type(start) is not int or not np.iinfo(np.int64).min <= start <= np.iinfo(np.int64).max - n:
            raise ValueError(f"{what}: discrete space needs an integer start with start + n within int64")
        return spaces.Discrete(n, start=start)
    if kind == "box":
        shape = data.get("shape")
        if not isinstance(shape, (list, tuple)) or not all(type(d) is int and d > 0 for d in shape):
            raise ValueError(f"{what}: box space needs a shape of positive integers")
        if max_elements is not None and array_nbytes(list(shape), 1, max_elements) > max_elements:
            raise ValueError(f"{what}: box space has more than {max_elements} elements")
        dtype_name = data.get("dtype", "float32")
        if dtype_name not in ARRAY_DTYPES:
            raise ValueError(f"{what}: dtype {quote(dtype_name)} is not one of {', '.join(ARRAY_DTYPES)}")
        dtype = np.dtype(dtype_name)
        low, high = (
            _bound(data.get(name, default), list(shape), dtype, what)
            for name, default in (("low", -np.inf), ("high", np.inf))
        )
        return spaces.Box(low=low, high=high, shape=tuple(shape), dtype=dtype)
    raise ValueError(f"{what}: unknown space type {quote(kind)}; expected 'box' or 'discrete'")


def _bound(value: Any, shape: list[int], dtype: np.dtype[Any], what: str) -> np.ndarray[Any, Any]:
    if isinstance(value, dict):
        value = decode_array(value, what)
    try:
        return np.broadcast_to(np.asarray(value, dtype=dtype), tuple(shape)).copy()
    except OverflowError as exc:  # e.g. low = -1000 for an int8 box
        raise ValueError(f"{what}: bound out of range for {dtype.name}: {exc}") from None


def agent_spaces(agent_config: Mapping[str, Any]) -> tuple[Space, Space]:
    """The agent's observation and action spaces: each explicit one if configured, else the env's.

    Raises ConfigError naming the key for an unknown env or a malformed space.
    """
    try:
        explicit = {
            key: from_wire(agent_config[key], f"agent.{key}")
            for key in ("observation_space", "action_space")
            if agent_config.get(key)
        }
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if len(explicit) < 2:
        try:
            env = gymnasium.make(agent_config["env"])
        except gymnasium.error.Error as exc:
            raise ConfigError(f"agent.env: {exc}") from None
        try:
            explicit = {"observation_space": env.observation_space, "action_space": env.action_space, **explicit}
        finally:
            env.close()
    return explicit["observation_space"], explicit["action_space"]


def same_space(a: Space, b: Space) -> bool:
    if isinstance(a, spaces.Discrete) or isinstance(b, spaces.Discrete):
        return (
            isinstance(a, spaces.Discrete)
            and isinstance(b, spaces.Discrete)
            and (int(a.n), int(a.start)) == (int(b.n), int(b.start))
        )
    a, b = box(a), box(b)
    return bool(
        a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high)
    )


def difference(theirs: Space, ours: Space) -> str:
    """How ``theirs`` differs from ``ours``, for a SPACE_MISMATCH: its description, or, when only
    the bounds differ (the descriptions are the same), the first bound that does."""
    if describe(theirs) != describe(ours):
        return describe(theirs)
    theirs, ours = box(theirs), box(ours)
    bounds = [(name, getattr(theirs, name), getattr(ours, name)) for name in ("low", "high")]
    differing = [(name, a, b, np.argwhere(a != b)) for name, a, b in bounds]
    count = sum(len(at) for *_, at in differing)
    name, a, b, at = next(entry for entry in differing if len(entry[3]))
    index = tuple(int(i) for i in at[0])
    where = ", ".join(map(str, index))
    # str() of a numpy scalar is the shortest text that reads back as the same value in its dtype.
    return (
        f"its {name}[{where}] is {a[index]!s} where the agent's is {b[index]!s} "
        f"({count} of {a.size + b.size} bounds differ)"
    )


def describe(space: Space) -> str:
    if isinstance(space, spaces.Discrete):
        return f"discrete(n={space.n}{f', start={space.start}' if space.start else ''})"
    space = box(space)
    return f"box(shape={list(space.shape)}, dtype={space.dtype.name})"


def check_observation(
    obs: np.ndarray[Any, Any], space: Space, seq: int | None, out_of_bounds: str = "refuse"
) -> np.ndarray[Any, Any]:
    """Validate an observation against the agent's space; raise the ProtocolError to send back.
    Values outside the space's finite bounds are refused, or with ``out_of_bounds="clip"`` clipped:
    either way none reaches the student, the teacher or the replay buffer."""
    expected_shape = box(space).shape if not isinstance(space, spaces.Discrete) else ()
    if tuple(obs.shape) != tuple(expected_shape):
        raise ProtocolError(
            ErrorCode.WRONG_SHAPE, f"observation shape {list(obs.shape)}, expected {list(expected_shape)}", seq
        )
    expected_dtype = np.dtype(space.dtype)
    if obs.dtype != expected_dtype:
        raise ProtocolError(
            ErrorCode.WRONG_DTYPE, f"observation dtype {obs.dtype.name}, expected {expected_dtype.name}", seq
        )
    if obs.dtype.kind == "f" and not np.isfinite(obs).all():
        raise ProtocolError(ErrorCode.NOT_FINITE, "observation contains NaN or infinity", seq)
    low, high = _bounds(space)
    outside = (obs < low) | (obs > high)
    if outside.any():
        if out_of_bounds == "clip":
            clipped: np.ndarray[Any, Any] = np.clip(obs, low, high).astype(obs.dtype)
            return clipped
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        below, above = (np.broadcast_to(bound, obs.shape)[index].item() for bound in (low, high))
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"observation {quote(obs[index].item())} at {list(index)} is outside the space's bounds "
            f"[{quote(below)}, {quote(above)}]",
            seq,
        )
    return obs


def _bounds(space: Space) -> tuple[Any, Any]:
    """The space's low and high, as arrays or scalars an observation compares with."""
    if isinstance(space, spaces.Discrete):
        return int(space.start), int(space.start) + int(space.n) - 1
    space = box(space)
    return space.low, space.high


def output_size(action_space: Space) -> int:
    """Width of a policy's output: logits for a discrete space, one value per dimension for a box."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    return int(np.prod(box(action_space).shape))


def actions_from_outputs(outputs: np.ndarray[Any, Any], action_space: Space) -> np.ndarray[Any, Any]:
    """Turn a batch of policy outputs (B, output_size) into a batch of actions."""
    if isinstance(action_space, spaces.Discrete):
        actions: np.ndarray[Any, Any] = np.add(outputs.argmax(axis=1), int(action_space.start), dtype=np.int64)
        return actions
    action_box = box(action_space)
    actions = outputs.reshape((outputs.shape[0], *action_box.shape)).astype(action_box.dtype)
    clipped: np.ndarray[Any, Any] = np.clip(actions, action_box.low, action_box.high)
    return clipped
