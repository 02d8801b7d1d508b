"""``agentrt student export``: a registry version written as ONNX, TorchScript and the torch-free
MLP array layout, each run by its own runtime (onnxruntime, torch.jit, numpy) on observations the
student never trained on, and compared with the student in torch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

from runtime import config as config_module
from runtime.config import Settings
from runtime.errors import ExportError
from runtime.learn import export, registry
from runtime.learn.models import build_student
from runtime.plugin import pluginmanager
from runtime.testing import agentrt
from runtime.wire.layout import LayoutStudent
from runtime.wire.spaces import agent_spaces

TOLERANCE = 1e-5


def settings_for(run_dir: Path, overrides: dict | None = None) -> Settings:
    return Settings.of(
        config_module.load(None, environ={}, overrides={"daemon": {"run_dir": str(run_dir)}, **(overrides or {})})
    )


def registry_with(run_dir: Path, settings: Settings, versions: int = 2) -> torch.nn.Module:
    """A registry of ``versions`` promoted versions with distinct weights; returns the last student."""
    plugins = pluginmanager.load(settings.plugins.table())
    observation_space, action_space = agent_spaces(settings.agent.table())
    store = registry.Registry(run_dir)
    try:
        for version in range(1, versions + 1):
            student = build_student(plugins, settings, observation_space, action_space).eval()
            with torch.no_grad():
                for parameter in student.parameters():
                    parameter.add_(torch.randn_like(parameter) * version)
            record = registry.VersionRecord(
                version,
                version - 1 or None,
                time.time(),
                100,
                10,
                0.97,
                0.05,
                None,
                registry.PROMOTED,
                registry.checkpoint_path(version),
            )
            store.add(record, student.state_dict())
    finally:
        store.close()
    return student


def cartpole_observations(count: int = 256) -> np.ndarray:
    """Observations from CartPole episodes under random actions: data no student here trained on."""
    env = gymnasium.make("CartPole-v1")
    observations, (obs, _) = [], env.reset(seed=123)
    while len(observations) < count:
        observations.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.asarray(observations, dtype=np.float32)


# torch.jit.load is how a TorchScript export is run, and torch 2.13 deprecates it (the README says so).
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_every_format_runs_outside_torch_and_matches_the_student(run_dir):
    settings = settings_for(run_dir)
    student = registry_with(run_dir, settings)
    observations = cartpole_observations()
    with torch.no_grad():
        expected = student(torch.from_numpy(observations)).numpy()

    written = {}
    for fmt in export.FORMATS:
        out = run_dir / f"exported{export.SUFFIXES[fmt]}"
        result = agentrt(
            "student",
            "export",
            "--format",
            fmt,
            "--out",
            str(out),
            "--run-dir",
            str(run_dir),
            env={"AGENTRT_PLUGINS_AUTOLOAD": "false"},
        )
        assert result.returncode == 0, result.stderr
        written[fmt] = json.loads(result.stdout)
        assert written[fmt]["version"] == 2 and written[fmt]["size_bytes"] == out.stat().st_size > 0

    import onnx
    import onnxruntime

    onnx_path = run_dir / "exported.onnx"
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(None, {export.ONNX_INPUT: observations})
    np.testing.assert_allclose(outputs, expected, rtol=TOLERANCE, atol=TOLERANCE)
    metadata = json.loads({p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}["agentrt"])
    assert (metadata["version"], metadata["parent"], metadata["heldout_agreement"]) == (2, 1, 0.97)
    assert metadata["student"]["plugin"] == "mlp" and metadata["action_space"] == {
        "type": "discrete",
        "n": 2,
        "start": 0,
    }

    extra = {"agentrt.json": ""}
    scripted = torch.jit.load(str(run_dir / "exported.pt"), _extra_files=extra)
    with torch.no_grad():
        np.testing.assert_allclose(
            scripted(torch.from_numpy(observations)).numpy(), expected, rtol=TOLERANCE, atol=TOLERANCE
        )
    assert json.loads(extra["agentrt.json"])["version"] == 2

    layout = LayoutStudent.load(run_dir / "exported.safetensors")
    np.testing.assert_allclose(layout.outputs(observations), expected, rtol=TOLERANCE, atol=TOLERANCE)
    assert [layout.act(obs) for obs in observations[:20]] == expected[:20].argmax(axis=1).tolist()
    sidecar = json.loads((run_dir / "exported.json").read_text())
    assert sidecar == layout.metadata and sidecar["observation_space"]["high"][1] == "inf"


def test_an_earlier_version_is_exported_when_asked(run_dir):
    settings = settings_for(run_dir)
    registry_with(run_dir, settings)
    plugins = pluginmanager.load(settings.plugins.table())
    exported = export.export_student(settings, plugins, export.LAYOUT, run_dir / "v1.safetensors", version=1)
    assert exported.version == 1 and LayoutStudent.load(exported.path).version == 1
    with pytest.raises(ExportError, match="no version 7"):
        export.export_student(settings, plugins, export.LAYOUT, run_dir / "v7.safetensors", version=7)


def test_a_student_that_cannot_be_laid_out_as_arrays_says_so_and_still_exports_to_onnx(run_dir):
    image = {"type": "box", "shape": [16, 16, 3], "dtype": "float32", "low": 0.0, "high": 1.0}
    settings = settings_for(
        run_dir,
        {
            "agent": {"observation_space": image, "action_space": {"type": "discrete", "n": 3}},
            "student": {"plugin": "cnn"},
        },
    )
    registry_with(run_dir, settings, versions=1)
    plugins = pluginmanager.load(settings.plugins.table())
    with pytest.raises(
        ExportError,
        match="'cnn' student cannot be exported as safetensors\\+json; it can be exported as onnx, torchscript",
    ):
        export.export_student(settings, plugins, export.LAYOUT, run_dir / "cnn.safetensors")
    assert not (run_dir / "cnn.safetensors").exists()
    exported = export.export_student(settings, plugins, export.ONNX, run_dir / "cnn.onnx")
    assert exported.size_bytes > 0


def test_no_serving_version_is_a_clear_error(run_dir):
    result = agentrt("student", "export", "--format", "onnx", "--run-dir", str(run_dir))
    assert result.returncode == 1
    assert "no student registry" in result.stderr


def test_the_array_layout_refuses_a_student_behind_perception_transforms(run_dir):
    settings = settings_for(run_dir, {"perception": {"transforms": ["normalize"]}})
    registry_with(run_dir, settings, versions=1)
    plugins = pluginmanager.load(settings.plugins.table())
    with pytest.raises(ExportError, match="runs the student on raw observations.*normalize"):
        export.export_student(settings, plugins, export.LAYOUT, run_dir / "v1.safetensors")
    metadata = export.export_student(settings, plugins, export.ONNX, run_dir / "v1.onnx").metadata
    assert metadata["input"]["transforms"] == ["normalize"]  # whoever runs the ONNX file applies it


def test_a_compressed_version_exports_its_own_pruned_int8_network(run_dir):
    from runtime.learn.nets import compressed_metadata, prune_mlp, quantize_int8

    settings = settings_for(run_dir)
    float_student = registry_with(run_dir, settings, versions=1)
    pruned = prune_mlp(float_student, 0.5)
    metadata = compressed_metadata(pruned, {"int8": True, "prune": 0.5})
    compressed = quantize_int8(pruned).eval()
    store = registry.Registry(run_dir)
    try:
        record = registry.VersionRecord(
            2, 1, time.time(), 100, 10, 0.96, 0.05, None, registry.PROMOTED, registry.checkpoint_path(2)
        )
        store.add(record, compressed.state_dict(), metadata)
    finally:
        store.close()
    observations = cartpole_observations(64)
    with torch.no_grad():
        expected = compressed(torch.from_numpy(observations)).numpy()

    plugins = pluginmanager.load(settings.plugins.table())
    exported = export.export_student(settings, plugins, export.LAYOUT, run_dir / "compressed.safetensors")
    assert exported.version == 2
    layout = LayoutStudent.load(exported.path)
    assert layout.metadata["layers"] == 2 and len(layout.metadata["input_shape"]) == 1
    np.testing.assert_allclose(layout.outputs(observations), expected, rtol=TOLERANCE, atol=TOLERANCE)

    import onnxruntime

    onnx_path = export.export_student(settings, plugins, export.ONNX, run_dir / "compressed.onnx").path
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(None, {export.ONNX_INPUT: observations})
    np.testing.assert_allclose(outputs, expected, rtol=TOLERANCE, atol=TOLERANCE)
