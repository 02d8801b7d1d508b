"""Exporting a student version out of the runtime: ONNX, TorchScript, or a torch-free array layout.

``export_student(settings, format, out, version)`` writes one registry version (the serving one by
default) with its metadata; ``agentrt student export`` is its command line, and the edge mode
(docs/protocol.md, Edge mode) sends the same payloads to peers.

**Formats.** A student declares what it can be exported to with an ``export_formats`` attribute
(``runtime.learn.nets.FeatureNet`` has ONNX and TorchScript; the MLP adds the array layout). A
student without the attribute is tried with ONNX and TorchScript. Asking for another format raises
``ExportError`` naming the formats it has.

**The array layout** (``safetensors+json``), for MLPs, runs with numpy alone or any language that
reads safetensors (its header is JSON): tensor names, order and the forward pass are described in
``runtime.wire.layout``, whose ``LayoutStudent`` runs it. The metadata (in the safetensors header
under ``agentrt``, and as the JSON file beside it) is ``export_metadata`` plus the architecture
keys of ``mlp_layout``.

**Input.** The student sees perception's features, not the raw observation. A layout is exported
only when no perception transform is configured (``input.transforms`` is then empty, the features
are the observation); ONNX and TorchScript record the transforms in their metadata and leave
applying them to whoever runs the file.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from runtime import extras
from runtime.errors import ExportError
from runtime.files import atomic_write
from runtime.learn import registry
from runtime.learn.checkpoints import read_checkpoint, save_arrays
from runtime.learn.models import build_student, feature_space
from runtime.wire import layout, protocol
from runtime.wire.spaces import Space, agent_spaces

if TYPE_CHECKING:
    from torch import nn

    from runtime.config import Settings
    from runtime.plugin.pluginmanager import Plugins

# The two an edge peer may ask for are named by the protocol (``student_request``).
ONNX, TORCHSCRIPT, LAYOUT = protocol.EDGE_ONNX, "torchscript", protocol.EDGE_LAYOUT
FORMATS = (ONNX, TORCHSCRIPT, LAYOUT)
#: What a student without an ``export_formats`` attribute is tried with.
DEFAULT_FORMATS = (ONNX, TORCHSCRIPT)
#: ONNX input and output names, and the opset: old enough for every onnxruntime of the last years.
ONNX_INPUT, ONNX_OUTPUT, ONNX_OPSET = "features", "outputs", 17
SUFFIXES = {ONNX: ".onnx", TORCHSCRIPT: ".pt", LAYOUT: ".safetensors"}


@dataclass(frozen=True)
class Exported:
    """One exported version: where it went (and the layout's JSON beside it), its size, its metadata."""

    path: Path
    format: str
    version: int
    size_bytes: int
    metadata: dict[str, Any]


def export_formats(student: object) -> tuple[str, ...]:
    """The formats ``student`` can be exported to (its ``export_formats``, else ONNX and TorchScript)."""
    return tuple(getattr(student, "export_formats", DEFAULT_FORMATS))


def check_format(student: object, fmt: str, plugin: str) -> None:
    """ExportError unless ``student`` (built by the student plugin ``plugin``) exports to ``fmt``."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    formats = export_formats(student)
    if fmt not in formats:
        raise ExportError(
            f"the {plugin!r} student cannot be exported as {fmt}; "
            f"it can be exported as {', '.join(formats) or 'nothing'}"
        )


def json_space(space: Space) -> dict[str, Any]:
    """A space as JSON: the wire form (docs/protocol.md, Spaces) with bounds as nested lists, where
    infinite bounds are the strings ``"inf"`` and ``"-inf"`` (JSON has no infinity)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start)}
    assert isinstance(space, spaces.Box)

    def bound(values: np.ndarray) -> Any:
        return np.vectorize(lambda v: float(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf"), otypes=[object])(
            values
        ).tolist()

    return {
        "type": "box",
        "shape": list(space.shape),
        "dtype": space.dtype.name,
        "low": bound(space.low),
        "high": bound(space.high),
    }


def export_metadata(
    settings: Settings, record: registry.VersionRecord, observation_space: Space, action_space: Space, fmt: str
) -> dict[str, Any]:
    """What every export carries (the layout's JSON; ONNX metadata_props; TorchScript extra files):
    ``format``/``format_version`` (the layout's), ``export_format``, the student's ``version``,
    ``parent``, ``status``, held-out ``heldout_agreement``/``heldout_loss``, ``student`` (plugin and
    params), the agent's spaces, and ``input`` (the perception transforms the features come from)."""
    return {
        "format": layout.LAYOUT_NAME,
        "format_version": layout.LAYOUT_VERSION,
        "export_format": fmt,
        "version": record.version,
        "parent": record.parent,
        "status": record.status,
        "created": record.created,
        "heldout_agreement": record.heldout_agreement,
        "heldout_loss": record.heldout_loss,
        "student": {"plugin": settings.student.plugin, "params": dict(settings.student.params)},
        "observation_space": json_space(observation_space),
        "action_space": json_space(action_space),
        "input": {"transforms": list(settings.perception.transforms), "params": dict(settings.perception.params)},
    }


def mlp_layout(student: nn.Module) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The array layout of an MLP student: (tensors by name, the architecture keys of its metadata:
    ``layers``, ``activation``, ``input_shape``, ``output_size``). ExportError for another network."""
    from torch import nn

    from runtime.learn.nets import MLP, Int8Linear

    if not isinstance(student, MLP):
        raise ExportError(f"the {LAYOUT} layout holds MLPs only, not {type(student).__name__}")
    if student.activation not in layout.ACTIVATIONS:
        raise ExportError(
            f"the {LAYOUT} layout supports the activations {', '.join(layout.ACTIVATIONS)}, "
            f"not {student.activation!r}; export as onnx instead"
        )
    linears = [m for m in student.body if isinstance(m, (nn.Linear, Int8Linear))] + [student.head]
    tensors: dict[str, np.ndarray] = {}
    for index, linear in enumerate(linears):
        # An int8 layer travels dequantized: the layout's readers multiply float32 arrays.
        weight = linear.dequantized() if isinstance(linear, Int8Linear) else linear.weight
        tensors[layout.weight_name(index)] = weight.detach().numpy().astype(np.float32, copy=True)
        tensors[layout.bias_name(index)] = linear.bias.detach().numpy().astype(np.float32, copy=True)
    architecture = {
        "layers": len(linears),
        "activation": student.activation,
        "input_shape": list(student.input_shape),
        "output_size": student.output_size,
    }
    return tensors, architecture


def onnx_bytes(student: nn.Module, input_shape: tuple[int, ...], metadata: Mapping[str, Any]) -> bytes:
    """``student`` as an ONNX model (batch axis dynamic; input ``features``, output ``outputs``),
    with ``metadata`` as JSON in its ``agentrt`` metadata property."""
    extras.require("onnx", "export", "exporting a student as ONNX")
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter: it needs no onnxscript, and a student is a plain graph.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            student,
            (torch.zeros(1, *input_shape),),
            buffer,  # type: ignore[arg-type]  # the exporter writes to file objects too (documented)
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
        )
    model = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, {"agentrt": json.dumps(metadata)})
    data: bytes = model.SerializeToString()
    return data


def torchscript_bytes(student: nn.Module, input_shape: tuple[int, ...], metadata: Mapping[str, Any]) -> bytes:
    """``student`` traced to TorchScript, with ``metadata`` as the extra file ``agentrt.json``."""
    import torch

    traced = torch.jit.trace(student, torch.zeros(1, *input_shape))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"agentrt.json": json.dumps(metadata)})
    return buffer.getvalue()


def check_layout_input(settings: Settings) -> None:
    """ExportError if perception transforms the observations: the layout's reader feeds the student
    raw observations."""
    if settings.perception.transforms:
        raise ExportError(
            f"the {LAYOUT} layout runs the student on raw observations, but perception transforms them "
            f"({', '.join(settings.perception.transforms)}); export as onnx and apply the transforms yourself"
        )


def layout_json_path(path: Path) -> Path:
    """The JSON file beside a layout's safetensors file."""
    return path.with_suffix(".json")


#: The row of version 0, the student's initial weights (what decision serves before any promotion).
INITIAL = "initial"


class Exporter:
    """One agent's student, built once, exported at any version: ``write`` (a file, for ``agentrt
    student export``) and ``student_message`` (the ``student`` message of the edge mode)."""

    def __init__(self, settings: Settings, plugins: Plugins) -> None:
        self.settings = settings
        self.observation_space, self.action_space = agent_spaces(settings.agent.table())
        # Seeded as decision builds it: version 0 here is the initial student decision serves.
        self.student = build_student(plugins, settings, self.observation_space, self.action_space).eval()
        self.initial = {name: tensor.clone() for name, tensor in self.student.state_dict().items()}
        # The network of the version loaded last: the configured student, or a compressed version's
        # own (pruned, int8), built from its checkpoint's metadata.
        self.loaded: nn.Module = self.student
        self.input_shape = tuple(feature_space(plugins, settings, self.observation_space).shape or ())

    def load(self, version: int | None = None) -> registry.VersionRecord:
        """Load registry ``version`` (None: the serving one); its row. ExportError if there is none."""
        run_dir = Path(self.settings.daemon.run_dir)
        if not (run_dir / registry.FILE_NAME).exists():
            raise ExportError(f"no student registry in {run_dir}")
        store = registry.Registry(run_dir, readonly=True)
        try:
            chosen = version if version is not None else store.serving()
            record = store.get(chosen) if chosen else None
        finally:
            store.close()
        if record is None or record.status in (registry.WRITING, registry.QUARANTINED):
            what = f"version {version}" if version is not None else "serving version (none was promoted yet)"
            raise ExportError(f"the registry in {run_dir} has no {what}")
        return self.load_file(record.version, run_dir / record.path)

    def load_file(self, version: int, path: str | Path | None) -> registry.VersionRecord:
        """Load ``version`` from its checkpoint ``path`` (version 0: the initial weights, no file); its
        row, from the checkpoint's own metadata. CheckpointError if the file cannot be read."""
        self.loaded = self.student
        if version == 0:
            self.student.load_state_dict(self.initial)
            return registry.VersionRecord(0, None, 0.0, 0, 0, None, None, None, INITIAL, "")
        from runtime.learn.nets import weights_of

        state, metadata = read_checkpoint(path or "")
        weights = weights_of(state, metadata)
        if isinstance(weights, dict):
            self.student.load_state_dict(weights)
        else:
            self.loaded = weights
        return registry.record_from_metadata(version, metadata)

    def export(self, fmt: str, record: registry.VersionRecord) -> tuple[dict[str, Any], dict[str, np.ndarray], bytes]:
        """The loaded version as ``fmt``: (metadata, the layout's tensors (else empty), the file's bytes
        (the layout: empty)). ExportError if the student cannot be exported as ``fmt``."""
        check_format(self.loaded, fmt, self.settings.student.plugin)
        metadata = export_metadata(self.settings, record, self.observation_space, self.action_space, fmt)
        if fmt == LAYOUT:
            check_layout_input(self.settings)
            tensors, architecture = mlp_layout(self.loaded)
            metadata.update(architecture)
            return metadata, tensors, b""
        write = onnx_bytes if fmt == ONNX else torchscript_bytes
        return metadata, {}, write(self.loaded, self.input_shape, metadata)

    def write(self, fmt: str, out: str | Path | None = None, version: int | None = None) -> Exported:
        """Write registry ``version`` (None: the serving one) as ``fmt`` to ``out`` (default
        ``student-v<N>`` plus the format's suffix, here); the layout's JSON goes beside it
        (``layout_json_path``). Files are written atomically. ExportError if the student cannot be
        exported as ``fmt`` or the version does not exist."""
        record = self.load(version)
        metadata, tensors, data = self.export(fmt, record)
        path = Path(out) if out is not None else Path(f"student-v{record.version}{SUFFIXES[fmt]}")
        if fmt == LAYOUT:
            save_arrays(path, tensors, {layout.METADATA_KEY: json.dumps(metadata)})
            atomic_write(layout_json_path(path), (json.dumps(metadata, indent=2) + "\n").encode())
        else:
            atomic_write(path, data)
        return Exported(path, fmt, record.version, path.stat().st_size, metadata)

    def student_message(
        self, fmt: str, version: int, path: str | Path | None, announced_at: float | None = None
    ) -> bytes:
        """The edge mode's ``student`` message for ``version`` (its checkpoint at ``path``) as ``fmt``
        (``protocol.EDGE_FORMATS``). ExportError or CheckpointError if it cannot be made."""
        if fmt not in protocol.EDGE_FORMATS:
            raise ExportError(f"format {fmt!r} is not one of {', '.join(protocol.EDGE_FORMATS)}")
        metadata, tensors, data = self.export(fmt, self.load_file(version, path))
        fields: dict[str, Any] = {"version": version, "format": fmt, "metadata": metadata, "announced_at": announced_at}
        if fmt == LAYOUT:
            fields["tensors"] = {name: protocol.encode_array(array) for name, array in tensors.items()}
        else:
            fields["model"] = data
        return protocol.encode("student", **fields)


def export_student(
    settings: Settings, plugins: Plugins, fmt: str, out: str | Path | None = None, version: int | None = None
) -> Exported:
    """``Exporter(settings, plugins).write(fmt, out, version)``: one version to one file."""
    return Exporter(settings, plugins).write(fmt, out, version)
