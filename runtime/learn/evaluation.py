"""How well a student matches its teacher: one definition for online agreement, replay priorities,
the promotion gate and acting on the teacher's answer."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def teacher_policy_outputs(teacher_outputs: np.ndarray, width: int, discrete: bool) -> np.ndarray:
    """The teacher's outputs in the student's layout (B, width).

    A stacked ensemble's (B, K * width) logits become the log of the members' mean distribution;
    a box teacher's trailing variances are dropped.
    """
    if teacher_outputs.shape[1] == width:
        return teacher_outputs
    if discrete and teacher_outputs.shape[1] % width == 0:
        members = teacher_outputs.reshape(len(teacher_outputs), -1, width)
        return np.log(np.exp(log_softmax(members)).mean(axis=1))
    return teacher_outputs[:, :width]


def teacher_columns_error(columns: int, width: int) -> str | None:
    """Why a teacher's (B, ``columns``) outputs cannot stand for the student's ``width`` outputs,
    or None: ``width`` columns, or a multiple (a stacked ensemble's members side by side; a box
    teacher's means then variances)."""
    if columns >= width and columns % width == 0:
        return None
    return f"{columns} columns; expected {width} (the action space's outputs) or a multiple of {width}"


def per_sample_disagreement(student_outputs: np.ndarray, teacher_outputs: np.ndarray, discrete: bool) -> np.ndarray:
    """How badly the student matches the teacher on each sample: the cross-entropy against the
    teacher's choice (discrete), or the squared error against its action (box)."""
    teacher = teacher_policy_outputs(teacher_outputs, student_outputs.shape[1], discrete)
    if discrete:
        return -log_softmax(student_outputs)[np.arange(len(student_outputs)), teacher.argmax(axis=1)]
    return np.mean((student_outputs - teacher) ** 2, axis=1)


def agreement_and_loss(student_outputs: np.ndarray, teacher_outputs: np.ndarray, discrete: bool) -> tuple[float, float]:
    """Return (agreement in 0..1, loss) of student outputs against teacher outputs.

    Discrete actions: agreement is the share of equal choices; loss the mean cross-entropy against
    the teacher's choice. Box actions: loss is the mean squared error, agreement ``exp(-loss)``.
    """
    loss = float(per_sample_disagreement(student_outputs, teacher_outputs, discrete).mean())
    if not discrete:
        return float(np.exp(-loss)), loss
    teacher = teacher_policy_outputs(teacher_outputs, student_outputs.shape[1], discrete)
    return float((student_outputs.argmax(axis=1) == teacher.argmax(axis=1)).mean()), loss
