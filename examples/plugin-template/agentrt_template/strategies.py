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
from typing import TYPE_CHECKING, Any

from runtime.plugin.interfaces import StrategyInputs
from runtime.plugin.params import Param, and_, declare, discrete_space, ge, gt, lt, number, share
from runtime.wire.spaces import Space

if TYPE_CHECKING:
    import torch


@dataclass
class Usage:
    """What this process's strategy did; read by the plugin's ``agentrt_weights_published`` hook."""

    loss_calls: int = 0
    last_loss: float | None = None


usage = Usage()


@declare(
    "strategy soft_target_smoothed",
    temperature=Param(2.0, "softening temperature T", and_(number, gt(0))),
    alpha=Param(0.5, "weight of the soft term", share),
    smoothing=Param(0.1, "label smoothing of the hard term", and_(number, ge(0), lt(1))),
)
class SoftTargetSmoothed:
    """Soft targets plus label-smoothed cross-entropy; ``smoothing = 0`` is the built-in soft_target."""

    def __init__(self, params: dict[str, Any], action_space: Space) -> None:
        # Refused at start-up (agentrt plugins --check, agentrt up): on a box action space the
        # student's outputs are actions, and a softmax over them would train nothing useful.
        discrete_space("strategy soft_target_smoothed", action_space, "a discrete action space")
        # ``@declare`` checked and converted params (numbers are floats) before this runs.
        self.temperature = params["temperature"]
        self.alpha = params["alpha"]
        self.smoothing = params["smoothing"]

    def loss(self, inputs: StrategyInputs) -> torch.Tensor:
        import torch.nn.functional as F

        student, teacher = inputs.student_outputs, inputs.teacher_outputs.detach()
        if student.shape != teacher.shape:  # torch would broadcast and return a wrong loss
            raise ValueError(
                f"soft_target_smoothed: student outputs {tuple(student.shape)} and teacher "
                f"outputs {tuple(teacher.shape)} differ in shape"
            )
        t = self.temperature
        soft = (
            F.kl_div(
                F.log_softmax(student / t, dim=-1),
                F.log_softmax(teacher / t, dim=-1),
                reduction="batchmean",
                log_target=True,
            )
            * t**2
        )
        labels = inputs.hard_labels.reshape(-1).long() if inputs.hard_labels is not None else teacher.argmax(dim=-1)
        hard = F.cross_entropy(student, labels, label_smoothing=self.smoothing)
        loss = self.alpha * soft + (1 - self.alpha) * hard
        usage.loss_calls += 1
        usage.last_loss = loss.item()
        return loss
