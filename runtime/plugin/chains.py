"""Chains of perception transforms and execution filters, built from the configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from runtime.errors import PluginError, PluginFailure
from runtime.plugin.interfaces import StreamStep
from runtime.plugin.pluginmanager import Component, Plugins, serve
from runtime.plugin.points import EXTENSION_POINTS
from runtime.wire.spaces import Space, describe


class Chain:
    """Configured steps applied in order; a step that raises surfaces as a PluginFailure naming it."""

    def __init__(
        self, plugins: Plugins, point: str, names: Sequence[str], params: Mapping[str, Any], input_space: Space
    ) -> None:
        """The steps ``names`` of the chained extension ``point``, in order; ``params`` holds each
        step's own table by name (``[perception.params.<name>]``)."""
        if not EXTENSION_POINTS[point].chain:
            raise ValueError(f"{point} components are not chained")
        self.steps: list[tuple[Component, StreamStep]] = []
        space = input_space
        for name in names:
            step = plugins.build(point, name, dict(params.get(name, {})), space)
            component = plugins.get(point, name)
            declared = getattr(step, "output_space", None)
            if not isinstance(declared, spaces.Space):
                raise PluginError(
                    f"plugin {component.plugin!r} ({component.hook}): building {point} {name!r} failed: its "
                    f"output_space is {type(declared).__name__}, not a Gymnasium space (set self.output_space "
                    "to the space of what it returns)"
                )
            space = declared
            self.steps.append((component, step))
        self.output_space = space

    def __call__(self, item: np.ndarray, stream: bytes) -> np.ndarray:
        for component, step in self.steps:
            item = np.asarray(serve(component, step, item, stream))
            # Checked here, so a step returning the wrong thing fails as that plugin, not later in encoding.
            # A discrete space takes integers only: a float there would be truncated silently downstream.
            kinds = "biu" if isinstance(step.output_space, spaces.Discrete) else "biuf"
            if item.shape != step.output_space.shape or item.dtype.kind not in kinds:
                raise PluginFailure(
                    component,
                    ValueError(
                        f"returned {item.dtype} {list(item.shape)}, its output space is {describe(step.output_space)}"
                    ),
                )
        return item

    def reset(self, stream: bytes) -> None:
        for component, step in self.steps:
            serve(component, step.reset, stream)
