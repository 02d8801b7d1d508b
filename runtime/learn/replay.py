"""The distiller's replay buffer: labelled samples (student features, teacher outputs, optional
teacher features) bounded in samples and in bytes, with optional priorities.

Eviction is "oldest" (a ring) or "lowest_priority" (the sample the student already gets most
right goes first). With ``prioritized`` sampling, a sample is drawn with probability proportional
to ``(priority + epsilon) ** alpha`` (Schaul et al. 2016); priorities are the student's per-sample
loss or disagreement, refreshed after each training step.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-3


class ReplayBuffer:
    def __init__(
        self,
        max_samples: int,
        max_bytes: int,
        eviction: str = "oldest",
        prioritized: bool = False,
        alpha: float = 0.6,
        seed: int = 0,
    ) -> None:
        if eviction not in ("oldest", "lowest_priority"):
            raise ValueError(f"eviction must be 'oldest' or 'lowest_priority', not {eviction!r}")
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.eviction = eviction
        self.prioritized = prioritized
        self.alpha = alpha
        self.random = np.random.default_rng(seed)
        self.columns: dict[str, np.ndarray] = {}
        self.priorities = np.zeros(0)
        self.capacity = 0
        self.size = 0
        self.next = 0
        self.added = 0
        self.evicted = 0

    def _allocate(self, batch: dict[str, np.ndarray]) -> None:
        per_sample = sum(array[0].nbytes for array in batch.values()) + self.priorities.itemsize
        self.capacity = max(1, min(self.max_samples, self.max_bytes // per_sample))
        self.columns = {
            name: np.zeros((self.capacity,) + array.shape[1:], dtype=np.float32) for name, array in batch.items()
        }
        self.priorities = np.zeros(self.capacity)

    @property
    def nbytes(self) -> int:
        return sum(column[: self.size].nbytes for column in self.columns.values())

    def add(self, priority: float | np.ndarray = 1.0, **batch: np.ndarray) -> None:
        """Add a batch: each keyword is an array with the batch on its first axis."""
        if not self.columns:
            self._allocate(batch)
        count = len(next(iter(batch.values())))
        priorities = np.broadcast_to(np.asarray(priority, dtype=np.float64), (count,))
        for row in range(count):
            slot = self._slot()
            for name, column in self.columns.items():
                column[slot] = batch[name][row]
            self.priorities[slot] = priorities[row]
        self.added += count

    def _slot(self) -> int:
        if self.size < self.capacity:
            slot = self.size if self.eviction == "lowest_priority" else self.next
            self.size += 1
        else:
            self.evicted += 1
            slot = int(self.priorities.argmin()) if self.eviction == "lowest_priority" else self.next
        self.next = (self.next + 1) % self.capacity
        return slot

    def sample(self, batch_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Return (indices, columns) of a random minibatch."""
        count = min(batch_size, self.size)
        if self.prioritized:
            weights = (self.priorities[: self.size] + EPSILON) ** self.alpha
            index = self.random.choice(self.size, size=count, p=weights / weights.sum())
        else:
            index = self.random.integers(0, self.size, size=count)
        return index, {name: column[index] for name, column in self.columns.items()}

    def update_priorities(self, index: np.ndarray, priorities: np.ndarray) -> None:
        self.priorities[index] = priorities

    def snapshot(self) -> dict[str, np.ndarray]:
        """Its samples, oldest first, with their ``priorities``: what ``restore`` takes back."""
        if self.size < self.capacity:
            order = np.arange(self.size)
        else:  # full: the ring's oldest slot is the next one to be overwritten
            order = (np.arange(self.capacity) + self.next) % self.capacity
        return {"priorities": self.priorities[order], **{name: column[order] for name, column in self.columns.items()}}

    def restore(self, snapshot: dict[str, np.ndarray], added: int, evicted: int) -> None:
        """Take back a ``snapshot`` (into an empty buffer), within this buffer's bounds: with smaller
        bounds than the snapshot's, the oldest samples are evicted as if they had just arrived."""
        columns = dict(snapshot)
        priorities = columns.pop("priorities")
        if len(priorities):
            self.add(priority=priorities, **columns)
        self.evicted += evicted
        self.added = added

    def __len__(self) -> int:
        return self.size
