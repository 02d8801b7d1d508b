"""Built-in distillation strategies: the losses that train the student on the teacher's outputs.

Pick by the action space and what the teacher gives:

* discrete actions, one teacher: ``soft_target`` (the usual choice), ``hard_label`` (the teacher
  gives only reliable argmaxes), ``logit_matching`` (teacher logits are well scaled), or
  ``adaptive`` (soft targets that sharpen as the student starts agreeing with the teacher);
* discrete actions, several teachers: ``multi_teacher``;
* continuous actions: ``regression``;
* student and teacher both expose hidden features: ``feature_hints`` on top of any of the above.

Each factory gets the agent's action space and refuses one it cannot learn, so that a wrong pick
fails at start-up (``agentrt plugins --check``, ``agentrt up``) rather than training nothing.

torch is imported inside the strategies, never at module level: every role process loads this
plugin, and only the distillation process should pay for torch.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from runtime import hookimpl
from runtime.errors import ParamError
from runtime.plugin.interfaces import DistillationStrategy, StrategyFactory, StrategyInputs
from runtime.plugin.params import (
    Param,
    and_,
    boolean,
    box_space,
    declare,
    discrete_space,
    ge,
    gt,
    in_,
    list_of,
    number,
    optional,
    positive_int,
    share,
    table,
)
from runtime.wire.spaces import Space

if TYPE_CHECKING:
    import torch


# --- parameters --------------------------------------------------------------------------------

_POSITIVE = and_(number, gt(0))

_TEMPERATURE = Param(2.0, "softening temperature T of both distributions", _POSITIVE)
_SOFT_TARGET_PARAMS = {
    "temperature": _TEMPERATURE,
    "alpha": Param(0.5, "weight of the soft term; 1 - alpha weighs the hard-label term", share),
    "t_squared": Param(True, "scale the soft term by T² (keeps its gradients comparable across T)", boolean),
    "direction": Param(
        "forward", "forward: KL(teacher || student); reverse: KL(student || teacher)", in_("forward", "reverse")
    ),
    # Off by default: measured online on CartPole, the shipped teacher's calibrated T (~110) gives
    # near-uniform targets and a student that, after the same training, balances for 61-295 steps
    # where T = 2 reaches 500 (docs/distillation.md, Calibrated teachers).
    "calibrated": Param(
        False, "soften at the teacher's calibrated temperature instead, when the teacher has one", boolean
    ),
}


#: What the strategies over action distributions say when given a box action space.
_DISCRETE = "a discrete action space (it learns a distribution over actions; use regression for a box)"


# --- shared loss pieces ------------------------------------------------------------------------


def _labels(hard_labels: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
    """The given hard labels as class indices, else the argmax of ``scores`` (teacher logits or log-probs)."""
    if hard_labels is not None:
        return hard_labels.reshape(-1).long()
    return scores.argmax(dim=-1)


def _check_same_shape(strategy: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    # torch would broadcast mismatched shapes (with at most a warning) and return a wrong loss.
    if student.shape != teacher.shape:
        raise ValueError(
            f"{strategy}: student outputs {tuple(student.shape)} and teacher outputs "
            f"{tuple(teacher.shape)} differ in shape"
        )


def soft_target_loss(
    student_logits: torch.Tensor,
    target_log_probs: torch.Tensor,
    hard_labels: torch.Tensor | None,
    *,
    temperature: float,
    alpha: float,
    t_squared: bool = True,
    direction: str = "forward",
) -> torch.Tensor:
    """Hinton et al. (2015) distillation loss against a target distribution.

    ``target_log_probs`` (B, A) is the teacher's distribution at ``temperature``, as log-probs, so
    that one teacher (log_softmax(z / T)) and a mixture of teachers use the same code. Returns
    ``alpha * KL * (T² if t_squared) + (1 - alpha) * CE(student_logits, labels)``, KL averaged
    over the batch; the labels are ``hard_labels``, else the target's argmax.
    """
    import torch.nn.functional as F

    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    if direction == "forward":  # KL(teacher || student): the student covers all of the teacher's mass
        soft = F.kl_div(student_log_probs, target_log_probs, reduction="batchmean", log_target=True)
    else:  # KL(student || teacher): the student may concentrate on the teacher's main mode
        soft = F.kl_div(target_log_probs, student_log_probs, reduction="batchmean", log_target=True)
    if t_squared:
        # Soft-target gradients shrink as 1/T²; scaling back keeps the soft/hard balance set by alpha.
        soft = soft * temperature**2
    hard = F.cross_entropy(student_logits, _labels(hard_labels, target_log_probs))
    return alpha * soft + (1 - alpha) * hard


# --- strategies --------------------------------------------------------------------------------


@declare("strategy soft_target", **_SOFT_TARGET_PARAMS)
class SoftTarget:
    """Soft targets (Hinton et al. 2015): match the teacher's temperature-softened distribution,
    mixed with cross-entropy on hard labels. The default for discrete actions. With ``calibrated``
    it softens at the teacher's calibrated temperature (``StrategyInputs.teacher_temperature``),
    at which the teacher's probabilities mean something, where the teacher has one."""

    def __init__(self, params: dict[str, Any], action_space: Space) -> None:
        discrete_space("strategy soft_target", action_space, _DISCRETE)
        self.params = params

    def temperature(self, inputs: StrategyInputs) -> float:
        """The temperature of this minibatch: the teacher's calibrated one if asked for and known, else the param."""
        if self.params["calibrated"] and inputs.teacher_temperature:
            return inputs.teacher_temperature
        return float(self.params["temperature"])

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        _check_same_shape("soft_target", inputs.student_outputs, inputs.teacher_outputs)
        temperature = self.temperature(inputs)
        teacher_log_probs = F.log_softmax(inputs.teacher_outputs.detach() / temperature, dim=-1)
        return soft_target_loss(
            inputs.student_outputs,
            teacher_log_probs,
            inputs.hard_labels,
            temperature=temperature,
            alpha=self.params["alpha"],
            t_squared=self.params["t_squared"],
            direction=self.params["direction"],
        )


@declare("strategy hard_label")
class HardLabel:
    """Cross-entropy on hard labels (the given ones, else the teacher's argmax). Pick it when the
    teacher's confidences are not meaningful, e.g. a rule-based or human teacher."""

    def __init__(self, params: dict[str, Any], action_space: Space) -> None:
        discrete_space("strategy hard_label", action_space, _DISCRETE)  # no parameters; declare refuses any

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(inputs.student_outputs, _labels(inputs.hard_labels, inputs.teacher_outputs))


@declare("strategy logit_matching")
class LogitMatching:
    """Mean squared error between student and teacher logits (Ba & Caruana 2014). Pick it when the
    teacher's logits carry information that softmax would flatten (the high-temperature limit of
    soft targets)."""

    def __init__(self, params: dict[str, Any], action_space: Space) -> None:
        # Logits, not actions: a box student's outputs are actions and a box teacher may add variances.
        discrete_space("strategy logit_matching", action_space, _DISCRETE)  # no parameters; declare refuses any

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        _check_same_shape("logit_matching", inputs.student_outputs, inputs.teacher_outputs)
        return F.mse_loss(inputs.student_outputs, inputs.teacher_outputs.detach())


@declare(
    "strategy regression",
    loss=Param(
        "mse",
        "mse (ignores variances) or gaussian_nll (weights by the teacher's variances)",
        in_("mse", "gaussian_nll"),
    ),
    variance_floor=Param(1e-6, "smallest teacher variance used by gaussian_nll", _POSITIVE),
)
class Regression:
    """Continuous actions: regress the student's actions (B, D) onto the teacher's means.

    The teacher gives (B, D) means, or (B, 2D) means followed by variances. ``loss = "mse"``
    ignores variances; ``"gaussian_nll"`` weights each dimension by the teacher's certainty
    (needs variances, floored at ``variance_floor``).
    """

    def __init__(self, params: dict[str, Any], action_space: Space) -> None:
        box_space(
            "strategy regression",
            action_space,
            "a box action space (it regresses actions; use soft_target or hard_label for a discrete one)",
        )
        self.params = params

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        student, teacher = inputs.student_outputs, inputs.teacher_outputs.detach()
        dim = student.shape[-1]
        if teacher.shape[-1] not in (dim, 2 * dim):
            raise ValueError(
                f"regression: teacher outputs have {teacher.shape[-1]} columns; expected "
                f"{dim} (means) or {2 * dim} (means, then variances) for a {dim}-dimensional student"
            )
        means = teacher[..., :dim]
        if self.params["loss"] == "mse":
            return F.mse_loss(student, means)
        if teacher.shape[-1] != 2 * dim:
            raise ValueError(
                f"regression: loss 'gaussian_nll' needs teacher variances, but the teacher gives "
                f"only {dim} means per sample; make it return (B, {2 * dim}) means then "
                f"variances, or use loss = 'mse'"
            )
        return F.gaussian_nll_loss(student, means, teacher[..., dim:], eps=self.params["variance_floor"])


@declare(
    "strategy multi_teacher",
    temperature=_TEMPERATURE,
    **{name: _SOFT_TARGET_PARAMS[name] for name in ("alpha", "t_squared")},
    weights=Param(
        None, "fixed teacher weights, normalised (unset: see weighting)", optional(list_of(and_(number, ge(0))))
    ),
    weighting=Param(
        "uniform", "without weights: uniform, or per sample by each teacher's confidence", in_("uniform", "confidence")
    ),
)
class MultiTeacher:
    """Soft targets from K teachers at once: ``teacher_outputs`` is (B, K, A), or (B, K * A).

    The target is the weighted mean of the teachers' softened distributions; weights are fixed
    (``weights``, normalised), equal (``weighting = "uniform"``), or per sample in proportion to each
    teacher's confidence, its highest softmax probability (``weighting = "confidence"``). Pick it to
    distil an ensemble, or teachers that are each good in different situations.
    """

    def __init__(self, params: dict[str, Any], action_space: Space) -> None:
        discrete_space("strategy multi_teacher", action_space, _DISCRETE)
        weights = params["weights"]
        if weights is not None and sum(weights) <= 0:
            raise ParamError(f"strategy multi_teacher: parameter 'weights' must have a positive sum (got {weights!r})")
        if weights is not None and params["weighting"] == "confidence":
            raise ParamError(
                "strategy multi_teacher: give either parameter 'weights' or weighting = 'confidence', not both"
            )
        self.params = {**params, "weights": None if weights is None else [w / sum(weights) for w in weights]}

    def teacher_weights(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Per-sample teacher weights (B, K) summing to 1, for logits (B, K, A)."""
        import torch

        batch, teachers = teacher_logits.shape[:2]
        weights = self.params["weights"]
        if weights is not None:
            if len(weights) != teachers:
                raise ValueError(
                    f"multi_teacher: parameter 'weights' has {len(weights)} entries "
                    f"but the teacher outputs hold {teachers} teachers"
                )
            return torch.tensor(weights, dtype=teacher_logits.dtype, device=teacher_logits.device).expand(batch, -1)
        if self.params["weighting"] == "uniform":
            return teacher_logits.new_full((batch, teachers), 1.0 / teachers)
        # Confidence at T = 1: how sure each teacher really is, whatever the distillation temperature.
        confidence = teacher_logits.softmax(dim=-1).amax(dim=-1)
        return confidence / confidence.sum(dim=-1, keepdim=True)

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        student, teacher = inputs.student_outputs, inputs.teacher_outputs.detach()
        actions = student.shape[-1]
        if teacher.dim() == 2 and teacher.shape[-1] % actions == 0:
            # A teacher plugin returns (B, output_size); a K-teacher ensemble flattens its K rows.
            teacher = teacher.reshape(teacher.shape[0], -1, actions)
        if teacher.dim() != 3 or teacher.shape[0] != student.shape[0] or teacher.shape[-1] != actions:
            raise ValueError(
                f"multi_teacher: teacher outputs {tuple(inputs.teacher_outputs.shape)} are not "
                f"(B, K, {actions}) for student outputs {tuple(student.shape)}"
            )
        temperature = self.params["temperature"]
        # log(sum_k w_k softmax(z_k / T)), computed in log space so sharp teachers cannot underflow.
        target_log_probs = (
            self.teacher_weights(teacher).log().unsqueeze(-1) + F.log_softmax(teacher / temperature, dim=-1)
        ).logsumexp(dim=1)
        return soft_target_loss(
            student,
            target_log_probs,
            inputs.hard_labels,
            temperature=temperature,
            alpha=self.params["alpha"],
            t_squared=self.params["t_squared"],
        )


@declare(
    "strategy adaptive",
    t_start=Param(4.0, "temperature at agreement 0", _POSITIVE),
    t_end=Param(1.0, "temperature at agreement 1", _POSITIVE),
    alpha_start=Param(0.9, "soft-term weight at agreement 0", share),
    alpha_end=Param(0.3, "soft-term weight at agreement 1", share),
    t_squared=_SOFT_TARGET_PARAMS["t_squared"],
    direction=_SOFT_TARGET_PARAMS["direction"],
)
class Adaptive:
    """Soft targets with a temperature and alpha scheduled by the student's agreement with the teacher.

    At agreement 0 (a new student) the targets are soft (``t_start``) and dominate (``alpha_start``);
    as agreement reaches 1 they move linearly to ``t_end`` and ``alpha_end``, so a student that
    already imitates well is pushed towards the teacher's exact decisions. The values used by the
    last ``loss`` call are in ``temperature`` and ``alpha``.
    """

    def __init__(self, params: dict[str, Any], action_space: Space) -> None:
        discrete_space("strategy adaptive", action_space, _DISCRETE)
        self.params = params
        self.temperature = self.params["t_start"]
        self.alpha = self.params["alpha_start"]

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        _check_same_shape("adaptive", inputs.student_outputs, inputs.teacher_outputs)
        agreement = min(max(inputs.agreement or 0.0, 0.0), 1.0)  # None: nothing measured yet
        p = self.params
        self.temperature = p["t_start"] + (p["t_end"] - p["t_start"]) * agreement
        self.alpha = p["alpha_start"] + (p["alpha_end"] - p["alpha_start"]) * agreement
        teacher_log_probs = F.log_softmax(inputs.teacher_outputs.detach() / self.temperature, dim=-1)
        return soft_target_loss(
            inputs.student_outputs,
            teacher_log_probs,
            inputs.hard_labels,
            temperature=self.temperature,
            alpha=self.alpha,
            t_squared=p["t_squared"],
            direction=p["direction"],
        )


@functools.cache
def _feature_hints_class() -> type:
    # Defined on first use because it subclasses torch.nn.Module, and torch must stay unimported
    # until a process actually builds a strategy.
    import torch
    import torch.nn.functional as F

    class FeatureHints(torch.nn.Module):
        """FitNets hints (Romero et al. 2015): a base strategy's loss plus ``beta`` times the MSE
        between a learned linear projection of the student's features and the teacher's features.
        Pick it when a small student struggles to learn from outputs alone and the teacher's
        hidden features are available.

        The projection is a ``torch.nn.Linear(student_dim, teacher_dim)`` trained with the student:
        with parameters ``student_dim`` and ``teacher_dim`` it exists (and is in ``parameters()``)
        from the start; otherwise it is created on the first ``loss`` call that has features, and
        whoever optimises the student must add its parameters after that call. Features are
        flattened to (B, -1). Without features in the inputs, the loss is the base loss alone.
        """

        def __init__(self, params: dict[str, Any], action_space: Space) -> None:
            super().__init__()
            self.params = params
            # The base refuses an action space it cannot learn; the hints themselves fit any.
            self.base = STRATEGIES[params["base"]](params["base_params"], action_space)
            dims = (params["student_dim"], params["teacher_dim"])
            if (dims[0] is None) != (dims[1] is None):
                raise ParamError(
                    "strategy feature_hints: give both parameters 'student_dim' and 'teacher_dim', or neither"
                )
            self.sized_by_params = dims[0] is not None
            self.projection: torch.nn.Linear | None = torch.nn.Linear(*dims) if self.sized_by_params else None

        def loss(self, inputs: StrategyInputs) -> torch.Tensor:
            base_loss = self.base.loss(inputs)
            if inputs.student_features is None or inputs.teacher_features is None:
                return base_loss
            student = inputs.student_features.flatten(start_dim=1)
            teacher = inputs.teacher_features.detach().flatten(start_dim=1)
            widths = (student.shape[1], teacher.shape[1])
            sized = None if self.projection is None else (self.projection.in_features, self.projection.out_features)
            if sized != widths and self.sized_by_params:
                raise ValueError(
                    f"feature_hints: student_dim and teacher_dim say {sized} features, but the "
                    f"student's are {widths[0]} and the teacher's {widths[1]} wide (a pruned student is narrower: "
                    "leave both unset to size the projection from the features)"
                )
            if self.projection is None or sized != widths:  # the first batch, or a pruned student
                # At least float32 whatever autocast computes in (bfloat16, say): the weights stay float32.
                dtype = torch.promote_types(student.dtype, torch.float32)
                self.projection = torch.nn.Linear(*widths, device=student.device, dtype=dtype)
            return base_loss + self.params["beta"] * F.mse_loss(self.projection(student), teacher)

    return FeatureHints


_BASES = ("soft_target", "hard_label", "logit_matching", "regression", "multi_teacher", "adaptive")


@declare(
    "strategy feature_hints",
    beta=Param(1.0, "weight of the feature-hint term", and_(number, ge(0))),
    base=Param("soft_target", "the strategy whose loss the hint is added to", in_(*_BASES)),
    base_params=Param({}, "the base strategy's params table", table),
    student_dim=Param(
        None, "student feature width: with teacher_dim, the projection exists from the start", optional(positive_int)
    ),
    teacher_dim=Param(None, "teacher feature width", optional(positive_int)),
)
def feature_hints(params: dict[str, Any], action_space: Space) -> DistillationStrategy:
    """FitNets hints: a base strategy's loss plus ``beta`` times the MSE between a learned projection
    of the student's features and the teacher's.

    Builds a ``torch.nn.Module``; see the class docstring in ``_feature_hints_class``."""
    return _feature_hints_class()(params, action_space)


#: Name -> factory(params, action_space), as registered with the runtime.
STRATEGIES: dict[str, StrategyFactory] = {
    "soft_target": SoftTarget,
    "hard_label": HardLabel,
    "logit_matching": LogitMatching,
    "regression": Regression,
    "feature_hints": feature_hints,
    "multi_teacher": MultiTeacher,
    "adaptive": Adaptive,
}


@hookimpl
def agentrt_register_distillation_strategies() -> dict[str, StrategyFactory]:
    return dict(STRATEGIES)
