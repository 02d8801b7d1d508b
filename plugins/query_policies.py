"""Built-in teacher query policies: when to ask the teacher for a label, and when the teacher acts."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from runtime import hookimpl
from runtime.interfaces import QueryContext, QueryDecision
from runtime.params import with_defaults


def softmax_confidence(outputs: np.ndarray) -> np.ndarray:
    """Largest softmax probability per row: the student's confidence in its discrete action."""
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    return probabilities.max(axis=1) / probabilities.sum(axis=1)


def apply_forced(context: QueryContext, label: np.ndarray, teacher_acts: np.ndarray) -> QueryDecision:
    """Honour per-observation ``policy`` requests: "student" never asks the teacher, "teacher" always acts."""
    for index, forced in enumerate(context.forced):
        if forced == "student":
            label[index] = teacher_acts[index] = False
        elif forced == "teacher":
            label[index] = teacher_acts[index] = True
    return QueryDecision(label=label, teacher_acts=teacher_acts)


class Cascade:
    """Student first. The teacher acts while no student is trained yet and whenever the student's
    confidence is below ``act_below_confidence`` (discrete actions); a random ``label_share`` of
    the remaining observations is sent for labels so the student keeps learning on its own states."""

    def __init__(self, label_share: float, act_below_confidence: float, seed: int) -> None:
        self.label_share = label_share
        self.act_below_confidence = act_below_confidence
        self.random = np.random.default_rng(seed)

    def decide(self, context: QueryContext) -> QueryDecision:
        batch = len(context.student_outputs)
        if context.student_version == 0:
            teacher_acts = np.ones(batch, dtype=bool)
        elif isinstance(context.action_space, spaces.Discrete):
            teacher_acts = softmax_confidence(context.student_outputs) < self.act_below_confidence
        else:
            teacher_acts = np.zeros(batch, dtype=bool)
        label = teacher_acts | (self.random.random(batch) < self.label_share)
        return apply_forced(context, label, teacher_acts)


def build_cascade(params: dict[str, Any]) -> Cascade:
    options = with_defaults("query cascade", params, {"label_share": 0.05, "act_below_confidence": 0.75, "seed": 0})
    if not 0.0 <= options["label_share"] <= 1.0:
        raise ValueError("query cascade: label_share must be between 0 and 1")
    return Cascade(float(options["label_share"]), float(options["act_below_confidence"]), int(options["seed"]))


@hookimpl
def agentrt_register_query_policies() -> dict[str, Any]:
    return {"cascade": build_cascade}
