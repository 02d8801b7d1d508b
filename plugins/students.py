"""Built-in student models. Torch is imported inside the factories, not at import time.

Pick by what perception hands the student:

* ``mlp``: a vector of features (the default; also a flattened framestack).
* ``cnn``: images, ``(H, W, C)`` from an image env or the ``image`` transform, optionally stacked
  by ``framestack`` to ``(k, H, W, C)``.
* ``gru``: a history ``(T, D)`` of feature vectors from ``framestack``, when the order of the steps
  matters more than an MLP over the flattened stack can pick up (longer histories, velocities).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

from gymnasium import spaces

from runtime import hookimpl
from runtime.plugin.params import box_space, flag, positive_int, positive_ints, with_defaults
from runtime.wire.spaces import output_size

if TYPE_CHECKING:
    from runtime.learn.nets import CNN, MLP, GRUNet

Net = TypeVar("Net")


def _named(component: str, build: Callable[[], Net]) -> Net:
    # The networks check what only they know (activations, shapes) without knowing their
    # component's name; the configuration error must say which [student] table to fix.
    try:
        return build()
    except ValueError as exc:
        raise ValueError(f"{component}: {exc}") from exc


def build_mlp(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space) -> MLP:
    """A small MLP over flattened features: the default student for vector observations.

    Params: ``hidden`` (layer widths, default [32]), ``activation`` (relu, tanh or gelu; default relu).
    """
    from runtime.learn.nets import MLP

    component = "student mlp"
    options = with_defaults(component, params, {"hidden": [32], "activation": "relu"})
    return _named(component, lambda: MLP(observation_space.shape, output_size(action_space),
                                         list(options["hidden"]), options["activation"]))


def build_ensemble(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space):
    """K students of another kind acting on their mean; pick it with the ``disagreement`` query
    policy, which asks the teacher where the members disagree.

    Params: ``members`` (K, default 5), ``member`` (the member's student name, default "mlp"),
    ``member_params`` (its params table, default {}).
    """
    from runtime.learn.nets import Ensemble
    from runtime.plugin.pluginmanager import active

    component = "student ensemble"
    options = with_defaults(component, params, {"members": 5, "member": "mlp", "member_params": {}})
    if not isinstance(options["members"], int) or options["members"] < 2:
        raise ValueError(f"{component}: members must be an integer >= 2")
    if options["member"] == "ensemble":
        raise ValueError(f"{component}: an ensemble cannot have ensembles as members")
    plugins = active()
    return Ensemble([plugins.build("student", options["member"], dict(options["member_params"]), observation_space, action_space)
                     for _ in range(options["members"])])


def build_cnn(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space) -> CNN:
    """A small CNN for image observations.

    Params: ``channels`` (output channels per conv layer, default [16, 32]), ``kernel`` (default 3),
    ``stride`` (default 2), ``channels_last`` (default true: ``(..., H, W, C)``; false for
    ``(..., C, H, W)``), ``activation`` (default relu). Put the ``image`` transform in front to
    resize and scale the frames; the CNN only casts them to float.
    """
    from runtime.learn.nets import CNN

    component = "student cnn"
    options = with_defaults(component, params, {"channels": [16, 32], "kernel": 3, "stride": 2,
                                                "channels_last": True, "activation": "relu"})
    space = box_space(component, observation_space, "an image box observation space")
    channels = positive_ints(component, "channels", options["channels"])
    kernel = positive_int(component, "kernel", options["kernel"])
    stride = positive_int(component, "stride", options["stride"])
    channels_last = flag(component, "channels_last", options["channels_last"])
    return _named(component, lambda: CNN(space.shape, output_size(action_space), channels, kernel, stride,
                                         channels_last, options["activation"]))


def build_gru(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space) -> GRUNet:
    """A GRU over a ``(T, D)`` history of features (put ``framestack`` in front).

    Params: ``hidden`` (GRU width, default 64), ``layers`` (stacked GRU layers, default 1).
    """
    from runtime.learn.nets import GRUNet

    component = "student gru"
    options = with_defaults(component, params, {"hidden": 64, "layers": 1})
    space = box_space(component, observation_space, "a 2-D (T, D) box observation space, e.g. from framestack")
    hidden = positive_int(component, "hidden", options["hidden"])
    layers = positive_int(component, "layers", options["layers"])
    return _named(component, lambda: GRUNet(space.shape, output_size(action_space), hidden, layers))


@hookimpl
def agentrt_register_students() -> dict[str, Any]:
    return {"mlp": build_mlp, "cnn": build_cnn, "gru": build_gru, "ensemble": build_ensemble}
