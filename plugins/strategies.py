"""Built-in distillation strategies: the losses that train the student on the teacher's outputs.

Pick by the action space and what the teacher gives:

* discrete actions, one teacher: ``soft_target`` (the usual choice), ``hard_label`` (the teacher
  gives only reliable argmaxes), ``logit_matching`` (teacher logits are well scaled), or
  ``adaptive`` (soft targets that sharpen as the student starts agreeing with the teacher);
* discrete actions, several teachers: ``multi_teacher``;
* continuous actions: ``regression``;
* student and teacher both expose hidden features: ``feature_hints`` on top of any of the above.

torch is imported inside the strategies, never at module level: every role process loads this
plugin, and only the distillation process should pay for torch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from runtime import hookimpl
from runtime.plugin.interfaces import DistillationStrategy, StrategyFactory, StrategyInputs

if TYPE_CHECKING:
    import torch


# --- parameters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    default: Any
    valid: Callable[[Any], bool]
    expected: str  # completes "parameter 'x' must be ..."
    convert: Callable[[Any], Any] = lambda value: value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(default: float) -> _Param:
    return _Param(default, lambda v: _is_number(v) and v > 0, "a number > 0", float)


def _non_negative(default: float) -> _Param:
    return _Param(default, lambda v: _is_number(v) and v >= 0, "a number >= 0", float)


def _fraction(default: float) -> _Param:
    return _Param(default, lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]", float)


def _flag(default: bool) -> _Param:
    return _Param(default, lambda v: isinstance(v, bool), "true or false")


def _choice(default: str, *options: str) -> _Param:
    return _Param(default, lambda v: v in options, "one of " + ", ".join(map(repr, options)))


def _optional_size() -> _Param:
    return _Param(None, lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
                  "a positive integer")


def _read_params(strategy: str, params: Mapping[str, Any] | None, spec: Mapping[str, _Param]) -> dict[str, Any]:
    """Validate ``params`` (a table from agentrt.toml) against ``spec``; fill in defaults.

    Raises ValueError naming the strategy and the offending parameter, so a typo in the config
    fails at start-up instead of silently using a default.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ValueError(f"{strategy}: unknown parameter {unknown[0]!r}; known: {', '.join(spec)}")
    values = {}
    for name, param in spec.items():
        value = params.get(name, param.default)
        if name in params and not param.valid(value):  # defaults are trusted (some are None)
            raise ValueError(f"{strategy}: parameter {name!r} must be {param.expected}, got {value!r}")
        values[name] = value if value is None else param.convert(value)
    return values


_SOFT_TARGET_PARAMS = {
    "temperature": _positive(2.0),
    "alpha": _fraction(0.5),
    "t_squared": _flag(True),
    "direction": _choice("forward", "forward", "reverse"),
}


# --- shared loss pieces ------------------------------------------------------------------------


def _labels(hard_labels: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
    """The given hard labels as class indices, else the argmax of ``scores`` (teacher logits or log-probs)."""
    if hard_labels is not None:
        return hard_labels.reshape(-1).long()
    return scores.argmax(dim=-1)


def _check_same_shape(strategy: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    # torch would broadcast mismatched shapes (with at most a warning) and return a wrong loss.
    if student.shape != teacher.shape:
        raise ValueError(f"{strategy}: student outputs {tuple(student.shape)} and teacher outputs "
                         f"{tuple(teacher.shape)} differ in shape")


def soft_target_loss(student_logits: torch.Tensor, target_log_probs: torch.Tensor,
                     hard_labels: torch.Tensor | None, *, temperature: float, alpha: float,
                     t_squared: bool = True, direction: str = "forward") -> torch.Tensor:
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
        soft = soft * temperature ** 2
    hard = F.cross_entropy(student_logits, _labels(hard_labels, target_log_probs))
    return alpha * soft + (1 - alpha) * hard


# --- strategies --------------------------------------------------------------------------------


class SoftTarget:
    """Soft targets (Hinton et al. 2015): match the teacher's temperature-softened distribution,
    mixed with cross-entropy on hard labels. The default for discrete actions."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = _read_params("soft_target", params, _SOFT_TARGET_PARAMS)

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        _check_same_shape("soft_target", inputs.student_outputs, inputs.teacher_outputs)
        teacher_log_probs = F.log_softmax(inputs.teacher_outputs.detach() / self.params["temperature"], dim=-1)
        return soft_target_loss(inputs.student_outputs, teacher_log_probs, inputs.hard_labels, **self.params)


class HardLabel:
    """Cross-entropy on hard labels (the given ones, else the teacher's argmax). Pick it when the
    teacher's confidences are not meaningful, e.g. a rule-based or human teacher."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        _read_params("hard_label", params, {})

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(inputs.student_outputs, _labels(inputs.hard_labels, inputs.teacher_outputs))


class LogitMatching:
    """Mean squared error between student and teacher logits (Ba & Caruana 2014). Pick it when the
    teacher's logits carry information that softmax would flatten (the high-temperature limit of
    soft targets)."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        _read_params("logit_matching", params, {})

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        _check_same_shape("logit_matching", inputs.student_outputs, inputs.teacher_outputs)
        return F.mse_loss(inputs.student_outputs, inputs.teacher_outputs.detach())


class Regression:
    """Continuous actions: regress the student's actions (B, D) onto the teacher's means.

    The teacher gives (B, D) means, or (B, 2D) means followed by variances. ``loss = "mse"``
    ignores variances; ``"gaussian_nll"`` weights each dimension by the teacher's certainty
    (needs variances, floored at ``variance_floor``).
    """

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = _read_params("regression", params, {
            "loss": _choice("mse", "mse", "gaussian_nll"),
            "variance_floor": _positive(1e-6),
        })

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        student, teacher = inputs.student_outputs, inputs.teacher_outputs.detach()
        dim = student.shape[-1]
        if teacher.shape[-1] not in (dim, 2 * dim):
            raise ValueError(f"regression: teacher outputs have {teacher.shape[-1]} columns; expected "
                             f"{dim} (means) or {2 * dim} (means, then variances) for a {dim}-dimensional student")
        means = teacher[..., :dim]
        if self.params["loss"] == "mse":
            return F.mse_loss(student, means)
        if teacher.shape[-1] != 2 * dim:
            raise ValueError(f"regression: loss 'gaussian_nll' needs teacher variances, but the teacher gives "
                             f"only {dim} means per sample; make it return (B, {2 * dim}) means then "
                             f"variances, or use loss = 'mse'")
        return F.gaussian_nll_loss(student, means, teacher[..., dim:], eps=self.params["variance_floor"])


class MultiTeacher:
    """Soft targets from K teachers at once: ``teacher_outputs`` is (B, K, A), or (B, K * A).

    The target is the weighted mean of the teachers' softened distributions; weights are fixed
    (``weights``, normalised), equal (``weighting = "uniform"``), or per sample in proportion to each
    teacher's confidence, its highest softmax probability (``weighting = "confidence"``). Pick it to
    distil an ensemble, or teachers that are each good in different situations.
    """

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        soft = {name: _SOFT_TARGET_PARAMS[name] for name in ("temperature", "alpha", "t_squared")}
        self.params = _read_params("multi_teacher", params, {
            **soft,
            "weights": _Param(None, lambda v: isinstance(v, (list, tuple)) and len(v) > 0
                              and all(_is_number(w) and w >= 0 for w in v) and sum(v) > 0,
                              "a non-empty list of non-negative numbers with a positive sum",
                              lambda v: [float(w) / sum(v) for w in v]),
            "weighting": _choice("uniform", "uniform", "confidence"),
        })
        if self.params["weights"] is not None and self.params["weighting"] == "confidence":
            raise ValueError("multi_teacher: give either parameter 'weights' or weighting = 'confidence', not both")

    def teacher_weights(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Per-sample teacher weights (B, K) summing to 1, for logits (B, K, A)."""
        import torch

        batch, teachers = teacher_logits.shape[:2]
        weights = self.params["weights"]
        if weights is not None:
            if len(weights) != teachers:
                raise ValueError(f"multi_teacher: parameter 'weights' has {len(weights)} entries "
                                 f"but the teacher outputs hold {teachers} teachers")
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
            raise ValueError(f"multi_teacher: teacher outputs {tuple(inputs.teacher_outputs.shape)} are not "
                             f"(B, K, {actions}) for student outputs {tuple(student.shape)}")
        temperature = self.params["temperature"]
        # log(sum_k w_k softmax(z_k / T)), computed in log space so sharp teachers cannot underflow.
        target_log_probs = (self.teacher_weights(teacher).log().unsqueeze(-1)
                            + F.log_softmax(teacher / temperature, dim=-1)).logsumexp(dim=1)
        return soft_target_loss(student, target_log_probs, inputs.hard_labels, temperature=temperature,
                                alpha=self.params["alpha"], t_squared=self.params["t_squared"])


class Adaptive:
    """Soft targets with a temperature and alpha scheduled by the student's agreement with the teacher.

    At agreement 0 (a new student) the targets are soft (``t_start``) and dominate (``alpha_start``);
    as agreement reaches 1 they move linearly to ``t_end`` and ``alpha_end``, so a student that
    already imitates well is pushed towards the teacher's exact decisions. The values used by the
    last ``loss`` call are in ``temperature`` and ``alpha``.
    """

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = _read_params("adaptive", params, {
            "t_start": _positive(4.0),
            "t_end": _positive(1.0),
            "alpha_start": _fraction(0.9),
            "alpha_end": _fraction(0.3),
            "t_squared": _SOFT_TARGET_PARAMS["t_squared"],
            "direction": _SOFT_TARGET_PARAMS["direction"],
        })
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
        return soft_target_loss(inputs.student_outputs, teacher_log_probs, inputs.hard_labels,
                                temperature=self.temperature, alpha=self.alpha,
                                t_squared=p["t_squared"], direction=p["direction"])


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

        def __init__(self, params: Mapping[str, Any] | None = None) -> None:
            super().__init__()
            bases = sorted(set(STRATEGIES) - {"feature_hints"})
            self.params = _read_params("feature_hints", params, {
                "beta": _non_negative(1.0),
                "base": _choice("soft_target", *bases),
                "base_params": _Param({}, lambda v: isinstance(v, Mapping), "a table of the base strategy's parameters"),
                "student_dim": _optional_size(),
                "teacher_dim": _optional_size(),
            })
            self.base = STRATEGIES[self.params["base"]](self.params["base_params"])
            dims = (self.params["student_dim"], self.params["teacher_dim"])
            if (dims[0] is None) != (dims[1] is None):
                raise ValueError("feature_hints: give both parameters 'student_dim' and 'teacher_dim', or neither")
            self.projection: torch.nn.Linear | None = None if dims[0] is None else torch.nn.Linear(*dims)

        def loss(self, inputs: StrategyInputs) -> torch.Tensor:
            base_loss = self.base.loss(inputs)
            if inputs.student_features is None or inputs.teacher_features is None:
                return base_loss
            student = inputs.student_features.flatten(start_dim=1)
            teacher = inputs.teacher_features.detach().flatten(start_dim=1)
            if self.projection is None:
                self.projection = torch.nn.Linear(student.shape[1], teacher.shape[1],
                                                  device=student.device, dtype=student.dtype)
            elif (self.projection.in_features, self.projection.out_features) != (student.shape[1], teacher.shape[1]):
                raise ValueError(f"feature_hints: the projection maps {self.projection.in_features} -> "
                                 f"{self.projection.out_features} features, but got student features "
                                 f"{student.shape[1]} and teacher features {teacher.shape[1]} wide")
            return base_loss + self.params["beta"] * F.mse_loss(self.projection(student), teacher)

    return FeatureHints


def feature_hints(params: Mapping[str, Any] | None = None) -> DistillationStrategy:
    """Build the ``feature_hints`` strategy (a ``torch.nn.Module``; see its class docstring)."""
    return _feature_hints_class()(params)


#: Name -> factory(params), as registered with the runtime.
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
