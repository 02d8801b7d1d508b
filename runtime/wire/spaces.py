"""Observation and action spaces: the wire form (docs/protocol.md, Spaces), Gymnasium spaces, checks.

The wire form is a map: ``{"type": "box", "shape": [...], "dtype": "float32", "low": <array>, "high": <array>}``
or ``{"type": "discrete", "n": <uint>}``. Low and high travel as protocol arrays.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
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
    header = _header(data, what, max_elements)
    if header[0] == "discrete":
        return spaces.Discrete(header[1], start=header[2])
    shape, dtype = header[1], np.dtype(header[2])
    low, high = (np.broadcast_to(bound, shape).copy() for bound in _bounds_of(data, shape, dtype, what))
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


#: What a space is, bounds aside: ("discrete", n, start) or ("box", shape, dtype name).
Header = tuple[Any, ...]


def _header(data: Mapping[str, Any], what: str, max_elements: int | None) -> Header:
    kind = data.get("type")
    if kind == "discrete":
        n, start = data.get("n"), data.get("start", 0)
        if type(n) is not int or not 1 <= n <= np.iinfo(np.int64).max:
            raise ValueError(f"{what}: discrete space needs a positive integer n (at most 2**63-1)")
        if type(start) is not int or not np.iinfo(np.int64).min <= start <= np.iinfo(np.int64).max - n:
            raise ValueError(f"{what}: discrete space needs an integer start with start + n within int64")
        return ("discrete", n, start)
    if kind == "box":
        shape = data.get("shape")
        if not isinstance(shape, (list, tuple)) or not all(type(d) is int and d > 0 for d in shape):
            raise ValueError(f"{what}: box space needs a shape of positive integers")
        if max_elements is not None and array_nbytes(list(shape), 1, max_elements) > max_elements:
            raise ValueError(f"{what}: box space has more than {max_elements} elements")
        dtype_name = data.get("dtype", "float32")
        if dtype_name not in ARRAY_DTYPES:
            raise ValueError(f"{what}: dtype {quote(dtype_name)} is not one of {', '.join(ARRAY_DTYPES)}")
        return ("box", tuple(shape), dtype_name)
    raise ValueError(f"{what}: unknown space type {quote(kind)}; expected 'box' or 'discrete'")


def _bounds_of(
    data: Mapping[str, Any], shape: tuple[int, ...], dtype: np.dtype[Any], what: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A box's low and high as given, cast to its dtype but not broadcast to its shape (a bound
    that is one value is one element, however large the box); ValueError where Gymnasium's Box
    would refuse them."""
    low, high = (
        _bound(data.get(name, default), shape, dtype, what) for name, default in (("low", -np.inf), ("high", np.inf))
    )
    if not np.less_equal(low, high).all():  # also false where either is NaN
        raise ValueError(f"{what}: every bound must be a number, and no low bound above its high bound")
    return low, high


def _bound(value: Any, shape: tuple[int, ...], dtype: np.dtype[Any], what: str) -> np.ndarray[Any, Any]:
    if isinstance(value, dict):
        value = decode_array(value, what)
    try:
        bound = np.asarray(value, dtype=dtype)
    except OverflowError as exc:  # e.g. low = -1000 for an int8 box
        raise ValueError(f"{what}: bound out of range for {dtype.name}: {exc}") from None
    if bound.ndim == 0:  # the common case, answered without numpy's broadcasting machinery
        return bound
    try:
        fits = np.broadcast_shapes(bound.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{what}: a bound of shape {quote(list(bound.shape))} does not fit shape {quote(list(shape))}")
    return bound


@dataclass(frozen=True)
class Canonical:
    """A space's canonical encoding: two wire forms have equal ones exactly when ``from_wire``
    builds spaces ``same_space`` calls equal. Computed without building the space: a bound that is
    one value throughout is that one value, so a hello declaring a million-element box costs
    what one declaring four does (docs/protocol.md, Spaces)."""

    header: Header
    bounds: bytes  # low and high, each one value or every value (native byte order: compare within a process)

    @property
    def key(self) -> bytes:
        """A short digest of the whole encoding, to remember a verdict by."""
        return hashlib.blake2b(repr(self.header).encode() + b"\0" + self.bounds, digest_size=16).digest()


def canonical(data: Mapping[str, Any], what: str = "space", max_elements: int | None = None) -> Canonical:
    """The canonical encoding of a space's wire form; ValueError where ``from_wire`` raises one."""
    header = _header(data, what, max_elements)
    if header[0] == "discrete":
        return Canonical(header, b"")
    shape, dtype = header[1], np.dtype(header[2])
    return Canonical(header, b"".join(_canonical_bound(bound, shape) for bound in _bounds_of(data, shape, dtype, what)))


def _canonical_bound(bound: np.ndarray[Any, Any], shape: tuple[int, ...]) -> bytes:
    if bound.dtype.kind == "f":
        bound = bound + bound.dtype.type(0)  # -0.0 becomes 0.0: equal bounds, equal bytes
    flat = bound.reshape(-1)
    if flat.size == 1 or (flat == flat[0]).all():
        return b"1" + flat[:1].tobytes()
    return b"*" + np.ascontiguousarray(np.broadcast_to(bound, shape)).tobytes()


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


class Matcher:
    """Tells whether the wire forms of spaces peers declare match one space of the agent, by
    canonical encoding (never building the peer's space to compare it), and remembers how the
    ``cache_entries`` most recently seen distinct mismatching spaces differ, so that a peer
    repeating a hello that needs the agent-sized comparison of bounds pays for it once."""

    def __init__(self, ours: Space, what: str, max_elements: int, cache_entries: int) -> None:
        self.ours = ours
        self.what = what
        self.max_elements = max_elements
        self.cache_entries = cache_entries
        self.canonical = canonical(to_wire(ours), what)
        self.differences: OrderedDict[bytes, str] = OrderedDict()

    def difference(self, data: Mapping[str, Any]) -> str | None:
        """None when ``data`` describes the agent's space; else how it differs: its description,
        or, when only the bounds differ, the first bound that does. ValueError when ``data``
        describes no valid space."""
        theirs = canonical(data, self.what, self.max_elements)
        if theirs == self.canonical:
            return None
        if theirs.header != self.canonical.header:
            return _describe(theirs.header)
        key = theirs.key
        differs = self.differences.get(key)
        if differs is None:
            # Only the bounds differ, so the peer's space is as large as the agent's own.
            differs = self.differences[key] = _bounds_difference(box(from_wire(data, self.what)), box(self.ours))
            if len(self.differences) > self.cache_entries:
                self.differences.popitem(last=False)
        self.differences.move_to_end(key)
        return differs


def _bounds_difference(theirs: spaces.Box, ours: spaces.Box) -> str:
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
        return _describe(("discrete", int(space.n), int(space.start)))
    space = box(space)
    return _describe(("box", space.shape, space.dtype.name))


def _describe(header: Header) -> str:
    if header[0] == "discrete":
        _, n, start = header
        return f"discrete(n={n}{f', start={start}' if start else ''})"
    _, shape, dtype_name = header
    return f"box(shape={quote(list(shape))}, dtype={dtype_name})"


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
