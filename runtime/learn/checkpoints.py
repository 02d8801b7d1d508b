"""Student checkpoints on disk: safetensors files, written atomically (temp file, fsync, rename).

Nothing here unpickles: weights are loaded with safetensors only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.files import atomic_write

if TYPE_CHECKING:
    import torch

_CHECKPOINT = re.compile(r"^student-v(\d+)\.safetensors$")


def save_safetensors(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    from safetensors.torch import save

    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}
    atomic_write(path, save(tensors, metadata=dict(metadata or {})))


def load_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}, dict(handle.metadata() or {})  # noqa: SIM118 (safe_open is not iterable)


class CheckpointStore:
    """Versioned student checkpoints in one directory: ``student-v<version>.safetensors``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, version: int) -> Path:
        return self.directory / f"student-v{version}.safetensors"

    def versions(self) -> list[int]:
        if not self.directory.exists():
            return []
        found = (_CHECKPOINT.match(entry.name) for entry in self.directory.iterdir())
        return sorted(int(match.group(1)) for match in found if match)

    def latest(self) -> int:
        """The newest version on disk, 0 if none."""
        versions = self.versions()
        return versions[-1] if versions else 0

    def save(self, version: int, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
        path = self.path(version)
        save_safetensors(state, path, {"version": str(version), **(metadata or {})})
        return path
