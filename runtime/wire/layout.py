"""The MLP array layout: a student's weights as plain arrays that numpy alone runs (no torch).

What ``agentrt student export --format safetensors+json`` writes and what the edge mode sends a
peer (docs/protocol.md, Edge mode). The weights are ``layers.{i}.weight`` (float32 ``[out, in]``)
and ``layers.{i}.bias`` (float32 ``[out]``) for ``i`` in ``0 .. layers-1``, input to output; the
metadata (a JSON object) has at least ``format`` (``LAYOUT_NAME``), ``format_version``,
``layers``, ``activation``, ``input_shape``, ``output_size``, ``version`` and ``action_space``.
With ``x`` an observation flattened in C order as float32::

    for i in 0 .. layers-1:  x = x @ layers.{i}.weight.T + layers.{i}.bias;  if i < layers-1: x = act(x)

``act`` is ``relu`` (max(x, 0)) or ``tanh``. For a discrete action space the outputs are logits
and the action is ``argmax + start``; for a box they are the action, reshaped and clipped to the
space's bounds (``"inf"``/``"-inf"`` in JSON: no bound).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

#: The layout's ``format`` and ``format_version``: a reader refuses any other.
LAYOUT_NAME, LAYOUT_VERSION = "agentrt-mlp", 1
#: The activations every reader implements.
ACTIVATIONS: dict[str, Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]] = {
    "relu": lambda x: np.maximum(x, 0, out=x),
    "tanh": lambda x: np.tanh(x, out=x),
}
#: The safetensors metadata key that holds the layout's metadata (also written as a JSON file beside it).
METADATA_KEY = "agentrt"


def weight_name(index: int) -> str:
    return f"layers.{index}.weight"


def bias_name(index: int) -> str:
    return f"layers.{index}.bias"


def json_bound(value: Any) -> np.ndarray[Any, Any]:
    """A space's bound from JSON: nested lists of numbers, ``"inf"`` and ``"-inf"``."""
    return np.asarray(np.vectorize(float, otypes=[np.float64])(np.asarray(value, dtype=object)))


class Actions:
    """Outputs to actions for an action space in its JSON form (``json_space``): argmax plus
    ``start`` for a discrete space; for a box, the outputs reshaped and clipped to its bounds."""

    def __init__(self, space: Mapping[str, Any]) -> None:
        self.discrete = space["type"] == "discrete"
        if self.discrete:
            self.start = int(space.get("start", 0))
        else:
            self.shape = tuple(space["shape"])
            self.dtype = np.dtype(space.get("dtype", "float32"))
            self.low, self.high = json_bound(space["low"]), json_bound(space["high"])

    def __call__(self, outputs: np.ndarray[Any, Any]) -> Any:
        """The action one row of outputs stands for."""
        if self.discrete:
            return int(outputs.argmax()) + self.start
        clipped: np.ndarray[Any, Any] = np.clip(outputs.reshape(self.shape), self.low, self.high)
        return clipped.astype(self.dtype)


class LayoutStudent:
    """A student in the array layout, run with numpy: ``outputs(obs_batch)``, ``action(outputs_row)``
    and ``act(obs)``."""

    def __init__(self, tensors: Mapping[str, np.ndarray[Any, Any]], metadata: Mapping[str, Any]) -> None:
        """ValueError if the metadata is not the layout's or the tensors do not fit it."""
        if metadata.get("format") != LAYOUT_NAME or metadata.get("format_version") != LAYOUT_VERSION:
            raise ValueError(
                f"not an {LAYOUT_NAME} v{LAYOUT_VERSION} layout: format {metadata.get('format')!r} "
                f"version {metadata.get('format_version')!r}"
            )
        activation = metadata.get("activation")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.metadata = dict(metadata)
        self.version = int(metadata["version"])
        self.activation = ACTIVATIONS[activation]
        width = math.prod(metadata["input_shape"])
        self.input_size = width
        # Transposed once: (in, out), so a row vector multiplies from the left without a copy.
        self.layers: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
        for index in range(int(metadata["layers"])):
            weight = np.asarray(tensors[weight_name(index)], dtype=np.float32)
            bias = np.asarray(tensors[bias_name(index)], dtype=np.float32)
            if weight.ndim != 2 or weight.shape[1] != width or bias.shape != (weight.shape[0],):
                raise ValueError(f"layer {index}: weight {list(weight.shape)} and bias {list(bias.shape)} do not fit")
            self.layers.append((np.ascontiguousarray(weight.T), bias))
            width = weight.shape[0]
        if width != metadata["output_size"]:
            raise ValueError(f"the last layer has {width} outputs, the metadata says {metadata['output_size']}")
        self.action = Actions(metadata["action_space"])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LayoutStudent:
        """Read a layout's safetensors file (its metadata is in the file's header)."""
        from safetensors import safe_open
        from safetensors.numpy import load_file

        with safe_open(str(path), framework="numpy") as handle:
            metadata = json.loads((handle.metadata() or {})[METADATA_KEY])
        return cls(load_file(str(path)), metadata)

    def outputs(self, observations: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The student's outputs (B, output_size) for a batch of observations (B, ...)."""
        x = np.asarray(observations, dtype=np.float32).reshape(len(observations), self.input_size)
        last = len(self.layers) - 1
        for index, (weight, bias) in enumerate(self.layers):
            x = x @ weight
            x += bias
            if index < last:
                x = self.activation(x)
        return x

    def act(self, observation: np.ndarray[Any, Any]) -> Any:
        """The action for one observation."""
        return self.action(self.outputs(observation[None])[0])
