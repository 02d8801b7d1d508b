"""The ``soft_target_smoothed`` distillation strategy.

Soft targets (Hinton et al. 2015) mixed with a *label-smoothed* cross-entropy on the hard labels:

    loss = alpha * T² * KL(teacher_T || student_T) + (1 - alpha) * CE_smoothing(student, labels)

Label smoothing keeps the student from becoming over-confident on the teacher's argmax, which
matters for the cascade query policy: it hands decisions to the teacher when the student's
confidence is low, so a calibrated student asks for help where it should. With ``smoothing = 0``
this is exactly the built-in ``soft_target``.

torch is imported inside ``loss``: this module is imported in every role process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from runtime.plugin.interfaces import StrategyInputs
from runtime.plugin.params import with_defaults

if TYPE_CHECKING:
    import torch

DEFAULTS = {"temperature": 2.0, "alpha": 0.5, "smoothing": 0.1}


@dataclass
class Usage:
    """What this process's strategy did; read by the plugin's ``agentrt_weights_published`` hook."""

    loss_calls: int = 0
    last_loss: float | None = None


usage = Usage()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class SoftTargetSmoothed:
    """Params: ``temperature`` (> 0, default 2.0), ``alpha`` (weight of the soft term, 0..1,
    default 0.5), ``smoothing`` (label smoothing of the hard term, 0 <= s < 1, default 0.1)."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        options = with_defaults("strategy soft_target_smoothed", params or {}, DEFAULTS)
        checks = {"temperature": lambda v: v > 0, "alpha": lambda v: 0 <= v <= 1, "smoothing": lambda v: 0 <= v < 1}
        expected = {"temperature": "a number > 0", "alpha": "a number in [0, 1]", "smoothing": "a number in [0, 1)"}
        for name, check in checks.items():
            if not (_number(options[name]) and check(options[name])):
                raise ValueError(f"strategy soft_target_smoothed: {name} must be {expected[name]}, got {options[name]!r}")
        self.temperature = float(options["temperature"])
        self.alpha = float(options["alpha"])
        self.smoothing = float(options["smoothing"])

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        student, teacher = inputs.student_outputs, inputs.teacher_outputs.detach()
        if student.shape != teacher.shape:  # torch would broadcast and return a wrong loss
            raise ValueError(f"soft_target_smoothed: student outputs {tuple(student.shape)} and teacher "
                             f"outputs {tuple(teacher.shape)} differ in shape (a discrete action space is needed)")
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                        reduction="batchmean", log_target=True) * t ** 2
        labels = inputs.hard_labels.reshape(-1).long() if inputs.hard_labels is not None else teacher.argmax(dim=-1)
        hard = F.cross_entropy(student, labels, label_smoothing=self.smoothing)
        loss = self.alpha * soft + (1 - self.alpha) * hard
        usage.loss_calls += 1
        usage.last_loss = loss.item()
        return loss
