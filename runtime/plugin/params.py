"""Reading a component's ``params`` table: defaults filled in, unknown keys refused by name, and
value checks. Public for plugin authors. Every check raises ValueError starting with the component
("student cnn: ..."), so a bad ``agentrt.toml`` fails at start-up saying which table to fix.
No torch here: perception and execution use these.
"""

from __future__ import annotations

import math
from typing import Any, Collection, Mapping

import numpy as np
from gymnasium import spaces

from runtime.wire.spaces import describe


def with_defaults(component: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``defaults`` updated by ``params``; a key not in ``defaults`` raises ValueError naming it."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"{component}: unknown parameter {unknown[0]!r}; known: {', '.join(defaults) or 'none'}")
    return {**defaults, **params}


def number(component: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
            above_low: bool = False) -> float:
    """A finite number in [low, high] (in (low, high] with ``above_low``), else ValueError naming it."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or value < low or value > high or (above_low and value == low):
        if low == -math.inf:
            expected = "a finite number"
        elif high == math.inf:
            expected = f"a number {'>' if above_low else '>='} {low:g}"
        else:
            expected = f"a number in {'(' if above_low else '['}{low:g}, {high:g}]"
        raise ValueError(f"{component}: {name} must be {expected}, got {value!r}")
    return float(value)


def count(component: str, name: str, value: Any, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:  # type() refuses bool, which is an int
        raise ValueError(f"{component}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def positive_int(component: str, name: str, value: Any) -> int:
    if type(value) is not int or value < 1:  # type() also refuses bool, which is an int
        raise ValueError(f"{component}: {name} must be a positive integer, got {value!r}")
    return value


def positive_ints(component: str, name: str, value: Any, length: int | None = None) -> list[int]:
    """A non-empty list of positive integers (exactly ``length`` of them when given)."""
    if (not isinstance(value, (list, tuple)) or not value or (length is not None and len(value) != length)
            or not all(type(v) is int and v > 0 for v in value)):
        count = f"{length}" if length is not None else "a non-empty list of"
        raise ValueError(f"{component}: {name} must be {count} positive integers, got {value!r}")
    return list(value)


def positive_float(component: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{component}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def flag(component: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{component}: {name} must be true or false, got {value!r}")
    return value


def choice(component: str, name: str, value: Any, options: Collection[str]) -> str:
    if value not in options:
        raise ValueError(f"{component}: {name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def positive_array(component: str, name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A number or nested list of numbers > 0, broadcast to ``shape`` (one value per dimension)."""
    try:
        array = np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()
    except (TypeError, ValueError):
        raise ValueError(f"{component}: {name} must be a number or a list broadcastable to shape "
                         f"{list(shape)}, got {value!r}") from None
    if isinstance(value, bool) or not (np.isfinite(array).all() and (array > 0).all()):
        raise ValueError(f"{component}: {name} must be finite and > 0, got {value!r}")
    return array


def box_space(component: str, space: spaces.Space, expected: str = "a box space",
              min_ndim: int = 0, max_ndim: int | None = None) -> spaces.Box:
    """``space`` if it is a Box with ``min_ndim`` to ``max_ndim`` axes; ``expected`` describes what fits."""
    ndim = len(space.shape) if isinstance(space, spaces.Box) else -1
    if ndim < min_ndim or (max_ndim is not None and ndim > max_ndim):
        raise ValueError(f"{component}: needs {expected}, got {describe(space)}")
    return space
