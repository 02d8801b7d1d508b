"""The built-in distillation strategies, checked against values computed by hand with ``math``."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest
import torch
from gymnasium import spaces

import plugins.strategies as strategies
from runtime import hookspecs
from runtime.errors import ParamError
from runtime.plugin.interfaces import DistillationStrategy, StrategyInputs

ALL_NAMES = {"soft_target", "hard_label", "logit_matching", "regression", "feature_hints", "multi_teacher", "adaptive"}
DISCRETE = spaces.Discrete(3)
BOX = spaces.Box(-1.0, 1.0, shape=(2,))
#: The one kind of action space each strategy learns (feature_hints: that of its default base, soft_target).
SPACE = {name: BOX if name == "regression" else DISCRETE for name in ALL_NAMES}


# --- hand computations (plain Python, no torch) -------------------------------------------------


def softmax(logits: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(z / temperature) for z in logits]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    """KL(p || q)."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def cross_entropy(logits: list[float], label: int) -> float:
    return -math.log(softmax(logits)[label])


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def hand_soft_target(
    student: list[list[float]],
    target: list[list[float]],
    labels: list[int],
    *,
    temperature: float,
    alpha: float,
    t_squared: bool = True,
    reverse: bool = False,
) -> float:
    """``target`` is already a distribution at ``temperature``."""
    soft = 0.0
    for s, t in zip(student, target, strict=True):
        q = softmax(s, temperature)
        soft += kl(q, t) if reverse else kl(t, q)
    soft /= len(student)  # batchmean
    if t_squared:
        soft *= temperature**2
    hard = sum(cross_entropy(s, y) for s, y in zip(student, labels, strict=True)) / len(student)
    return alpha * soft + (1 - alpha) * hard


def inputs(student, teacher, **kwargs) -> StrategyInputs:
    return StrategyInputs(
        torch.tensor(student, dtype=torch.float64), torch.tensor(teacher, dtype=torch.float64), **kwargs
    )


def build(name: str, params: dict | None = None, action_space: spaces.Space | None = None) -> DistillationStrategy:
    return strategies.agentrt_register_distillation_strategies()[name](params or {}, action_space or SPACE[name])


STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 1.5]]
TEACHER = [[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]]


# --- the hook ------------------------------------------------------------------------------------


def test_hook_registers_all_seven_strategies_through_pluggy():
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(strategies)
    manager.check_pending()
    (registered,) = manager.hook.agentrt_register_distillation_strategies()
    assert set(registered) == ALL_NAMES
    for name, factory in registered.items():
        assert isinstance(factory({}, SPACE[name]), DistillationStrategy), name


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_each_strategy_refuses_the_action_space_it_cannot_learn(name):
    wrong = DISCRETE if SPACE[name] is BOX else BOX
    with pytest.raises(
        ParamError, match=r"^strategy \w+: needs a (box|discrete) action space .*, got (box|discrete)\("
    ):
        build(name, action_space=wrong)


def test_feature_hints_learns_the_action_space_of_its_base():
    assert isinstance(build("feature_hints", {"base": "regression"}, BOX), DistillationStrategy)
    with pytest.raises(ParamError, match="strategy regression: needs a box action space"):
        build("feature_hints", {"base": "regression"}, DISCRETE)


def test_importing_the_plugin_does_not_import_torch():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "import sys, plugins.strategies; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "torch was imported"


# --- soft_target ---------------------------------------------------------------------------------


@pytest.mark.parametrize("t_squared", [True, False])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_soft_target_matches_hand_computation(t_squared, direction):
    strategy = build("soft_target", {"temperature": 2, "alpha": 0.5, "t_squared": t_squared, "direction": direction})
    expected = hand_soft_target(
        STUDENT,
        [softmax(t, 2.0) for t in TEACHER],
        [argmax(t) for t in TEACHER],
        temperature=2.0,
        alpha=0.5,
        t_squared=t_squared,
        reverse=direction == "reverse",
    )
    assert strategy.loss(inputs(STUDENT, TEACHER)).item() == pytest.approx(expected, rel=1e-9)


def test_soft_target_t_squared_scales_only_the_soft_term():
    on = build("soft_target", {"temperature": 2.0, "alpha": 1.0}).loss(inputs(STUDENT, TEACHER)).item()
    off = (
        build("soft_target", {"temperature": 2.0, "alpha": 1.0, "t_squared": False})
        .loss(inputs(STUDENT, TEACHER))
        .item()
    )
    assert off > 0
    assert on == pytest.approx(4.0 * off, rel=1e-9)


def test_soft_target_explicit_numbers():
    # One teacher row [ln 3, 0] at T = 1 is the distribution (3/4, 1/4); a student [0, 0] is (1/2, 1/2).
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2); the teacher's argmax is class 0, so CE = ln 2.
    strategy = build("soft_target", {"temperature": 1.0, "alpha": 0.25})
    expected = 0.25 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) + 0.75 * math.log(2)
    assert strategy.loss(inputs([[0.0, 0.0]], [[math.log(3), 0.0]])).item() == pytest.approx(expected, rel=1e-9)


def test_soft_target_prefers_given_hard_labels_over_teacher_argmax():
    strategy = build("soft_target", {"temperature": 2.0, "alpha": 0.5})
    labels = [2, 1]  # neither is the teacher's argmax for its row
    expected = hand_soft_target(STUDENT, [softmax(t, 2.0) for t in TEACHER], labels, temperature=2.0, alpha=0.5)
    got = strategy.loss(inputs(STUDENT, TEACHER, hard_labels=torch.tensor(labels))).item()
    assert got == pytest.approx(expected, rel=1e-9)


def test_soft_target_defaults():
    strategy = build("soft_target")
    assert strategy.params == {
        "temperature": 2.0,
        "calibrated": False,
        "alpha": 0.5,
        "t_squared": True,
        "direction": "forward",
    }


@pytest.mark.parametrize(
    "params, teacher_temperature, used",
    [
        ({}, 7.5, 2.0),
        ({"calibrated": True}, 7.5, 7.5),
        ({"calibrated": True}, None, 2.0),
        ({"temperature": 3.0}, None, 3.0),
    ],
)
def test_soft_target_softens_at_its_temperature_or_when_asked_the_teachers_calibrated_one(
    params, teacher_temperature, used
):
    batch = inputs(STUDENT, TEACHER)
    batch.teacher_temperature = teacher_temperature
    expected = hand_soft_target(
        STUDENT, [softmax(t, used) for t in TEACHER], [argmax(t) for t in TEACHER], temperature=used, alpha=0.5
    )
    assert build("soft_target", params).loss(batch).item() == pytest.approx(expected, rel=1e-9)


# --- hard_label, logit_matching ------------------------------------------------------------------


def test_hard_label_uses_teacher_argmax():
    expected = (cross_entropy(STUDENT[0], 0) + cross_entropy(STUDENT[1], 2)) / 2
    assert build("hard_label").loss(inputs(STUDENT, TEACHER)).item() == pytest.approx(expected, rel=1e-9)


def test_hard_label_uses_given_labels():
    # Student [0, 0] gives each class probability 1/2, so CE = ln 2 whatever the label; [0, ln 3] with label 1: ln(4/3).
    got = build("hard_label").loss(inputs([[0.0, math.log(3)]], [[5.0, 0.0]], hard_labels=torch.tensor([1]))).item()
    assert got == pytest.approx(math.log(4 / 3), rel=1e-9)


def test_logit_matching_is_mean_squared_error_over_all_elements():
    # differences: (-1, 1, 0.5), (-0.5, -1.5, -1.5) -> squares sum to 1 + 1 + 0.25 + 0.25 + 2.25 + 2.25 = 7
    assert build("logit_matching").loss(inputs(STUDENT, TEACHER)).item() == pytest.approx(7 / 6, rel=1e-9)


def test_logit_matching_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        build("logit_matching").loss(inputs([[1.0, 2.0]], [[1.0, 2.0, 3.0]]))


# --- regression ----------------------------------------------------------------------------------


def test_regression_mse_against_teacher_means():
    # student (1, 2) vs means (0, 4): ((1)^2 + (-2)^2) / 2
    assert build("regression").loss(inputs([[1.0, 2.0]], [[0.0, 4.0]])).item() == pytest.approx(2.5)
    # With variances appended, mse still uses only the means.
    assert build("regression").loss(inputs([[1.0, 2.0]], [[0.0, 4.0, 9.0, 9.0]])).item() == pytest.approx(2.5)


def test_regression_gaussian_nll():
    # Per dimension 0.5 * (ln var + (student - mean)^2 / var), averaged:
    # dim 0: var 1, diff 1 -> 0.5 * (0 + 1); dim 1: var 4, diff -2 -> 0.5 * (ln 4 + 1)
    expected = (0.5 * 1 + 0.5 * (math.log(4) + 1)) / 2
    strategy = build("regression", {"loss": "gaussian_nll"})
    assert strategy.loss(inputs([[1.0, 2.0]], [[0.0, 4.0, 1.0, 4.0]])).item() == pytest.approx(expected, rel=1e-9)


def test_regression_gaussian_nll_floors_variances():
    # A zero variance is raised to the floor 0.25: 0.5 * (ln 0.25 + 1 / 0.25)
    strategy = build("regression", {"loss": "gaussian_nll", "variance_floor": 0.25})
    expected = 0.5 * (math.log(0.25) + 4)
    assert strategy.loss(inputs([[1.0]], [[0.0, 0.0]])).item() == pytest.approx(expected, rel=1e-9)


def test_regression_gaussian_nll_without_variances_raises():
    with pytest.raises(ValueError, match="needs teacher variances"):
        build("regression", {"loss": "gaussian_nll"}).loss(inputs([[1.0, 2.0]], [[0.0, 4.0]]))


def test_regression_rejects_teacher_of_wrong_width():
    with pytest.raises(ValueError, match="3 columns"):
        build("regression").loss(inputs([[1.0, 2.0]], [[0.0, 4.0, 1.0]]))


# --- feature_hints -------------------------------------------------------------------------------


def fixed_hints(beta: float = 0.5) -> torch.nn.Module:
    strategy = build("feature_hints", {"beta": beta, "base": "logit_matching", "student_dim": 2, "teacher_dim": 3})
    with torch.no_grad():
        strategy.projection.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        strategy.projection.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    return strategy.double()


def test_feature_hints_with_fixed_projection():
    # Student features (1, 2) project to (1, 2, 4); teacher features (0, 2, 2) -> squared errors 1, 0, 4.
    strategy = fixed_hints(beta=0.5)
    base = (1 + 1 + 0.25) / 3  # logit_matching on STUDENT[0] vs TEACHER[0]: differences -1, 1, 0.5
    got = strategy.loss(
        inputs(
            [STUDENT[0]],
            [TEACHER[0]],
            student_features=torch.tensor([[1.0, 2.0]], dtype=torch.float64),
            teacher_features=torch.tensor([[0.0, 2.0, 2.0]], dtype=torch.float64),
        )
    ).item()
    assert got == pytest.approx(base + 0.5 * (1 + 0 + 4) / 3, rel=1e-9)


def test_feature_hints_without_features_is_the_base_loss():
    strategy = fixed_hints()
    assert strategy.loss(inputs([STUDENT[0]], [TEACHER[0]])).item() == pytest.approx((1 + 1 + 0.25) / 3, rel=1e-9)


def test_feature_hints_default_base_is_soft_target_with_base_params():
    strategy = build("feature_hints", {"base_params": {"temperature": 3.0, "alpha": 0.75}})
    expected = hand_soft_target(
        STUDENT, [softmax(t, 3.0) for t in TEACHER], [argmax(t) for t in TEACHER], temperature=3.0, alpha=0.75
    )
    assert strategy.loss(inputs(STUDENT, TEACHER)).item() == pytest.approx(expected, rel=1e-9)


def test_feature_hints_creates_projection_lazily_and_trains_it():
    strategy = build("feature_hints", {"base": "hard_label"})
    assert isinstance(strategy, torch.nn.Module)
    assert list(strategy.parameters()) == []
    loss = strategy.loss(
        StrategyInputs(
            torch.randn(4, 3), torch.randn(4, 3), student_features=torch.randn(4, 5), teacher_features=torch.randn(4, 7)
        )
    )
    assert (strategy.projection.in_features, strategy.projection.out_features) == (5, 7)
    assert len(list(strategy.parameters())) == 2
    loss.backward()
    assert strategy.projection.weight.grad is not None and strategy.projection.weight.grad.abs().sum() > 0


def test_feature_hints_sized_by_the_features_follows_a_narrower_student_in_float32():
    """compress prunes the student (16 features where there were 32), and under bfloat16 autocast
    the features are bfloat16 while every weight stays float32."""
    strategy = build("feature_hints", {"base": "hard_label"})

    def loss(width: int, dtype: torch.dtype) -> torch.Tensor:
        features = torch.randn(4, width).to(dtype)
        return strategy.loss(
            StrategyInputs(
                torch.randn(4, 3), torch.randn(4, 3), student_features=features, teacher_features=torch.randn(4, 7)
            )
        )

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(loss(32, torch.bfloat16))
    assert strategy.projection.weight.dtype == torch.float32 and strategy.projection.in_features == 32
    assert torch.isfinite(loss(16, torch.float32))
    assert (strategy.projection.in_features, strategy.projection.out_features) == (16, 7)


def test_feature_hints_eager_projection_is_in_parameters_before_any_call():
    strategy = build("feature_hints", {"student_dim": 4, "teacher_dim": 6})
    assert [tuple(p.shape) for p in strategy.parameters()] == [(6, 4), (6,)]


def test_feature_hints_rejects_bad_params():
    with pytest.raises(ValueError, match="'student_dim' and 'teacher_dim'"):
        build("feature_hints", {"student_dim": 4})
    with pytest.raises(ValueError, match="'base'"):
        build("feature_hints", {"base": "feature_hints"})
    with pytest.raises(ValueError, match="soft_target: unknown parameter 'temprature'"):
        build("feature_hints", {"base_params": {"temprature": 2.0}})


def test_feature_hints_sized_by_its_params_rejects_features_of_another_width():
    with pytest.raises(ValueError, match=r"say \(2, 3\) features, but the student's are 4 and the teacher's 3 wide"):
        fixed_hints().loss(
            inputs(
                [STUDENT[0]],
                [TEACHER[0]],
                student_features=torch.ones(1, 4, dtype=torch.float64),
                teacher_features=torch.ones(1, 3, dtype=torch.float64),
            )
        )


# --- multi_teacher -------------------------------------------------------------------------------

# Two teachers over two actions. Teacher 0 prefers action 0 mildly, teacher 1 action 1 strongly.
MULTI_STUDENT = [[0.5, -0.5]]
MULTI_TEACHERS = [[[1.0, 0.0], [0.0, 4.0]]]


def mixture(weights: list[float], temperature: float) -> list[float]:
    dists = [softmax(z, temperature) for z in MULTI_TEACHERS[0]]
    return [sum(w * d[a] for w, d in zip(weights, dists, strict=True)) for a in range(2)]


def test_multi_teacher_with_fixed_weights():
    strategy = build("multi_teacher", {"weights": [4, 1], "temperature": 2.0, "alpha": 0.5})
    target = mixture([0.8, 0.2], 2.0)
    assert argmax(target) == 0  # the weights override teacher 1's stronger preference
    expected = hand_soft_target(MULTI_STUDENT, [target], [0], temperature=2.0, alpha=0.5)
    assert strategy.loss(inputs(MULTI_STUDENT, MULTI_TEACHERS)).item() == pytest.approx(expected, rel=1e-9)


def test_multi_teacher_accepts_flattened_teacher_rows():
    strategy = build("multi_teacher", {"weights": [4, 1], "t_squared": False})
    expected = hand_soft_target(
        MULTI_STUDENT, [mixture([0.8, 0.2], 2.0)], [0], temperature=2.0, alpha=0.5, t_squared=False
    )
    flat = [MULTI_TEACHERS[0][0] + MULTI_TEACHERS[0][1]]
    assert strategy.loss(inputs(MULTI_STUDENT, flat)).item() == pytest.approx(expected, rel=1e-9)


def test_multi_teacher_confidence_weighting():
    # Confidence = each teacher's top softmax probability at T = 1, normalised over teachers.
    confidence = [max(softmax(z)) for z in MULTI_TEACHERS[0]]
    weights = [c / sum(confidence) for c in confidence]
    target = mixture(weights, 1.0)
    assert argmax(target) == 1  # the confident teacher wins
    strategy = build("multi_teacher", {"weighting": "confidence", "temperature": 1.0, "alpha": 0.3})
    expected = hand_soft_target(MULTI_STUDENT, [target], [1], temperature=1.0, alpha=0.3)
    assert strategy.loss(inputs(MULTI_STUDENT, MULTI_TEACHERS)).item() == pytest.approx(expected, rel=1e-9)


def test_multi_teacher_weights_must_match_teacher_count():
    with pytest.raises(ValueError, match="'weights' has 3 entries"):
        build("multi_teacher", {"weights": [1, 1, 1]}).loss(inputs(MULTI_STUDENT, MULTI_TEACHERS))
    with pytest.raises(ValueError, match="'weights'"):
        build("multi_teacher", {"weights": [0, 0]})
    with pytest.raises(ValueError, match="not both"):
        build("multi_teacher", {"weights": [1, 1], "weighting": "confidence"})


# --- adaptive ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agreement, temperature, alpha", [(None, 4.0, 0.9), (0.0, 4.0, 0.9), (1.0, 1.0, 0.3), (0.5, 2.5, 0.6)]
)
def test_adaptive_schedules_temperature_and_alpha(agreement, temperature, alpha):
    strategy = build("adaptive")
    got = strategy.loss(inputs(STUDENT, TEACHER, agreement=agreement)).item()
    assert strategy.temperature == pytest.approx(temperature)
    assert strategy.alpha == pytest.approx(alpha)
    expected = hand_soft_target(
        STUDENT,
        [softmax(t, temperature) for t in TEACHER],
        [argmax(t) for t in TEACHER],
        temperature=temperature,
        alpha=alpha,
    )
    assert got == pytest.approx(expected, rel=1e-9)


# --- parameters and gradients --------------------------------------------------------------------


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match=r"soft_target: unknown parameter 'temprature'; known: temperature, alpha"):
        build("soft_target", {"temprature": 2.0})
    with pytest.raises(ValueError, match="hard_label: unknown parameter 'alpha'"):
        build("hard_label", {"alpha": 0.5})


@pytest.mark.parametrize(
    "name, params, parameter",
    [
        ("soft_target", {"alpha": 1.5}, "alpha"),
        ("soft_target", {"temperature": 0}, "temperature"),
        ("soft_target", {"t_squared": "yes"}, "t_squared"),
        ("soft_target", {"direction": "sideways"}, "direction"),
        ("multi_teacher", {"alpha": 1.5}, "alpha"),
        ("adaptive", {"alpha_end": -0.1}, "alpha_end"),
        ("regression", {"loss": "l1"}, "loss"),
        ("regression", {"variance_floor": 0.0}, "variance_floor"),
        ("feature_hints", {"beta": -1.0}, "beta"),
    ],
)
def test_bad_values_are_rejected_naming_the_parameter(name, params, parameter):
    with pytest.raises(ValueError, match=f"{name}: parameter '{parameter}' must be"):
        build(name, params)


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_gradients_reach_the_student_outputs(name):
    torch.manual_seed(0)
    student = torch.randn(4, 3, requires_grad=True)
    teacher = {"multi_teacher": torch.randn(4, 2, 3), "regression": torch.rand(4, 6) + 0.1}.get(name, torch.randn(4, 3))
    params = {"regression": {"loss": "gaussian_nll"}}.get(name, {})
    loss = build(name, params).loss(
        StrategyInputs(
            student, teacher, student_features=torch.randn(4, 5), teacher_features=torch.randn(4, 2), agreement=0.5
        )
    )
    assert loss.dim() == 0
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
