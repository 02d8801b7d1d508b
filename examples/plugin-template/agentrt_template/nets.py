"""The torch network of the ``residual_mlp`` student (imported by its factory only: it imports torch)."""

from __future__ import annotations

import math

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``x + Linear(GELU(Linear(LayerNorm(x))))``: a pre-norm residual block."""

    def __init__(self, width: int, expansion: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.expand = nn.Linear(width, expansion * width)
        self.project = nn.Linear(expansion * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(nn.functional.gelu(self.expand(self.norm(x))))


class ResidualMLP(nn.Module):
    """Flattened features -> ``width`` -> residual blocks -> LayerNorm -> outputs.

    ``forward(x)`` returns ``(B, output_size)`` (logits for a discrete action space, actions for a
    box). ``forward_features(x)`` also returns the normalised last hidden layer, for feature-hint
    strategies.
    """

    def __init__(self, input_shape: tuple[int, ...], output_size: int, width: int, blocks: int, expansion: int) -> None:
        super().__init__()
        self.embed = nn.Linear(math.prod(input_shape), width)
        self.blocks = nn.ModuleList(ResidualBlock(width, expansion) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, output_size)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.embed(x.float().flatten(start_dim=1))
        for block in self.blocks:
            hidden = block(hidden)
        features = self.norm(hidden)
        return self.head(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
