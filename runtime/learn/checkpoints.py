"""Student checkpoints on disk: safetensors files, written atomically (temp file, fsync, rename).

Nothing here unpickles: weights are loaded with safetensors only. A file that cannot be read
(truncated, overwritten) raises ``CheckpointError`` and is moved aside into ``quarantine/``, never
deleted: an operator may want to look at it. How checkpoints and the registry stay one
transaction is described in ``runtime.learn.registry``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.errors import CheckpointError
from runtime.files import atomic_write

if TYPE_CHECKING:
    import torch

_CHECKPOINT = re.compile(r"^student-v(\d+)\.safetensors$")
#: What ``atomic_write`` leaves behind when the process dies before its rename: ``.<name>.<random>.tmp``.
_TEMP_FILE = re.compile(r"^\..+\.tmp$")
QUARANTINE = "quarantine"
#: The distiller's replay buffer and held-out set, beside the student checkpoints.
LEARNER_DATA = "learner.safetensors"


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


def _unreadable(path: str | os.PathLike[str], exc: Exception) -> CheckpointError:
    return CheckpointError(f"{path} cannot be read: {type(exc).__name__}: {exc}")


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a checkpoint; CheckpointError if the file is missing or damaged."""
    from safetensors import SafetensorError

    try:
        return load_safetensors(path)
    except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, exc) from exc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """A checkpoint's metadata, reading only its header; CheckpointError if it cannot be read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, exc) from exc


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """numpy arrays as one safetensors file, atomically."""
    from safetensors.numpy import save

    atomic_write(path, save({name: np.ascontiguousarray(array) for name, array in arrays.items()}, dict(metadata)))


def read_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, metadata) saved by ``save_arrays``; CheckpointError if the file is missing or damaged."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}, dict(handle.metadata() or {})  # noqa: SIM118
    except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, exc) from exc


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

    def quarantine(self, path: Path) -> Path | None:
        """Move a damaged file into ``quarantine/`` (replacing an earlier one of that name); None if
        it is gone already (another process moved it first)."""
        target = self.directory / QUARANTINE / path.name
        target.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        return target

    def quarantined(self, version: int) -> Path | None:
        """Where the quarantined file of ``version`` lies, if it was quarantined."""
        target = self.directory / QUARANTINE / self.path(version).name
        return target if target.exists() else None

    def remove_temp_files(self) -> list[str]:
        """Delete the temp files of writes a crash cut short (names of those removed)."""
        if not self.directory.exists():
            return []
        removed = []
        for entry in self.directory.iterdir():
            if _TEMP_FILE.match(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return sorted(removed)
