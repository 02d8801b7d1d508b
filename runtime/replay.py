"""The distiller's replay buffer: a fixed-capacity ring of (features, observation, teacher output)."""

from __future__ import annotations

import numpy as np


class ReplayBuffer:
    """Keeps the newest ``capacity`` labelled samples; the oldest are overwritten first."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.random = np.random.default_rng(seed)
        self.features: np.ndarray | None = None
        self.outputs: np.ndarray | None = None
        self.size = 0
        self.next = 0
        self.added = 0

    def add(self, features: np.ndarray, outputs: np.ndarray) -> None:
        """Add a batch: features (B, ...) and teacher outputs (B, K)."""
        if self.features is None:
            self.features = np.zeros((self.capacity,) + features.shape[1:], dtype=np.float32)
            self.outputs = np.zeros((self.capacity,) + outputs.shape[1:], dtype=np.float32)
        for start in range(0, len(features), self.capacity):
            chunk = slice(start, start + self.capacity)
            count = len(features[chunk])
            index = (self.next + np.arange(count)) % self.capacity
            self.features[index] = features[chunk]
            self.outputs[index] = outputs[chunk]
            self.next = (self.next + count) % self.capacity
            self.size = min(self.size + count, self.capacity)
        self.added += len(features)

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.random.integers(0, self.size, size=min(batch_size, self.size))
        return self.features[index], self.outputs[index]

    def __len__(self) -> int:
        return self.size
