"""Torch network definitions shared by the built-in students and teachers (imported lazily: torch)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import cast

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class FeatureNet(nn.Module):
    """A student network: ``forward_features(x) -> (outputs, features)``, and ``forward`` the outputs
    alone, so feature-hint strategies and plain inference run the same computation.

    ``export_formats``: what ``runtime.learn.export`` can write the network as."""

    export_formats: tuple[str, ...] = ("onnx", "torchscript")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class MLP(FeatureNet):
    """A multilayer perceptron over flattened observations; exposes its last hidden layer as features."""

    # The array layout too: it runs without torch (the edge mode).
    export_formats = ("onnx", "torchscript", "safetensors+json")

    def __init__(
        self, input_shape: tuple[int, ...], output_size: int, hidden: list[int], activation: str = "relu"
    ) -> None:
        super().__init__()
        _check_activation(activation)
        self.input_shape, self.output_size = tuple(input_shape), output_size
        self.hidden, self.activation = list(hidden), activation
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, output_size)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(features), features

    def architecture(self) -> dict[str, str]:
        """This network's shape as safetensors metadata: the format of the ``checkpoint`` teacher,
        whose files ``from_architecture`` rebuilds. Writers add their own provenance keys; a
        calibrated teacher's file also holds its ``temperature`` (``runtime.learn.calibration``)."""
        return {
            "architecture": "mlp",
            "input_shape": json.dumps(list(self.input_shape)),
            "output_size": str(self.output_size),
            "hidden": json.dumps(self.hidden),
            "activation": self.activation,
        }

    @classmethod
    def from_architecture(cls, metadata: Mapping[str, str]) -> MLP:
        """The network ``architecture()`` described (weights not loaded); ValueError for another format."""
        if metadata.get("architecture") != "mlp":
            raise ValueError(f"architecture {metadata.get('architecture')!r} is not supported (expected 'mlp')")
        return cls(
            tuple(json.loads(metadata["input_shape"])),
            int(metadata["output_size"]),
            json.loads(metadata["hidden"]),
            metadata.get("activation", "relu"),
        )


class CNN(FeatureNet):
    """Strided convolutions over images, then a linear head; exposes the flattened conv features.

    ``input_shape`` is ``(..., H, W, C)`` when ``channels_last`` (Gymnasium image envs and the
    ``image`` transform), else ``(..., C, H, W)``. Leading axes, such as a framestack's ``k``, are
    folded into the channels, so stacked frames are seen together by the first convolution. Each
    convolution is padded by ``kernel // 2``, so even a tiny image leaves at least one pixel.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        output_size: int,
        channels: list[int],
        kernel: int = 3,
        stride: int = 2,
        channels_last: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_activation(activation)
        if len(input_shape) < 3:
            layout = "H, W, C" if channels_last else "C, H, W"
            raise ValueError(
                f"needs an image of shape (..., {layout}), e.g. from the image transform; got shape {list(input_shape)}"
            )
        if channels_last:
            *stacked, height, width, depth = input_shape
        else:
            *stacked, depth, height, width = input_shape
        self.channels_last = channels_last
        self.in_channels = math.prod(stacked) * depth
        layers: list[nn.Module] = []
        width_in = self.in_channels
        for size in channels:
            layers += [nn.Conv2d(width_in, size, kernel, stride, padding=kernel // 2), ACTIVATIONS[activation]()]
            width_in = size
        self.body = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():  # the flattened size depends on padding/stride rounding: let torch work it out
            flat = self.body(torch.zeros(1, self.in_channels, height, width)).shape[1]
        self.head = nn.Linear(flat, output_size)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()  # uint8-valued features work too; scaling is the image transform's job
        if self.channels_last:
            x = x.movedim(-1, -3)
        x = x.reshape(x.shape[0], self.in_channels, *x.shape[-2:])
        features = self.body(x)
        return self.head(features), features


class GRUNet(FeatureNet):
    """A GRU over a history ``(T, D)`` of feature vectors (oldest first, as the ``framestack``
    transform gives); the last step's top-layer hidden state feeds a linear head and is the features."""

    def __init__(self, input_shape: tuple[int, ...], output_size: int, hidden: int = 64, layers: int = 1) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(
                f"needs a 2-D (T, D) history, e.g. from the framestack transform; got shape {list(input_shape)}"
            )
        self.gru = nn.GRU(input_shape[1], hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, output_size)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sequence, _ = self.gru(x.float())
        last = sequence[:, -1]
        return self.head(last), last


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Ensemble(FeatureNet):
    """K independently initialised members; ``forward`` is their mean, ``forward_members`` all of
    them, so the decision process can hand their disagreement to the query policy."""

    def __init__(self, members: list[FeatureNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward_members(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members])

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # nn.ModuleList yields nn.Module; every member is a FeatureNet (see __init__).
        members = (cast(FeatureNet, member) for member in self.members)
        outputs, features = zip(*(member.forward_features(x) for member in members), strict=True)
        return torch.stack(outputs).mean(dim=0), torch.cat(features, dim=1)
