"""The ``residual_mlp`` student: an MLP with pre-norm residual blocks and a final LayerNorm.

The factory validates its params and imports torch (through ``agentrt_template.nets``) only when
it is called, so that loading the plugin costs the light processes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gymnasium import spaces

from runtime.plugin.params import with_defaults
from runtime.wire.spaces import output_size

if TYPE_CHECKING:
    from agentrt_template.nets import ResidualMLP

DEFAULTS = {"width": 64, "blocks": 2, "expansion": 2}


def _positive_int(name: str, value: Any) -> int:
    if type(value) is not int or value < 1:  # type() also refuses True, which is an int
        raise ValueError(f"student residual_mlp: {name} must be a positive integer, got {value!r}")
    return value


def build_residual_mlp(params: dict[str, Any], observation_space: spaces.Space,
                       action_space: spaces.Space) -> ResidualMLP:
    """Params: ``width`` (hidden width, default 64), ``blocks`` (residual blocks, default 2),
    ``expansion`` (each block's inner width is ``expansion * width``, default 2).

    A ValueError names the component and the parameter; at start-up it stops the daemon with a
    message saying which table of agentrt.toml to fix.
    """
    options = with_defaults("student residual_mlp", params, DEFAULTS)
    width, blocks, expansion = (_positive_int(name, options[name]) for name in ("width", "blocks", "expansion"))
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(f"student residual_mlp: needs a box observation space (vector features), got {observation_space}")

    from agentrt_template.nets import ResidualMLP  # imports torch: only now

    return ResidualMLP(observation_space.shape, output_size(action_space), width, blocks, expansion)
