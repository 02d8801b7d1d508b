"""Built-in student models. Torch is imported inside the factories, not at import time."""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from runtime import hookimpl
from runtime.params import with_defaults
from runtime.spaces import output_size


def build_mlp(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space):
    """A small MLP over flattened features: the default student for vector observations."""
    from plugins.nets import MLP

    options = with_defaults("student mlp", params, {"hidden": [32], "activation": "relu"})
    return MLP(observation_space.shape, output_size(action_space), list(options["hidden"]), options["activation"])


@hookimpl
def agentrt_register_students() -> dict[str, Any]:
    return {"mlp": build_mlp}
