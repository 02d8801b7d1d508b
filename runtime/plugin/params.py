"""Declaring parameters: one declaration gives a component (or a configuration section) its
defaults, its checks, its documentation and its error messages. Public for plugin authors.

A parameter is a ``Param(default, doc, check)``; ``check`` is a validator composed from the small
ones below, in the style of attrs' ``validators`` (``and_(integer, gt(0))``, ``optional(...)``,
``list_of(...)``). A factory declares its parameters with ``@declare``::

    @declare("student tiny",
             hidden=Param(16, "width of the hidden layer", and_(integer, gt(0))),
             activation=Param("tanh", "nonlinearity", in_("tanh", "relu")))
    def build_tiny(params, observation_space, action_space):
        ...  # params["hidden"] is an int > 0, defaults filled in

Every value that does not fit raises ``ParamError`` (a ``ConfigError``) in one form:
``student tiny: parameter 'hidden' must be an integer > 0 (got 0)``; an unknown key is refused by
name. ``agentrt plugins --json`` and docs/plugins.md list what ``declare`` recorded.
No torch here: perception and execution use these.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gymnasium import spaces

from runtime.errors import ParamError
from runtime.wire.spaces import Space, describe

Factory = TypeVar("Factory", bound=Callable[..., Any])

#: The attribute ``declare`` sets on a factory (pluggy marks hook implementations the same way).
ATTRIBUTE = "agentrt_params"


def _unchanged(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Validator:
    """A check on one value. ``test(value)`` says whether it passes; ``expected`` completes
    "must be ..." ("an integer > 0"); ``convert`` turns a passing value into what the component
    gets (ints to float for numbers). ``bound`` marks a comparison, ``(op, limit)``, so that
    ``and_`` can write "a number in [0, 1]" rather than "a number >= 0 and <= 1"."""

    expected: str
    test: Callable[[Any], bool]
    convert: Callable[[Any], Any] = _unchanged
    bound: tuple[str, float] | None = None

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except TypeError:  # a comparison with a value of the wrong type: it does not fit
            return False


def instance_of(*types: type, expected: str | None = None) -> Validator:
    """The value is one of ``types`` (a bool is never taken for an int or a float)."""
    names = expected or " or ".join(f"a {t.__name__}" for t in types)
    allow_bool = bool in types
    return Validator(names, lambda v: isinstance(v, types) and (allow_bool or not isinstance(v, bool)))


integer = instance_of(int, expected="an integer")
string = instance_of(str, expected="a string")
boolean = instance_of(bool, expected="true or false")
table = instance_of(Mapping, expected="a table")
number = Validator(
    "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), float
)


def _compare(op: str, limit: float, test: Callable[[Any], bool]) -> Validator:
    return Validator(f"{op} {limit:g}", test, bound=(op, limit))


def gt(limit: float) -> Validator:
    return _compare(">", limit, lambda v: v > limit)


def ge(limit: float) -> Validator:
    return _compare(">=", limit, lambda v: v >= limit)


def lt(limit: float) -> Validator:
    return _compare("<", limit, lambda v: v < limit)


def le(limit: float) -> Validator:
    return _compare("<=", limit, lambda v: v <= limit)


def in_(*options: Any) -> Validator:
    return Validator("one of " + ", ".join(map(repr, options)), lambda v: v in options)


def not_(validator: Validator) -> Validator:
    return Validator(f"not {validator.expected}", lambda v: not validator(v))


def optional(validator: Validator) -> Validator:
    """``validator``, or None (left unset)."""
    return Validator(
        f"{validator.expected}, or unset",
        lambda v: v is None or validator(v),
        lambda v: None if v is None else validator.convert(v),
    )


def or_(*validators: Validator) -> Validator:
    """The first of ``validators`` that passes decides the conversion."""

    def convert(value: Any) -> Any:
        return next(v for v in validators if v(value)).convert(value)

    return Validator(
        ", or ".join(v.expected for v in validators), lambda value: any(v(value) for v in validators), convert
    )


def and_(*validators: Validator) -> Validator:
    """All of ``validators``, checked in order (so a type check guards the comparisons after it)."""

    def test(value: Any) -> bool:
        return all(v(value) for v in validators)

    def convert(value: Any) -> Any:
        for validator in validators:
            value = validator.convert(value)
        return value

    return Validator(_join(validators), test, convert)


def _join(validators: tuple[Validator, ...]) -> str:
    # "an integer" + "> 0" -> "an integer > 0"; ">= 0" + "<= 1" -> "in [0, 1]"; others after a comma.
    parts: list[str] = []
    previous: Validator | None = None
    for validator in validators:
        lower = previous.bound if previous is not None else None
        upper = validator.bound
        if lower is not None and lower[0] in (">", ">=") and upper is not None and upper[0] in ("<", "<="):
            parts[-1] = (
                f" in {'[' if lower[0] == '>=' else '('}{lower[1]:g}, {upper[1]:g}{']' if upper[0] == '<=' else ')'}"
            )
        elif not parts:
            parts.append(validator.expected)
        elif validator.bound is not None:
            parts.append((" and " if previous is not None and previous.bound else " ") + validator.expected)
        else:
            parts.append(", " + validator.expected)
        previous = validator
    return "".join(parts).strip()


def list_of(item: Validator, min_length: int = 1, length: int | None = None) -> Validator:
    """A list (or tuple) whose items each pass ``item``: exactly ``length`` of them when given,
    else at least ``min_length``. Converts to a list of converted items."""
    if length is not None:
        shape = f"a list of {length}"
    elif min_length == 1:
        shape = "a non-empty list"
    elif min_length:
        shape = f"a list of at least {min_length}"
    else:
        shape = "a list"

    def test(value: Any) -> bool:
        if not isinstance(value, (list, tuple)):
            return False
        if len(value) != length if length is not None else len(value) < min_length:
            return False
        return all(item(v) for v in value)

    return Validator(f"{shape}, each {item.expected}", test, lambda value: [item.convert(v) for v in value])


positive_int = and_(integer, gt(0))
share = and_(number, ge(0), le(1))


@dataclass(frozen=True)
class Param:
    """One parameter: its default, what it does (one line, for ``agentrt plugins`` and the docs)
    and the validator its value must pass (None: anything). The default is checked too, so a
    default that does not pass makes the parameter required."""

    default: Any
    doc: str
    check: Validator | None = None

    @property
    def constraint(self) -> str:
        return self.check.expected if self.check is not None else "any value"


def invalid(component: str, name: str, expected: str, value: Any, given: bool = True) -> ParamError:
    """The one form of a parameter error, for checks ``Param`` cannot make alone (against a space,
    or between parameters): ``<component>: parameter '<name>' must be <expected> (got <value>)``."""
    got = f"got {value!r}" if given else "not given"
    return ParamError(f"{component}: parameter {name!r} must be {expected} ({got})")


class Params:
    """The declared parameters of one component; ``component`` names it in messages ("student cnn")."""

    def __init__(self, component: str, params: Mapping[str, Param]) -> None:
        self.component = component
        self.params = dict(params)

    def check(self, name: str, value: Any, given: bool = True) -> Any:
        """``value`` converted if parameter ``name`` takes it, else ParamError."""
        param = self.params[name]
        if param.check is None:
            return value
        if not param.check(value):
            raise invalid(self.component, name, param.check.expected, value, given)
        return param.check.convert(value)

    def unknown(self, name: str) -> ParamError:
        return ParamError(f"{self.component}: unknown parameter {name!r}; known: {', '.join(self.params) or 'none'}")

    def read(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """``values`` (a params table) checked and converted, defaults filled in; unknown keys refused."""
        values = dict(values or {})
        for name in sorted(values):
            if name not in self.params:
                raise self.unknown(name)
        return {
            name: self.check(name, values[name])
            if name in values
            else self.check(name, copy.deepcopy(param.default), given=False)
            for name, param in self.params.items()
        }

    def describe(self) -> list[dict[str, Any]]:
        """Per parameter: name, default, doc and constraint (what ``agentrt plugins --json`` shows)."""
        return [
            {"name": name, "default": param.default, "doc": param.doc, "constraint": param.constraint}
            for name, param in self.params.items()
        ]


def declare(component: str, **params: Param) -> Callable[[Factory], Factory]:
    """Declare the parameters of a factory (a function or a class taking ``params`` first).

    The factory then receives its params table checked, converted and completed with defaults,
    whoever calls it; the declaration is recorded on it for ``declared``.
    """
    spec = Params(component, params)

    def attach(factory: Factory) -> Factory:
        if isinstance(factory, type):
            cls: type[Any] = factory
            init = cls.__init__

            @functools.wraps(init)
            def __init__(self: Any, params: Mapping[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
                init(self, spec.read(params), *args, **kwargs)

            cls.__init__ = __init__
            setattr(factory, ATTRIBUTE, spec)
            return factory

        @functools.wraps(factory)
        def build(params: Mapping[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
            return factory(spec.read(params), *args, **kwargs)

        setattr(build, ATTRIBUTE, spec)
        return build  # type: ignore[return-value]

    return attach


def declared(factory: Callable[..., Any]) -> Params | None:
    """The parameters ``factory`` declared with ``declare``, or None for one that did not."""
    spec = getattr(factory, ATTRIBUTE, None)
    return spec if isinstance(spec, Params) else None


def box_space(
    component: str, space: Space, expected: str = "a box space", min_ndim: int = 0, max_ndim: int | None = None
) -> spaces.Box:
    """``space`` if it is a Box with ``min_ndim`` to ``max_ndim`` axes; ``expected`` describes what fits."""
    if not isinstance(space, spaces.Box):
        raise ParamError(f"{component}: needs {expected}, got {describe(space)}")
    ndim = len(space.shape)
    if ndim < min_ndim or (max_ndim is not None and ndim > max_ndim):
        raise ParamError(f"{component}: needs {expected}, got {describe(space)}")
    return space


def discrete_space(component: str, space: Space, expected: str = "a discrete space") -> spaces.Discrete:
    """``space`` if it is Discrete; ``expected`` describes what fits (and may say what to use instead)."""
    if not isinstance(space, spaces.Discrete):
        raise ParamError(f"{component}: needs {expected}, got {describe(space)}")
    return space


def view_space(component: str, space: Space, start: int, stop: int, shape: list[int] | None) -> spaces.Box:
    """The elements ``start:stop`` of a Box's flattened observation, reshaped to ``shape`` (unset:
    flat), with their bounds: the part of an observation that carries several things at known
    offsets (pixels and state, a task id and features) which the ``view`` transform or teacher reads."""
    flat = box_space(component, space)
    size = math.prod(flat.shape)
    if not 0 <= start < stop <= size:
        raise invalid(component, "stop", f"> start ({start}) and <= the observation's {size} elements", stop)
    shape = list(shape) if shape is not None else [stop - start]
    if math.prod(shape) != stop - start:
        raise invalid(component, "shape", f"{stop - start} elements in all (stop - start)", shape)
    low, high = (bound.ravel()[start:stop].reshape(shape) for bound in (flat.low, flat.high))
    return spaces.Box(low, high, shape=tuple(shape), dtype=flat.dtype)
