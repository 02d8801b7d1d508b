"""The ``residual_mlp`` student: an MLP with pre-norm residual blocks and a final LayerNorm.

The factory declares its params and imports torch (through ``agentrt_template.nets``) only when
it is called, so that loading the plugin costs the light processes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gymnasium import spaces

from runtime.plugin.params import Param, box_space, declare, positive_int
from runtime.wire.spaces import output_size

if TYPE_CHECKING:
    from agentrt_template.nets import ResidualMLP


@declare(
    "student residual_mlp",
    width=Param(64, "hidden width", positive_int),
    blocks=Param(2, "residual blocks", positive_int),
    expansion=Param(2, "each block's inner width is expansion * width", positive_int),
)
def build_residual_mlp(
    params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space
) -> ResidualMLP:
    """An MLP with pre-norm residual blocks and a final LayerNorm, for vector features.

    ``@declare`` hands the factory its params checked and completed with defaults; a bad value
    raises a ConfigError naming the component and the parameter, which at start-up stops the
    daemon with a message saying which table of agentrt.toml to fix.
    """
    space = box_space("student residual_mlp", observation_space, "a box observation space (vector features)")

    from agentrt_template.nets import ResidualMLP  # imports torch: only now

    return ResidualMLP(space.shape, output_size(action_space), params["width"], params["blocks"], params["expansion"])
