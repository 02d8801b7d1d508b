"""Building the student (and its feature space) the same way in every process that needs it."""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from runtime.plugin.chains import Chain
from runtime.plugin.pluginmanager import Plugins


def feature_space(plugins: Plugins, config: dict[str, Any], observation_space: spaces.Space) -> spaces.Space:
    """The space of the features perception hands to the student, after the configured transforms."""
    return Chain(plugins, "perception", config, observation_space).output_space


def build_student(
    plugins: Plugins, config: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space
):
    """The configured student, seeded so decision and distillation start from identical weights."""
    import torch

    torch.manual_seed(config["distillation"]["seed"])
    settings = config["student"]
    return plugins.build(
        "student",
        settings["plugin"],
        dict(settings["params"]),
        feature_space(plugins, config, observation_space),
        action_space,
    )
