"""How well a student matches its teacher: one definition for online agreement and the promotion gate."""

from __future__ import annotations

import numpy as np


def agreement_and_loss(student_outputs: np.ndarray, teacher_outputs: np.ndarray, discrete: bool) -> tuple[float, float]:
    """Return (agreement in 0..1, loss) of student outputs against teacher outputs.

    Discrete actions: agreement is the share of equal argmaxes; loss is the cross-entropy of the
    student's softmax against the teacher's argmax. Box actions: loss is the mean squared error
    against the teacher's means (its first output_size columns); agreement is ``exp(-loss)``.
    """
    if discrete:
        labels = teacher_outputs.argmax(axis=1)
        agreement = float((student_outputs.argmax(axis=1) == labels).mean())
        shifted = student_outputs - student_outputs.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return agreement, float(-log_probs[np.arange(len(labels)), labels].mean())
    width = student_outputs.shape[1]
    loss = float(np.mean((student_outputs - teacher_outputs[:, :width]) ** 2))
    return float(np.exp(-loss)), loss


def per_sample_disagreement(student_outputs: np.ndarray, teacher_outputs: np.ndarray, discrete: bool) -> np.ndarray:
    """A per-sample priority for replay: how badly the student matches the teacher on each sample."""
    if discrete:
        shifted = student_outputs - student_outputs.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_probs[np.arange(len(student_outputs)), teacher_outputs.argmax(axis=1)]
    width = student_outputs.shape[1]
    return np.mean((student_outputs - teacher_outputs[:, :width]) ** 2, axis=1)
