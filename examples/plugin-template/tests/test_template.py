"""Unit tests for the template's components: no daemon, no sockets, just the factories and hooks.

Run them with ``python -m pytest`` in examples/plugin-template, in the environment that has
agentrt installed. They run whether or not the plugin itself is pip-installed: the components are
imported directly, and the hook test registers the module in-process.
"""

from __future__ import annotations

import math

import agentrt_template
import numpy as np
import pytest
import structlog
import torch
from agentrt_template.strategies import SoftTargetSmoothed, usage
from agentrt_template.students import build_residual_mlp
from gymnasium import spaces

from runtime.errors import ConfigError
from runtime.plugin import pluginmanager
from runtime.plugin.interfaces import StrategyInputs

CARTPOLE_OBS = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
TWO_ACTIONS = spaces.Discrete(2)


# --- the student ---------------------------------------------------------------------------------


def test_student_maps_a_batch_to_logits_and_exposes_features():
    student = build_residual_mlp({"width": 16, "blocks": 3}, CARTPOLE_OBS, TWO_ACTIONS)
    x = torch.randn(5, 4)
    outputs, features = student.forward_features(x)
    assert student(x).shape == (5, 2) and outputs.shape == (5, 2) and features.shape == (5, 16)
    assert len(student.blocks) == 3
    outputs.sum().backward()
    assert all(p.grad is not None for p in student.parameters())


def test_student_fits_a_box_action_space_and_image_like_features():
    student = build_residual_mlp({}, spaces.Box(0, 1, shape=(3, 2, 2)), spaces.Box(-1, 1, shape=(3,)))
    assert student(torch.zeros(2, 3, 2, 2)).shape == (2, 3)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"widht": 8}, "unknown parameter 'widht'"),
        ({"width": 0}, r"^student residual_mlp: parameter 'width' must be an integer > 0 \(got 0\)$"),
        ({"blocks": True}, r"parameter 'blocks' must be an integer > 0 \(got True\)"),
    ],
)
def test_student_rejects_bad_params_naming_them(params, message):
    with pytest.raises(ConfigError, match=message):
        build_residual_mlp(params, CARTPOLE_OBS, TWO_ACTIONS)


# --- the strategy --------------------------------------------------------------------------------


def inputs(student: torch.Tensor, teacher: torch.Tensor) -> StrategyInputs:
    return StrategyInputs(student_outputs=student, teacher_outputs=teacher, hard_labels=teacher.argmax(dim=1))


def test_without_smoothing_the_loss_is_the_builtin_soft_target():
    from plugins.strategies import (
        SoftTarget,  # agentrt's built-in: a reference to compare against
    )

    torch.manual_seed(0)
    student, teacher = torch.randn(8, 3), torch.randn(8, 3)
    ours = SoftTargetSmoothed({"temperature": 3.0, "alpha": 0.3, "smoothing": 0.0}, TWO_ACTIONS).loss(
        inputs(student, teacher)
    )
    builtin = SoftTarget({"temperature": 3.0, "alpha": 0.3}, TWO_ACTIONS).loss(inputs(student, teacher))
    assert ours.item() == pytest.approx(builtin.item(), rel=1e-6)


def test_hard_term_is_label_smoothed_cross_entropy_by_hand():
    # alpha = 0 leaves only the hard term: -(1 - s) log p_label - s/A * sum_a log p_a.
    student, teacher = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 5.0]])  # the teacher says action 1
    s = 0.2
    loss = SoftTargetSmoothed({"alpha": 0.0, "smoothing": s}, TWO_ACTIONS).loss(inputs(student, teacher))
    log_p = [2.0 - math.log(math.exp(2.0) + 1.0), 0.0 - math.log(math.exp(2.0) + 1.0)]
    expected = -(1 - s) * log_p[1] - s / 2 * sum(log_p)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.fixture
def one_thread():
    # agentrt trains with distillation.torch_threads = 1: a tiny net gains nothing from more threads,
    # and on a busy machine they only wait for each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_loss_trains_the_student_towards_the_teacher(one_thread):
    torch.manual_seed(0)
    student = build_residual_mlp({"width": 16, "blocks": 1}, CARTPOLE_OBS, TWO_ACTIONS)
    strategy = SoftTargetSmoothed({}, TWO_ACTIONS)
    x = torch.randn(64, 4)
    teacher = torch.stack([x[:, 0], -x[:, 0]], dim=1) * 4  # action 0 when x0 > 0
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    first = strategy.loss(inputs(student(x), teacher)).item()
    for _ in range(60):
        loss = strategy.loss(inputs(student(x), teacher))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 2
    assert (student(x).argmax(dim=1) == teacher.argmax(dim=1)).float().mean() > 0.9


@pytest.mark.parametrize(
    "params, message",
    [
        ({"smoothing": 1.0}, r"parameter 'smoothing' must be a number in \[0, 1\) \(got 1.0\)"),
        ({"temperature": -1}, "parameter 'temperature' must be a number > 0"),
        ({"beta": 1}, "unknown parameter 'beta'"),
    ],
)
def test_strategy_rejects_bad_params_naming_them(params, message):
    with pytest.raises(ConfigError, match=message):
        SoftTargetSmoothed(params, TWO_ACTIONS)


def test_strategy_refuses_a_box_action_space_at_start_up():
    with pytest.raises(ConfigError, match=r"strategy soft_target_smoothed: needs a discrete action space"):
        SoftTargetSmoothed({}, spaces.Box(-2.0, 2.0, shape=(1,)))


def test_strategy_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        SoftTargetSmoothed({}, TWO_ACTIONS).loss(inputs(torch.zeros(2, 2), torch.zeros(2, 3)))


# --- the hooks, through agentrt's plugin manager (in-process, no entry point needed) ---------------


@pytest.fixture
def loaded():
    # autoload off: third-party entry points (this plugin too, if it is pip-installed) stay out,
    # and the module under test is registered as an in-process plugin instead.
    return pluginmanager.load({"autoload": False}, extra={"template": agentrt_template})


def test_hooks_register_the_components_under_their_names(loaded):
    assert loaded.get("student", "residual_mlp").plugin == "template"
    assert loaded.get("strategy", "soft_target_smoothed").plugin == "template"
    student = loaded.build("student", "residual_mlp", {"width": 8}, CARTPOLE_OBS, TWO_ACTIONS)
    assert student(torch.zeros(1, 4)).shape == (1, 2)
    assert sorted(loaded.infos["template"].hooks) == [
        "agentrt_register_distillation_strategies",
        "agentrt_register_students",
        "agentrt_weights_published",
    ]


def test_weights_published_hook_logs_the_strategy_usage(loaded, monkeypatch):
    monkeypatch.setattr(usage, "loss_calls", 0)
    with structlog.testing.capture_logs() as events:
        loaded.notify("agentrt_weights_published", version=1, path="/tmp/x", metrics={"loss": 0.5, "agreement": 0.9})
    assert events == []  # the strategy was not used: nothing to report
    SoftTargetSmoothed({}, TWO_ACTIONS).loss(inputs(torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0]])))
    with structlog.testing.capture_logs() as events:
        loaded.notify("agentrt_weights_published", version=2, path="/tmp/x", metrics={"loss": 0.5, "agreement": 0.9})
    assert [e["event"] for e in events] == ["template_weights_published"]
    assert events[0]["version"] == 2 and events[0]["strategy_calls"] == 1 and events[0]["strategy_last_loss"] > 0
