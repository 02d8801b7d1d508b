"""Built-in student models. Torch is imported inside the factories, not at import time.

Pick by what perception hands the student:

* ``mlp``: a vector of features (the default; also a flattened framestack).
* ``cnn``: images, ``(H, W, C)`` from an image env or the ``image`` transform, optionally stacked
  by ``framestack`` to ``(k, H, W, C)``.
* ``gru``: a history ``(T, D)`` of feature vectors from ``framestack``, when the order of the steps
  matters more than an MLP over the flattened stack can pick up (longer histories, velocities).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from gymnasium import spaces

from runtime import hookimpl
from runtime.plugin.params import (
    Param,
    and_,
    boolean,
    box_space,
    declare,
    ge,
    in_,
    integer,
    list_of,
    not_,
    positive_int,
    string,
    table,
)
from runtime.wire.spaces import output_size, shape_of

if TYPE_CHECKING:
    from runtime.learn.nets import CNN, MLP, Ensemble, GRUNet
    from runtime.plugin.pluginmanager import BuildContext

Net = TypeVar("Net")

# The names runtime.learn.nets.ACTIVATIONS knows (that module imports torch; this one must not).
ACTIVATION = Param("relu", "nonlinearity between layers", in_("relu", "tanh", "gelu"))


def _named(component: str, build: Callable[[], Net]) -> Net:
    # The networks check what only they know (shapes) without knowing their component's name;
    # the configuration error must say which [student] table to fix.
    try:
        return build()
    except ValueError as exc:
        raise ValueError(f"{component}: {exc}") from exc


@declare(
    "student mlp",
    hidden=Param([32], "widths of the hidden layers", list_of(positive_int, min_length=0)),
    activation=ACTIVATION,
)
def build_mlp(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space) -> MLP:
    """A small MLP over flattened features: the default student for vector observations."""
    from runtime.learn.nets import MLP

    return _named(
        "student mlp",
        lambda: MLP(shape_of(observation_space), output_size(action_space), params["hidden"], params["activation"]),
    )


@declare(
    "student ensemble",
    members=Param(5, "K, the number of members", and_(integer, ge(2))),
    member=Param("mlp", "the members' student, by name (not ensemble)", and_(string, not_(in_("ensemble")))),
    member_params=Param({}, "the members' params table", table),
)
def build_ensemble(
    params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space, *, context: BuildContext
) -> Ensemble:
    """K students of another kind acting on their mean; pick it with the ``disagreement`` query
    policy, which asks the teacher where the members disagree."""
    from runtime.learn.nets import Ensemble

    return Ensemble(
        [
            context.plugins.build(
                "student", params["member"], dict(params["member_params"]), observation_space, action_space
            )
            for _ in range(params["members"])
        ]
    )


@declare(
    "student cnn",
    channels=Param([16, 32], "output channels per conv layer", list_of(positive_int)),
    kernel=Param(3, "convolution kernel size", positive_int),
    stride=Param(2, "convolution stride", positive_int),
    channels_last=Param(True, "true: frames are (..., H, W, C); false: (..., C, H, W)", boolean),
    activation=ACTIVATION,
)
def build_cnn(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space) -> CNN:
    """A small CNN for image observations. Put the ``image`` transform in front to resize and scale
    the frames; the CNN only casts them to float."""
    from runtime.learn.nets import CNN

    component = "student cnn"
    space = box_space(component, observation_space, "an image box observation space")
    return _named(
        component,
        lambda: CNN(
            space.shape,
            output_size(action_space),
            params["channels"],
            params["kernel"],
            params["stride"],
            params["channels_last"],
            params["activation"],
        ),
    )


@declare(
    "student gru", hidden=Param(64, "GRU width", positive_int), layers=Param(1, "stacked GRU layers", positive_int)
)
def build_gru(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space) -> GRUNet:
    """A GRU over a ``(T, D)`` history of features (put ``framestack`` in front)."""
    from runtime.learn.nets import GRUNet

    component = "student gru"
    space = box_space(component, observation_space, "a 2-D (T, D) box observation space, e.g. from framestack")
    return _named(component, lambda: GRUNet(space.shape, output_size(action_space), params["hidden"], params["layers"]))


@hookimpl
def agentrt_register_students() -> dict[str, Any]:
    return {"mlp": build_mlp, "cnn": build_cnn, "gru": build_gru, "ensemble": build_ensemble}
