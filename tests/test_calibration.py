"""Teacher calibration: the temperature fit, the noisy-expert target, the shipped teacher's stored
temperature, and how that temperature reaches the soft_target strategy."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest

from runtime import config
from runtime.learn.calibration import (
    Trajectories,
    fit_temperature,
    noisy_expert_targets,
    softened_percentiles,
    stored_temperature,
    teacher_trajectories,
)
from runtime.learn.checkpoints import load_safetensors, save_safetensors
from runtime.learn.evaluation import log_softmax
from runtime.plugin import pluginmanager
from runtime.plugin.interfaces import Calibrated

CARTPOLE = gymnasium.make("CartPole-v1")


def build_teacher(path: str):
    plugins = pluginmanager.load(config.defaults()["plugins"])
    return plugins.build("teacher", "checkpoint", {"path": path}, CARTPOLE.observation_space, CARTPOLE.action_space)


@pytest.mark.parametrize("true_temperature", [0.5, 3.0, 80.0])
def test_fit_recovers_the_temperature_that_made_the_targets(true_temperature):
    logits = np.random.default_rng(1).normal(0, 10, (400, 3))
    targets = np.exp(log_softmax(logits / true_temperature))
    assert fit_temperature(logits, targets) == pytest.approx(true_temperature, rel=1e-3)


def test_noisy_expert_target_is_one_hot_far_from_the_boundary_and_even_on_it():
    def linear(observations: np.ndarray) -> np.ndarray:  # push right when x > 0
        return np.stack([-observations[:, 0], observations[:, 0]], axis=1)

    states = Trajectories(np.array([[-5.0], [0.0], [5.0]], dtype=np.float32), step_std=np.array([1.0]))
    targets = noisy_expert_targets(linear, states, actions=2, draws=2000, noise_steps=1.0, seed=0)
    np.testing.assert_allclose(targets[[0, 2]], [[1, 0], [0, 1]])
    assert targets[1, 1] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf", "nan"])
def test_a_stored_temperature_must_be_a_positive_number(value):
    assert stored_temperature({}) is None
    with pytest.raises(ValueError, match="temperature"):
        stored_temperature({"temperature": value})


def test_shipped_cartpole_teacher_is_calibrated_and_soft_on_its_own_states():
    teacher = build_teacher("builtin:cartpole")
    assert isinstance(teacher, Calibrated) and teacher.temperature is not None
    own = teacher_trajectories("CartPole-v1", teacher.label, episodes=1, seed=7).observations
    logits = teacher.label(own)
    # At T = 2 the smaller action is all but impossible; calibrated, it has a real share.
    assert softened_percentiles(logits, 2.0)["others"][1] < 1e-6
    calibrated = softened_percentiles(logits, teacher.temperature)
    assert 0.1 < calibrated["others"][1] < 0.5
    assert calibrated["entropy"][0] > 0.3


def test_checkpoint_teacher_without_a_temperature_has_none_and_a_bad_one_is_refused(tmp_path):
    from plugins.teachers import BUILTIN_CHECKPOINTS

    state, metadata = load_safetensors(BUILTIN_CHECKPOINTS["cartpole"])
    plain = {key: value for key, value in metadata.items() if key != "temperature"}
    save_safetensors(state, tmp_path / "plain.safetensors", plain)
    assert build_teacher(str(tmp_path / "plain.safetensors")).temperature is None
    save_safetensors(state, tmp_path / "bad.safetensors", {**plain, "temperature": "hot"})
    with pytest.raises(pluginmanager.PluginError, match="temperature 'hot' is not a positive number"):
        build_teacher(str(tmp_path / "bad.safetensors"))


def test_the_distiller_trains_at_the_temperature_the_teacher_role_sends():
    from runtime.peer.gym import run_gym_peers
    from runtime.testing import start_daemon

    running = start_daemon()
    try:
        run_gym_peers(running.endpoint, "CartPole-v1", episodes=2, peers=1)
        running.wait_until(lambda s: s["roles"]["distillation"]["counters"].get("labels", 0) > 0, what="labels")
        heard = running.events("teacher_temperature")
    finally:
        running.stop()
    assert [event["temperature"] for event in heard] == [pytest.approx(build_teacher("builtin:cartpole").temperature)]


def test_teacher_role_sends_its_calibrated_temperature_with_every_answer():
    from runtime.testing import teacher_role
    from runtime.wire import protocol

    with teacher_role() as role:
        batch = np.zeros((2, 4), np.float32)
        request = protocol.decode(protocol.encode("teach", request_id=1, obs=batch))
        reply = protocol.decode(role.answer([request])[0])
    assert reply["temperature"] == pytest.approx(build_teacher("builtin:cartpole").temperature)


def test_the_recipe_fits_and_stores_a_temperature_in_a_copy_of_the_shipped_teacher(tmp_path, capsys):
    from plugins.teachers import BUILTIN_CHECKPOINTS
    from runtime.learn.recipes import calibrate

    state, metadata = load_safetensors(BUILTIN_CHECKPOINTS["cartpole"])
    path = tmp_path / "teacher.safetensors"
    save_safetensors(state, path, {key: value for key, value in metadata.items() if key != "temperature"})
    assert calibrate.main([str(path), "--fit-episodes", "1", "--draws", "8", "--write"]) == 0
    report = json.loads(capsys.readouterr().out)
    written = load_safetensors(path)[1]
    assert report["previous_temperature"] is None and not report["at_bound"]
    assert stored_temperature(written) == pytest.approx(report["temperature"], rel=1e-3) and report["temperature"] > 10
    assert written["architecture"] == "mlp" and "noisy expert" in written["calibration"]
    fitted = report["fit_cross_entropy"]
    assert fitted["fitted"] < fitted["uniform"] < fitted["T=2"]
