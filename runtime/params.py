"""Reading a component's ``params`` table: defaults filled in, unknown keys refused by name."""

from __future__ import annotations

from typing import Any, Mapping


def with_defaults(component: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``defaults`` updated by ``params``; a key not in ``defaults`` raises ValueError naming it."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"{component}: unknown parameter {unknown[0]!r}; known: {', '.join(defaults) or 'none'}")
    return {**defaults, **params}
