"""Built-in teachers: a torch checkpoint (safetensors) and a scripted callable."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from gymnasium import spaces

from runtime import hookimpl
from runtime.params import with_defaults
from runtime.spaces import output_size

ASSETS = Path(__file__).parent / "assets"
BUILTIN_CHECKPOINTS = {"cartpole": ASSETS / "cartpole_teacher.safetensors"}


def resolve_checkpoint(path: str) -> Path:
    """``builtin:<name>`` names a checkpoint shipped with agentrt; anything else is a file path."""
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        if name not in BUILTIN_CHECKPOINTS:
            raise ValueError(f"no built-in teacher checkpoint {name!r}; available: {', '.join(BUILTIN_CHECKPOINTS)}")
        return BUILTIN_CHECKPOINTS[name]
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ValueError(f"teacher checkpoint {path} does not exist")
    return resolved


class TorchTeacher:
    """A torch module used as a teacher: ``label`` runs it without gradients."""

    def __init__(self, module) -> None:
        import torch

        self._torch = torch
        self.module = module.eval()

    def label(self, observations: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            return self.module(self._torch.as_tensor(observations, dtype=self._torch.float32)).numpy()


def build_checkpoint_teacher(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space) -> TorchTeacher:
    """A teacher network stored as safetensors; its architecture is read from the file's metadata."""
    from plugins.nets import MLP
    from runtime.checkpoints import load_safetensors

    options = with_defaults("teacher checkpoint", params, {"path": "builtin:cartpole"})
    state, metadata = load_safetensors(resolve_checkpoint(options["path"]))
    if metadata.get("architecture") != "mlp":
        raise ValueError(f"teacher checkpoint {options['path']}: architecture {metadata.get('architecture')!r} is not supported (expected 'mlp' in the file's metadata)")
    input_shape = tuple(json.loads(metadata["input_shape"]))
    if input_shape != tuple(observation_space.shape):
        raise ValueError(f"teacher checkpoint {options['path']} expects observations of shape {list(input_shape)}, the agent has {list(observation_space.shape)}")
    if int(metadata["output_size"]) != output_size(action_space):
        raise ValueError(f"teacher checkpoint {options['path']} has {metadata['output_size']} outputs, the action space needs {output_size(action_space)}")
    module = MLP(input_shape, int(metadata["output_size"]), json.loads(metadata["hidden"]), metadata.get("activation", "relu"))
    module.load_state_dict(state)
    return TorchTeacher(module)


class ScriptedTeacher:
    """Any Python callable ``f(observations) -> outputs`` used as a teacher (controllers, planners, rules)."""

    def __init__(self, function: Callable[[np.ndarray], np.ndarray]) -> None:
        self.function = function

    def label(self, observations: np.ndarray) -> np.ndarray:
        return np.asarray(self.function(observations), dtype=np.float32)


def build_scripted_teacher(params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space) -> ScriptedTeacher:
    """A teacher given as ``callable = "package.module:function"``, mapping a batch of observations to outputs."""
    options = with_defaults("teacher scripted", params, {"callable": ""})
    module_name, _, attribute = options["callable"].partition(":")
    if not module_name or not attribute:
        raise ValueError("teacher scripted: parameter 'callable' must look like 'package.module:function'")
    return ScriptedTeacher(getattr(importlib.import_module(module_name), attribute))


def cartpole_controller(observations: np.ndarray) -> np.ndarray:
    """The linear state-feedback controller the built-in CartPole teacher was distilled from, as logits."""
    from plugins.train_cartpole_teacher import EXPERT_GAINS

    push = np.asarray(observations, dtype=np.float64) @ EXPERT_GAINS
    return np.stack([-push, push], axis=1).astype(np.float32)


@hookimpl
def agentrt_register_teachers() -> dict[str, Any]:
    return {"checkpoint": build_checkpoint_teacher, "scripted": build_scripted_teacher}
