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
        hidden: list[int] | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        self.input_shape, self.output_size = tuple(input_shape), output_size
        self.channels, self.kernel, self.stride = list(channels), kernel, stride
        self.activation, self.hidden, self.scale = activation, list(hidden or []), scale
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
        layers.append(nn.Flatten())
        with torch.no_grad():  # the flattened size depends on padding/stride rounding: let torch work it out
            flat = nn.Sequential(*layers)(torch.zeros(1, self.in_channels, height, width)).shape[1]
        for size in self.hidden:
            layers += [nn.Linear(flat, size), ACTIVATIONS[activation]()]
            flat = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(flat, output_size)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # uint8-valued features work too. A student's scaling is the image transform's job; a
        # teacher reads raw observations, so it scales them itself (``scale``).
        x = x.to(self.head.weight.dtype)
        if self.scale != 1.0:
            x = x * self.scale
        if self.channels_last:
            x = x.movedim(-1, -3)
        x = x.reshape(x.shape[0], self.in_channels, *x.shape[-2:])
        features = self.body(x)
        return self.head(features), features

    def architecture(self) -> dict[str, str]:
        """As ``MLP.architecture``: this network's shape as safetensors metadata (a pixel teacher's file)."""
        return {
            "architecture": "cnn",
            "input_shape": json.dumps(list(self.input_shape)),
            "output_size": str(self.output_size),
            "channels": json.dumps(self.channels),
            "kernel": str(self.kernel),
            "stride": str(self.stride),
            "channels_last": json.dumps(self.channels_last),
            "activation": self.activation,
            "hidden": json.dumps(self.hidden),
            "scale": repr(self.scale),
        }

    @classmethod
    def from_architecture(cls, metadata: Mapping[str, str]) -> CNN:
        """The network ``architecture()`` described (weights not loaded); ValueError for another format."""
        if metadata.get("architecture") != "cnn":
            raise ValueError(f"architecture {metadata.get('architecture')!r} is not supported (expected 'cnn')")
        return cls(
            tuple(json.loads(metadata["input_shape"])),
            int(metadata["output_size"]),
            json.loads(metadata["channels"]),
            int(metadata["kernel"]),
            int(metadata["stride"]),
            json.loads(metadata["channels_last"]),
            metadata.get("activation", "relu"),
            json.loads(metadata.get("hidden", "[]")),
            float(metadata.get("scale", "1.0")),
        )


#: The networks a teacher checkpoint may hold, by its ``architecture`` metadata.
ARCHITECTURES: dict[str, type[MLP] | type[CNN]] = {"mlp": MLP, "cnn": CNN}


def from_architecture(metadata: Mapping[str, str]) -> MLP | CNN:
    """The network a checkpoint's metadata describes (weights not loaded); ValueError for an unknown one."""
    kind = ARCHITECTURES.get(metadata.get("architecture", ""))
    if kind is None:
        known = ", ".join(ARCHITECTURES)
        raise ValueError(f"architecture {metadata.get('architecture')!r} is not supported (expected one of {known})")
    return kind.from_architecture(metadata)


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


class Int8Linear(nn.Module):
    """A linear layer whose weights are stored as int8 with one float scale per output unit
    (symmetric, per channel): a quarter of a float layer's weight bytes. Its buffers are plain
    tensors, so its state dict is a safetensors checkpoint like any other; it computes in float
    (``torch.ao.quantization`` is deprecated in torch 2.13, and a small MLP's forward is bound by
    call overhead, not arithmetic), and the numpy fast path dequantizes it once per version served."""

    weight: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features))

    @classmethod
    def of(cls, linear: nn.Linear) -> Int8Linear:
        """``linear`` quantized: each row scaled so that its largest magnitude becomes 127."""
        quantized = cls(linear.in_features, linear.out_features)
        weight = linear.weight.detach()
        scale = weight.abs().amax(dim=1) / 127
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
        quantized.weight.copy_(torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        quantized.scale.copy_(scale)
        if linear.bias is not None:
            quantized.bias.copy_(linear.bias.detach())
        return quantized

    def dequantized(self) -> torch.Tensor:
        return self.weight.float() * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.dequantized(), self.bias)


def quantize_int8(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.Linear`` replaced by an ``Int8Linear`` (in place; returned for chaining)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear.of(child))
        else:
            quantize_int8(child)
    return module


def prune_mlp(mlp: MLP, fraction: float) -> MLP:
    """A copy of ``mlp`` with ``fraction`` of each hidden layer's units removed (structured pruning,
    at least one unit kept): those whose incoming and outgoing weights have the smallest product of
    L2 norms, which is what the unit's output varies by. What it does not vary by, its output at
    zero input ``act(bias)``, is folded into the next layer's bias, so a unit that is mostly bias
    is removed without shifting the outputs. The result is a smaller dense MLP, so it saves bytes
    and time without sparse kernels."""
    linears = [m for m in mlp.body if isinstance(m, nn.Linear)] + [mlp.head]
    activation = ACTIVATIONS[mlp.activation]()
    keep: list[torch.Tensor] = []
    next_biases: list[torch.Tensor] = []  # each outgoing layer's bias, with its removed inputs folded in
    for incoming, outgoing in zip(linears, linears[1:], strict=False):
        importance = incoming.weight.detach().norm(dim=1) * outgoing.weight.detach().norm(dim=0)
        count = max(1, round(incoming.out_features * (1 - fraction)))
        kept = importance.topk(count).indices.sort().values
        removed = torch.ones(incoming.out_features, dtype=torch.bool)
        removed[kept] = False
        with torch.no_grad():
            constant = activation(incoming.bias[removed])
            next_biases.append(outgoing.bias + outgoing.weight[:, removed] @ constant)
        keep.append(kept)
    pruned = MLP(mlp.input_shape, mlp.output_size, [len(k) for k in keep], mlp.activation)
    pruned_linears = [m for m in pruned.body if isinstance(m, nn.Linear)] + [pruned.head]
    rows: list[torch.Tensor | None] = [*keep, None]  # which output units each layer keeps (all for the head)
    columns: list[torch.Tensor | None] = [None, *keep]  # which input units it still sees
    biases = [linears[0].bias, *next_biases]
    with torch.no_grad():
        for source, target, row, column, bias in zip(linears, pruned_linears, rows, columns, biases, strict=True):
            weight: torch.Tensor = source.weight
            if row is not None:
                weight, bias = weight[row], bias[row]
            if column is not None:
                weight = weight[:, column]
            target.weight.copy_(weight)
            target.bias.copy_(bias)
    return pruned


#: The checkpoint metadata key of a compressed student: JSON saying how it was compressed
#: (``int8``, ``prune``, ...). The file's other keys are its (pruned) MLP's ``architecture()``.
COMPRESSION_KEY = "agentrt.compression"


def compressed_metadata(mlp: MLP, how: Mapping[str, object]) -> dict[str, str]:
    """What a compressed student's checkpoint carries so that ``build_compressed`` can rebuild it;
    ``mlp`` is the (pruned) float network before quantization."""
    return {**mlp.architecture(), COMPRESSION_KEY: json.dumps(dict(how))}


def is_compressed(metadata: Mapping[str, str]) -> bool:
    return COMPRESSION_KEY in metadata


def build_compressed(metadata: Mapping[str, str]) -> nn.Module:
    """The student a compressed checkpoint's weights load into (weights not loaded), built from the
    file's metadata rather than the configuration: its shape is not the configured student's.
    ValueError if the metadata does not describe one."""
    try:
        how = json.loads(metadata[COMPRESSION_KEY])
        mlp = MLP.from_architecture(metadata)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a compressed student's metadata: {type(exc).__name__}: {exc}") from None
    return quantize_int8(mlp) if how.get("int8") else mlp


def weights_of(tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, torch.Tensor] | nn.Module:
    """A checkpoint's weights as the gate and the learner take them: the state dict of the configured
    student, or, for a compressed version, its built student with the weights loaded (ValueError,
    RuntimeError if they do not fit)."""
    if not is_compressed(metadata):
        return tensors
    module = build_compressed(metadata).eval()
    module.load_state_dict(tensors)
    return module
