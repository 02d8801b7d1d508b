"""Models on a device (issue 13, item 4): ``device`` and ``dtype`` for the teacher, distillation and
decision. This machine has no GPU: "auto" must resolve to the CPU, an explicit "cuda" must fail
with a configuration error naming the key, bfloat16 must run on the CPU, and a daemon must run
with the keys set. The GPU half is ``benchmarks/gpu.py``, run on a machine that has one."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import torch

from runtime import config, rundir
from runtime.errors import ConfigError, ExitCode
from runtime.learn import registry
from runtime.learn.checkpoints import load_safetensors
from runtime.learn.device import check_placements, placement
from runtime.learn.loop import Decider
from runtime.learn.models import build_teacher
from runtime.learn.trainer import Trainer
from runtime.plugin import pluginmanager
from runtime.testing import agentrt, run_gym_peers, start_daemon

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this test is about a host without CUDA")


def settings(**sections) -> config.Settings:
    return config.Settings.of(config.load(environ={}, overrides=sections))


def cartpole():
    env = gymnasium.make("CartPole-v1")
    return pluginmanager.load(config.defaults()["plugins"]), env.observation_space, env.action_space


@NO_CUDA
def test_auto_resolves_to_the_cpu_without_cuda_and_the_defaults_stay_there():
    assert check_placements(settings()) == dict.fromkeys(("teacher", "distillation", "decision"), "cpu float32")
    where = placement(settings(distillation={"device": "auto", "dtype": "bfloat16"}), "distillation")
    assert where.device.type == "cpu" and where.dtype == torch.bfloat16


@NO_CUDA
@pytest.mark.parametrize("section", ["teacher", "distillation", "decision"])
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_an_explicit_cuda_device_without_cuda_is_a_config_error_naming_the_key(section, device):
    with pytest.raises(ConfigError, match=rf"^{section}\.device = '{device}', but CUDA is not available"):
        placement(settings(**{section: {"device": device}}), section)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"teacher": {"device": "gpu"}}, r"teacher: parameter 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"decision": {"dtype": "int8"}}, r"decision: parameter 'dtype' must be one of 'float32', 'bfloat16'"),
    ],
)
def test_device_and_dtype_values_are_checked_when_the_configuration_loads(sections, message):
    with pytest.raises(ConfigError, match=message):
        settings(**sections)


def test_dtypes_the_device_cannot_run_are_config_errors():
    with pytest.raises(ConfigError, match=r"^decision\.dtype = 'float16' needs CUDA"):
        placement(settings(decision={"device": "cpu", "dtype": "float16"}), "decision")
    with pytest.raises(ConfigError, match=r"distillation\.dtype = 'float16' would need loss scaling"):
        placement(settings(distillation={"device": "cpu", "dtype": "float16"}), "distillation")


@NO_CUDA
def test_agentrt_up_refuses_a_cuda_teacher_on_a_host_without_cuda_before_starting_roles(run_dir):
    result = agentrt("up", "--run-dir", str(run_dir), env={"AGENTRT_TEACHER_DEVICE": "cuda"}, timeout=120)
    assert result.returncode == ExitCode.USAGE, result.stderr  # a ConfigError, as for any bad key
    assert "teacher.device = 'cuda', but CUDA is not available" in result.stderr
    assert not (run_dir / rundir.PID_FILE).exists() and not (run_dir / "sock").exists()


@NO_CUDA
def test_a_daemon_started_without_the_check_stops_naming_the_key_its_role_cannot_have():
    # A private daemon starts with --no-check (as `up --detach` starts its child): the role that
    # builds the model refuses, and the daemon stops with a configuration error, not a restart loop.
    running = start_daemon('[decision]\ndevice = "cuda"\n', wait=False)
    try:
        assert running.process.wait(timeout=120) == ExitCode.CONFIG
        log = running.log()
        assert "role_setup_failed" in log and "decision.device = 'cuda', but CUDA is not available" in log
    finally:
        running.stop()


def test_a_torch_teacher_labels_in_bfloat16_on_the_cpu_with_float32_answers():
    plugins, observation_space, action_space = cartpole()
    exact = build_teacher(plugins, settings(teacher={"device": "cpu"}), observation_space, action_space)
    half = build_teacher(plugins, settings(teacher={"dtype": "bfloat16"}), observation_space, action_space)
    assert {p.dtype for p in half.module.parameters()} == {torch.bfloat16}
    observation_space.seed(0)
    observations = np.stack([observation_space.sample() for _ in range(256)]) * 0.05  # where CartPole lives
    outputs = half.label(observations)
    assert outputs.dtype == np.float32 and outputs.shape == (256, 2)
    np.testing.assert_allclose(outputs, exact.label(observations), atol=0.1, rtol=0.05)
    features = half.label_with_features(observations)[1]
    assert features.dtype == np.float32 and np.isfinite(features).all()


def test_composite_teachers_place_their_torch_members_and_leave_scripted_ones():
    plugins, observation_space, action_space = cartpole()
    members = [
        {"plugin": "checkpoint", "params": {"path": "builtin:cartpole"}},
        {"plugin": "scripted", "params": {"callable": "plugins.teachers:cartpole_controller"}},
    ]
    keys = {"plugin": "ensemble", "params": {"members": members}, "dtype": "bfloat16"}
    teacher = build_teacher(plugins, settings(teacher=keys), observation_space, action_space)
    assert next(teacher.members[0].module.parameters()).dtype == torch.bfloat16
    assert np.isfinite(teacher.label(np.zeros((4, 4), dtype=np.float32))).all()


def test_a_teacher_that_cannot_be_placed_stays_on_the_cpu_under_auto_and_is_refused_when_asked_for_more():
    plugins, observation_space, action_space = cartpole()
    scripted = {"plugin": "scripted", "params": {"callable": "plugins.teachers:cartpole_controller"}}
    teacher = build_teacher(plugins, settings(teacher=scripted), observation_space, action_space)
    assert teacher.label(np.zeros((2, 4), dtype=np.float32)).shape == (2, 2)
    with pytest.raises(ConfigError, match=r"teacher\.dtype = 'bfloat16': teacher 'scripted' cannot be placed"):
        build_teacher(plugins, settings(teacher={**scripted, "dtype": "bfloat16"}), observation_space, action_space)


def test_bfloat16_training_keeps_float32_weights_and_cpu_checkpoints():
    plugins, observation_space, action_space = cartpole()
    trainer = Trainer(
        plugins, settings(distillation={"dtype": "bfloat16", "min_samples": 8}), observation_space, action_space
    )
    rng = np.random.default_rng(0)
    features = rng.normal(size=(512, 4)).astype(np.float32)
    labels = np.stack([features[:, 2] * 10, -features[:, 2] * 10], axis=1).astype(np.float32)
    trainer.add_labelled(features, labels)
    first = [trainer.train_step() for _ in range(5)]
    last = [trainer.train_step() for _ in range(300)][-5:]
    assert np.mean(last) < np.mean(first) / 2, (first, last)
    state = trainer.state()
    assert {(t.device.type, t.dtype) for t in state.values()} == {("cpu", torch.float32)}


def test_a_student_served_in_bfloat16_uses_torch_not_the_numpy_fast_path():
    plugins, observation_space, action_space = cartpole()
    exact = Decider(plugins, settings(), observation_space, action_space)
    half = Decider(plugins, settings(decision={"dtype": "bfloat16"}), observation_space, action_space)
    assert exact.fast is not None and half.fast is None
    features = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    outputs, _ = half.forward(features)
    assert outputs.dtype == np.float32
    np.testing.assert_allclose(outputs, exact.forward(features)[0], atol=0.05)
    half.serve(1, exact.student.state_dict())  # float32 checkpoints load into a bfloat16 student
    assert next(half.student.parameters()).dtype == torch.bfloat16


@pytest.mark.timeout(240)
def test_a_daemon_runs_and_distils_with_every_device_key_set():
    daemon = start_daemon(
        '[teacher]\ndevice = "auto"\ndtype = "bfloat16"\n'
        '[distillation]\ndevice = "auto"\ndtype = "bfloat16"\nmin_samples = 32\nsteps_per_publish = 50\n'
        'publish_interval_s = 0.2\n[decision]\ndevice = "cpu"\ndtype = "bfloat16"\n'
    )
    try:
        summary = run_gym_peers(
            daemon.endpoint,
            "CartPole-v1",
            episodes=40,
            peers=2,
            should_stop=lambda: daemon.status()["student_version"] >= 2,
        )
        status = daemon.wait_until(lambda s: s["student_version"] >= 2, what="published students")
        assert summary.steps > 0 and status["errors"]["total"] == 0, status["errors"]
        assert status["roles"]["decision"]["gauges"]["numpy_forward"] is False  # bfloat16: torch serves
        placed = ("cuda:0" if torch.cuda.is_available() else "cpu") + " bfloat16"
        assert status["roles"]["teacher"]["gauges"]["placement"] == placed
        serving = [event for event in map(json.loads, daemon.log().splitlines()) if event["event"] == "teacher_serving"]
        assert serving and serving[-1]["placement"] == placed
        checkpoints = sorted((daemon.run_dir / registry.CHECKPOINTS).glob("*.safetensors"))
        assert checkpoints
        state, _ = load_safetensors(checkpoints[-1])
        assert {tensor.dtype for tensor in state.values()} == {torch.float32}
    finally:
        daemon.stop()
