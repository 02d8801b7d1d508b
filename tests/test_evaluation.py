"""Agreement, per-sample disagreement and the teacher's outputs in the student's layout, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.learn.evaluation import agreement_and_loss, per_sample_disagreement, teacher_policy_outputs


def test_discrete_agreement_and_cross_entropy():
    student = np.array([[2.0, 0.0], [0.0, 1.0]])
    teacher = np.array([[5.0, 1.0], [3.0, 0.0]])  # chooses 0 and 0
    agreement, loss = agreement_and_loss(student, teacher, discrete=True)
    first = -math.log(math.exp(2) / (math.exp(2) + 1))
    second = -math.log(1 / (1 + math.e))
    assert agreement == 0.5
    assert loss == pytest.approx((first + second) / 2)
    np.testing.assert_allclose(per_sample_disagreement(student, teacher, True), [first, second])


def test_box_agreement_is_exp_of_minus_mse_and_variances_are_ignored():
    student = np.array([[0.5], [1.0]])
    teacher = np.array([[1.0, 9.0], [1.0, 9.0]])  # means, then variances
    agreement, loss = agreement_and_loss(student, teacher, discrete=False)
    assert loss == pytest.approx(0.125) and agreement == pytest.approx(math.exp(-0.125))


def test_stacked_ensemble_outputs_become_the_mean_distribution():
    stacked = np.array([[0.0, math.log(3.0), math.log(3.0), 0.0]])  # member 1: (1/4, 3/4), member 2: (3/4, 1/4)
    joint = teacher_policy_outputs(stacked, 2, discrete=True)
    np.testing.assert_allclose(np.exp(joint), [[0.5, 0.5]])
    single = stacked[:, :2]
    np.testing.assert_array_equal(teacher_policy_outputs(single, 2, discrete=True), single)
