"""Where a model runs: ``device`` and ``dtype`` of the teacher, distillation and decision sections.

``device`` is "auto" (CUDA when ``torch.cuda.is_available()``, else the CPU), "cpu", "cuda" or
"cuda:N"; ``dtype`` is "float32", "bfloat16" or "float16". A device this host lacks, or a dtype
the device cannot run, is a ConfigError naming the key: an explicit "cuda" never falls back to the
CPU, so a GPU that went missing is noticed, not paid for in latency. Models are built on the CPU
(seeded, so every process starts from the same weights) and moved once; arrays cross between host
and device only at the boundary (``inputs``, ``host``). Checkpoints stay float32 on the CPU.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.config import Settings
from runtime.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: The sections whose models run on a device; each has ``device`` and ``dtype`` keys.
SECTIONS = ("teacher", "distillation", "decision")


@dataclass(frozen=True)
class Placement:
    """A resolved device and dtype (torch objects), and the keys they came from."""

    device: torch.device
    dtype: torch.dtype
    section: str

    def __str__(self) -> str:
        return f"{self.device} {str(self.dtype).removeprefix('torch.')}"

    @property
    def default(self) -> bool:
        """The CPU in float32: nothing moves, and the numpy fast path may serve."""
        return self.device.type == "cpu" and str(self.dtype) == "torch.float32"

    def module(self, module: Any) -> Any:
        """``module`` moved to this device and dtype (in place, as torch does; returned for chaining)."""
        return module.to(device=self.device, dtype=self.dtype)

    def inputs(self, array: np.ndarray) -> torch.Tensor:
        """A host array as this device's input tensor (integer arrays become this dtype too)."""
        import torch

        return torch.as_tensor(np.asarray(array)).to(device=self.device, dtype=self.dtype)

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A host array on this device with its own dtype: training data for float32 weights
        (``dtype`` applies to the forward pass, through ``autocast``), and integer labels."""
        import torch

        return torch.from_numpy(np.asarray(array)).to(self.device)

    @staticmethod
    def host(tensor: torch.Tensor) -> np.ndarray:
        """A result back on the host, float32 (numpy has no bfloat16)."""
        import torch

        return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()

    def autocast(self) -> Any:
        """Mixed precision for training: float32 weights, this dtype for the forward pass."""
        import torch

        if str(self.dtype) == "torch.float32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def on_host(section: str = "decision") -> Placement:
    """The CPU in float32: where a model that has no other placement runs."""
    import torch

    return Placement(torch.device("cpu"), torch.float32, section)


def placement(settings: Settings, section: str) -> Placement:
    """The resolved ``[section] device`` and ``dtype``; ConfigError naming the key if this host
    cannot run them."""
    import torch

    keys = getattr(settings, section)
    requested, dtype_name = keys.device, keys.dtype
    cuda = torch.cuda.is_available()
    if requested == "auto":
        device = torch.device("cuda" if cuda else "cpu")
    else:
        device = torch.device(requested)
        if device.type == "cuda" and not cuda:
            raise ConfigError(
                f"{section}.device = {requested!r}, but CUDA is not available on this host "
                f"(torch {torch.__version__}, torch.cuda.is_available() is false); use 'auto' or 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{section}.device = {requested!r}, but this host has {torch.cuda.device_count()} CUDA device(s)"
            )
    if dtype_name == "float16" and section == "distillation":
        raise ConfigError(
            "distillation.dtype = 'float16' would need loss scaling to train; use 'bfloat16' or 'float32'"
        )
    if dtype_name == "float16" and device.type == "cpu":
        raise ConfigError(
            f"{section}.dtype = 'float16' needs CUDA (the device resolved to the CPU); use 'bfloat16' or 'float32'"
        )
    return Placement(device, getattr(torch, dtype_name), section)


def check_placements(settings: Settings) -> dict[str, str]:
    """Every section's placement resolved (``agentrt up`` does this before starting roles):
    section -> "device dtype"; ConfigError naming the first key this host cannot run."""
    return {section: str(placement(settings, section)) for section in SECTIONS}
