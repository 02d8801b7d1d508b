"""The built-in teacher query policies, on hand-built QueryContexts (no processes, no torch)."""

from __future__ import annotations

import math
import time

import numpy as np
import pluggy
import pytest
from gymnasium import spaces

import plugins.query_policies as policies
from runtime import hookspecs
from runtime.plugin.interfaces import QueryContext, QueryDecision, QueryPolicy

ALL_NAMES = {"cascade", "always", "share", "budget", "uncertainty", "disagreement", "novelty"}
DISCRETE = spaces.Discrete(2)
BOX = spaces.Box(low=-1.0, high=1.0, shape=(2,), dtype=np.float32)


def build(name: str, params: dict | None = None, **kwargs):
    return policies.agentrt_register_query_policies()[name](params or {}, **kwargs)


def context(
    outputs,
    *,
    version: int = 1,
    space: spaces.Space = DISCRETE,
    forced: list[str] | None = None,
    members=None,
    features=None,
    now: float | None = None,
) -> QueryContext:
    outputs = np.asarray(outputs, dtype=np.float32)
    timing = {} if now is None else {"now": now}
    return QueryContext(
        features=outputs if features is None else np.asarray(features, dtype=np.float32),
        student_outputs=outputs,
        student_version=version,
        action_space=space,
        forced=forced or [],
        member_outputs=None if members is None else np.asarray(members, dtype=np.float32),
        **timing,
    )


def rows(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def softmax(logits: list[float]) -> list[float]:
    exps = [math.exp(z) for z in logits]
    return [e / sum(exps) for e in exps]


def entropy(logits: list[float]) -> float:
    return -sum(p * math.log(p) for p in softmax(logits))


def margin(logits: list[float]) -> float:
    top1, top2 = sorted(softmax(logits), reverse=True)[:2]
    return 1 - (top1 - top2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- registration -------------------------------------------------------------------------------


def test_hook_registers_all_policies_through_pluggy_and_each_builds_with_defaults():
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(policies)
    (registered,) = manager.hook.agentrt_register_query_policies()
    assert set(registered) == ALL_NAMES
    for name, factory in registered.items():
        policy = factory({})
        assert isinstance(policy, QueryPolicy), name
        decision = policy.decide(context(np.zeros((3, 2))))
        assert isinstance(decision, QueryDecision), name
        assert decision.label.dtype == bool and decision.label.shape == (3,), name
        assert decision.teacher_acts.dtype == bool and decision.teacher_acts.shape == (3,), name
        assert not (decision.teacher_acts & ~decision.label).any(), f"{name}: an acting teacher must also label"


# --- cascade ------------------------------------------------------------------------------------


def test_cascade_teacher_acts_before_any_student_then_below_confidence():
    policy = build("cascade", {"label_share": 0.0, "act_below_confidence": 0.75})
    logits = [[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]]  # confidence 0.5, 0.953, 0.731
    untrained = policy.decide(context(logits, version=0))
    assert untrained.teacher_acts.all() and untrained.label.all()
    trained = policy.decide(context(logits))
    assert rows(trained.teacher_acts) == [0, 2] and rows(trained.label) == [0, 2]
    box = policy.decide(context(np.zeros((3, 2)), space=BOX))
    assert not box.teacher_acts.any() and not box.label.any()


def test_cascade_label_share_and_forced():
    policy = build("cascade", {"label_share": 1.0, "act_below_confidence": 0.0})
    decision = policy.decide(context([[5.0, 0.0]] * 3, forced=["student", "teacher", "auto"]))
    assert rows(decision.label) == [1, 2] and rows(decision.teacher_acts) == [1]


# --- always -------------------------------------------------------------------------------------


def test_always_labels_everything_and_acts_only_when_asked():
    labels_only = build("always").decide(context(np.zeros((4, 2))))
    assert labels_only.label.all() and not labels_only.teacher_acts.any()
    acting = build("always", {"teacher_acts": True}).decide(
        context(np.zeros((4, 2)), forced=["student", "auto", "auto", "auto"])
    )
    assert rows(acting.label) == [1, 2, 3] and rows(acting.teacher_acts) == [1, 2, 3]


# --- share --------------------------------------------------------------------------------------


def test_share_labels_its_share_over_10k_with_a_seed():
    policy = build("share", {"share": 0.3, "seed": 7})
    labels = np.concatenate([policy.decide(context(np.zeros((100, 2)))).label for _ in range(100)])
    assert abs(labels.mean() - 0.3) < 0.015
    again = build("share", {"share": 0.3, "seed": 7})
    assert np.array_equal(np.concatenate([again.decide(context(np.zeros((100, 2)))).label for _ in range(100)]), labels)
    other = build("share", {"share": 0.3, "seed": 8})
    assert not np.array_equal(
        np.concatenate([other.decide(context(np.zeros((100, 2)))).label for _ in range(100)]), labels
    )


def test_share_extremes_never_act_and_honour_forced():
    none = build("share", {"share": 0.0}).decide(context(np.zeros((50, 2)), forced=["teacher"] + ["auto"] * 49))
    assert rows(none.label) == [0] and rows(none.teacher_acts) == [0]
    every = build("share", {"share": 1.0}).decide(context(np.zeros((50, 2)), forced=["student"]))
    assert rows(every.label) == list(range(1, 50)) and not every.teacher_acts.any()


def test_share_with_teacher_acts_is_behaviour_cloning_on_a_share_of_the_teachers_states():
    policy = build("share", {"share": 0.25, "teacher_acts": True, "seed": 3})
    decision = policy.decide(context(np.zeros((400, 2)), forced=["student"] + ["auto"] * 399))
    assert rows(decision.teacher_acts) == list(range(1, 400))  # the teacher acts on every auto row
    assert not decision.label[0] and 0.15 < decision.label[1:].mean() < 0.35  # a share of them labelled


# --- budget -------------------------------------------------------------------------------------


def test_budget_token_bucket_labels_exactly_what_the_rate_allows():
    clock = FakeClock()
    policy = build("budget", {"per_second": 10})
    first = policy.decide(context(np.zeros((100, 2)), now=clock.now))
    assert rows(first.label) == list(range(10))  # starts full: one second's worth, first come first served
    assert not first.teacher_acts.any()
    assert not policy.decide(context(np.zeros((100, 2)), now=clock.now)).label.any()  # no time passed: empty
    clock.now += 0.5
    assert policy.decide(context(np.zeros((100, 2)), now=clock.now)).label.sum() == 5
    clock.now += 1000.0  # the bucket holds at most one second's worth
    assert policy.decide(context(np.zeros((100, 2)), now=clock.now)).label.sum() == 10
    clock.now += 0.25  # 2.5 tokens: 2 now, the half carried over
    assert policy.decide(context(np.zeros((100, 2)), now=clock.now)).label.sum() == 2
    clock.now += 0.05
    assert policy.decide(context(np.zeros((100, 2)), now=clock.now)).label.sum() == 1


def test_budget_burst_and_total_cap():
    clock = FakeClock()
    bursty = build("budget", {"per_second": 2, "burst": 5})
    assert bursty.decide(context(np.zeros((20, 2)), now=clock.now)).label.sum() == 5
    capped = build("budget", {"total": 7})
    assert [capped.decide(context(np.zeros((4, 2)))).label.sum() for _ in range(4)] == [4, 3, 0, 0]
    both = build("budget", {"per_second": 3, "total": 4})
    counts = []
    for _ in range(3):
        counts.append(int(both.decide(context(np.zeros((10, 2)), now=clock.now)).label.sum()))
        clock.now += 1.0
    assert counts == [3, 1, 0]


def test_budget_forced_rows_spend_nothing_and_unlimited_labels_all():
    policy = build("budget", {"total": 2})
    decision = policy.decide(context(np.zeros((5, 2)), forced=["student", "teacher", "auto", "auto", "auto"]))
    assert rows(decision.label) == [1, 2, 3] and rows(decision.teacher_acts) == [1]
    assert build("budget").decide(context(np.zeros((30, 2)))).label.all()


def test_budget_uses_the_monotonic_clock_by_default():
    # A context built without ``now`` (a third-party caller) is stamped with monotonic time.
    before = time.monotonic()
    stamped = context(np.zeros((1, 2))).now
    assert before <= stamped <= time.monotonic()
    policy = build("budget", {"per_second": 0.001})
    assert policy.decide(context(np.zeros((3, 2)))).label.sum() == 1
    assert policy.decide(context(np.zeros((3, 2)))).label.sum() == 0  # the next token is 1000 s away


# --- uncertainty --------------------------------------------------------------------------------


def test_score_functions_match_hand_computation():
    logits = [[0.0, 0.0, 0.0], [2.0, 2.0, -10.0], [3.0, 1.0, 0.0], [8.0, 0.0, 0.0]]
    assert np.allclose(policies.entropy_score(np.array(logits)), [entropy(row) for row in logits])
    assert np.allclose(policies.margin_score(np.array(logits)), [margin(row) for row in logits])
    members = np.array([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]], [[2.0, 0.0]]])  # K=4, B=1
    assert np.allclose(policies.vote_disagreement(members), [0.25])
    p = [softmax(m[0].tolist())[0] for m in members]
    mean = sum(p) / 4
    assert np.allclose(policies.probability_variance(members), [sum((x - mean) ** 2 for x in p) / 4])
    box = np.array([[[0.0, 1.0]], [[2.0, 1.0]]])
    assert np.allclose(policies.member_std(box), [(1.0 + 0.0) / 2])


def test_uncertainty_entropy_and_margin_pick_different_rows():
    # Row 0: two actions tie, the third is impossible (margin score 1, entropy ln 2 = 0.693).
    # Row 1: three actions, clear favourite but a spread tail (margin score 0.463, entropy 0.831).
    # Row 2: confident (both scores small).
    logits = [[2.0, 2.0, -10.0], [1.5, 0.0, 0.0], [6.0, 0.0, 0.0]]
    assert entropy(logits[1]) > 0.75 > entropy(logits[0]) and margin(logits[0]) > 0.9 > margin(logits[1])
    space = spaces.Discrete(3)
    by_entropy = build("uncertainty", {"measure": "entropy", "threshold": 0.75}).decide(context(logits, space=space))
    assert rows(by_entropy.label) == [1] and not by_entropy.teacher_acts.any()
    by_margin = build("uncertainty", {"measure": "margin", "threshold": 0.9}).decide(context(logits, space=space))
    assert rows(by_margin.label) == [0]
    low = build("uncertainty", {"measure": "margin", "threshold": 0.4}).decide(context(logits, space=space))
    assert rows(low.label) == [0, 1]


def test_uncertainty_two_actions_hand_computed_threshold():
    logits = [[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]]  # entropy 0.693, 0.582, ~0.0005
    policy = build("uncertainty", {"threshold": 0.6})
    assert rows(policy.decide(context(logits)).label) == [0]
    policy = build("uncertainty", {"threshold": 0.5})
    assert rows(policy.decide(context(logits)).label) == [0, 1]


def test_uncertainty_acts_above_and_while_untrained():
    logits = [[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]]
    policy = build("uncertainty", {"threshold": 0.5, "act_above": 0.65})
    decision = policy.decide(context(logits))
    assert rows(decision.teacher_acts) == [0] and rows(decision.label) == [0, 1]
    untrained = policy.decide(context(logits, version=0))
    assert untrained.teacher_acts.all() and untrained.label.all()
    no_cascade = build("uncertainty", {"threshold": 0.5}).decide(context(logits, version=0))
    assert not no_cascade.teacher_acts.any() and rows(no_cascade.label) == [0, 1]


def test_uncertainty_budget_total_keeps_the_most_uncertain():
    logits = [[3.0, 0.0], [0.0, 0.0], [5.0, 0.0], [0.5, 0.0]]  # entropy order: row 1 > 3 > 0 > 2
    assert rows(build("uncertainty", {"threshold": 0.0, "budget_total": 2}).decide(context(logits)).label) == [1, 3]
    policy = build("uncertainty", {"threshold": 0.0, "budget_total": 5})
    assert rows(policy.decide(context(logits)).label) == [0, 1, 2, 3]
    assert rows(policy.decide(context(logits)).label) == [1]
    assert not policy.decide(context(logits)).label.any()


def test_uncertainty_honours_forced_rows():
    logits = [[0.0, 0.0], [10.0, 0.0], [0.0, 0.0]]
    decision = build("uncertainty", {"threshold": 0.5}).decide(context(logits, forced=["student", "teacher", "auto"]))
    assert rows(decision.label) == [1, 2] and rows(decision.teacher_acts) == [1]


def test_uncertainty_box_without_members_falls_back_to_a_share():
    outputs = np.zeros((200, 2))
    assert (
        build("uncertainty", {"threshold": 0.0, "fallback_share": 1.0}).decide(context(outputs, space=BOX)).label.all()
    )
    assert (
        not build("uncertainty", {"threshold": 0.0, "fallback_share": 0.0})
        .decide(context(outputs, space=BOX))
        .label.any()
    )
    half = (
        build("uncertainty", {"threshold": 0.0, "fallback_share": 0.5}).decide(context(outputs, space=BOX)).label.mean()
    )
    assert 0.35 < half < 0.65


def test_uncertainty_box_with_members_uses_their_spread():
    members = [
        [[0.0, 0.0], [0.5, 0.5], [0.0, 0.0]],
        [[0.0, 0.0], [-0.5, -0.5], [0.1, 0.0]],
    ]  # std per row: 0, 0.5, 0.025
    decision = build("uncertainty", {"threshold": 0.1, "fallback_share": 1.0}).decide(
        context(np.zeros((3, 2)), space=BOX, members=members)
    )
    assert rows(decision.label) == [1]


def test_nan_outputs_count_as_most_uncertain():
    decision = build("uncertainty", {"threshold": 0.5, "act_above": 0.6}).decide(context([[np.nan, 0.0], [9.0, 0.0]]))
    assert rows(decision.label) == [0] and rows(decision.teacher_acts) == [0]


# --- target rate --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.05, 0.2, 0.5])
def test_uncertainty_target_rate_converges_on_a_stationary_stream(target):
    policy = build("uncertainty", {"target_rate": target, "seed": 3})
    stream = np.random.default_rng(11)
    labels = [
        policy.decide(context(stream.normal(scale=2.0, size=(16, 4)), space=spaces.Discrete(4))).label
        for _ in range(400)
    ]
    late = np.concatenate(labels[150:])  # 2,400 warm-up observations, then 4,000 measured
    assert abs(late.mean() - target) < 0.03


def test_gate_target_rate_is_exact_on_heavily_tied_scores():
    # 70 % of scores are 0: a plain quantile threshold would label 10 % or 30 %, not 20 %.
    gate = policies.Gate(target_rate=0.2, window=1000, seed=1)
    stream = np.random.default_rng(5)
    passed = [gate.select(stream.choice([0.0, 1 / 3, 2 / 3], p=[0.7, 0.2, 0.1], size=10)) for _ in range(600)]
    assert abs(np.concatenate(passed[200:]).mean() - 0.2) < 0.03


def test_gate_target_rate_follows_a_drifting_stream():
    gate = policies.Gate(target_rate=0.1, window=500, seed=2)
    stream = np.random.default_rng(6)
    for _ in range(200):
        gate.select(stream.normal(loc=5.0, size=10))
    late = np.concatenate([gate.select(stream.normal(loc=0.0, size=10)) for _ in range(400)][100:])
    assert abs(late.mean() - 0.1) < 0.03 and gate.threshold < 2.5


def test_disagreement_target_rate_converges_with_variance():
    policy = build("disagreement", {"target_rate": 0.15, "measure": "variance"})
    stream = np.random.default_rng(8)
    labels = [
        policy.decide(context(np.zeros((8, 3)), space=spaces.Discrete(3), members=stream.normal(size=(5, 8, 3)))).label
        for _ in range(700)
    ]
    assert abs(np.concatenate(labels[200:]).mean() - 0.15) < 0.03


def test_fixed_threshold_does_not_drift():
    gate = policies.Gate(threshold=0.5)
    assert rows(gate.select(np.array([0.4, 0.5, 0.6]))) == [2]
    gate.select(np.full(100, 10.0))
    assert gate.threshold == 0.5 and rows(gate.select(np.array([0.4, 0.6]))) == [1]


# --- disagreement -------------------------------------------------------------------------------


def test_disagreement_labels_rows_where_members_disagree():
    # K=3 members, B=4 rows of 2 logits; row 1 and row 3 see a dissenting member.
    members = [
        [[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 1.0]],
        [[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]],
        [[3.0, 0.0], [0.0, 2.0], [0.0, 1.0], [0.0, 2.0]],
    ]
    policy = build("disagreement", {"threshold": 0.0})
    decision = policy.decide(context(np.zeros((4, 2)), members=members))
    assert rows(decision.label) == [1, 3] and not decision.teacher_acts.any()
    cascade = build("disagreement", {"threshold": 0.0, "act_above": 0.3}).decide(
        context(np.zeros((4, 2)), members=members, forced=["auto", "auto", "auto", "student"])
    )
    assert rows(cascade.label) == [1] and rows(cascade.teacher_acts) == [1]


def test_disagreement_variance_and_box_spread():
    members = [[[1.0, 0.0], [4.0, 0.0]], [[1.0, 0.0], [-4.0, 0.0]]]  # row 0 agrees exactly
    decision = build("disagreement", {"threshold": 1e-6, "measure": "variance"}).decide(
        context(np.zeros((2, 2)), members=members)
    )
    assert rows(decision.label) == [1]
    box = [[[0.0, 0.0], [0.9, 0.9]], [[0.1, 0.1], [-0.9, -0.9]]]  # std 0.05 and 0.9
    decision = build("disagreement", {"threshold": 0.5}).decide(context(np.zeros((2, 2)), space=BOX, members=box))
    assert rows(decision.label) == [1]


def test_disagreement_without_an_ensemble_falls_back_to_a_share():
    none = build("disagreement", {"threshold": 0.0, "fallback_share": 0.0})
    assert not none.decide(context(np.zeros((50, 2)))).label.any()
    every = build("disagreement", {"threshold": 10.0, "fallback_share": 1.0})
    assert every.decide(context(np.zeros((50, 2)))).label.all()
    single_member = np.zeros((1, 50, 2))
    assert every.decide(context(np.zeros((50, 2)), members=single_member)).label.all()
    assert not none.decide(context(np.zeros((50, 2)), members=single_member)).label.any()
    with pytest.raises(ValueError, match="member_outputs"):
        none.decide(context(np.zeros((50, 2)), members=np.zeros((3, 49, 2))))


# --- novelty ------------------------------------------------------------------------------------


def test_novelty_labels_a_repeated_observation_only_once():
    policy = build("novelty", {"threshold": 0.5})
    a, b = [1.0, 2.0, 3.0], [4.0, -1.0, 0.0]
    first = policy.decide(context(np.zeros((3, 2)), features=[a, a, b]))
    assert rows(first.label) == [0, 2]  # the second copy of a, in the same batch, is not novel
    for _ in range(5):
        assert not policy.decide(context(np.zeros((3, 2)), features=[b, a, a])).label.any()


@pytest.mark.parametrize("bound", [{"memory": 2}, {"memory_bytes": 2 * 2 * 8}])  # 2 rows of 2 float64
def test_novelty_memory_is_bounded_fifo_in_rows_and_bytes(bound):
    policy = build("novelty", {"threshold": 0.5, **bound})
    points = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]
    for point in points:
        assert policy.decide(context(np.zeros((1, 2)), features=[point])).label.all()
    assert policy.decide(context(np.zeros((1, 2)), features=[points[0]])).label.all()  # forgotten: novel again
    assert not policy.decide(context(np.zeros((1, 2)), features=[points[2]])).label.any()  # still remembered


def test_novelty_is_standardised_per_dimension():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(40, 2))
    scaled = base * np.array([1000.0, 1.0])
    plain = build("novelty", {"threshold": 0.3})
    stretched = build("novelty", {"threshold": 0.3})
    plain_labels = [plain.decide(context(np.zeros((8, 2)), features=chunk)).label for chunk in base.reshape(5, 8, 2)]
    stretched_labels = [
        stretched.decide(context(np.zeros((8, 2)), features=chunk)).label for chunk in scaled.reshape(5, 8, 2)
    ]
    assert np.array_equal(np.concatenate(plain_labels), np.concatenate(stretched_labels))
    assert 0 < np.concatenate(plain_labels).sum() < 40


def test_novelty_forced_rows_and_acting():
    policy = build("novelty", {"threshold": 0.5, "act_above": 100.0})
    decision = policy.decide(
        context(np.zeros((3, 2)), features=[[0.0, 0.0], [5.0, 5.0], [9.0, 1.0]], forced=["student", "auto", "teacher"])
    )
    # row 1: nothing remembered, and row 0 (never labelled) is no reference: infinitely novel
    assert rows(decision.label) == [1, 2] and rows(decision.teacher_acts) == [1, 2]
    again = policy.decide(context(np.zeros((3, 2)), features=[[0.0, 0.0], [5.0, 5.0], [9.0, 1.0]]))
    assert rows(again.label) == [0] and not again.teacher_acts.any()  # 1 and 2 were labelled (forced counts)


# --- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, parameter",
    [
        ("cascade", {"label_share": 1.5}, "label_share"),
        ("cascade", {"act_below_confidence": "high"}, "act_below_confidence"),
        ("cascade", {"seed": -1}, "seed"),
        ("cascade", {"lable_share": 0.1}, "lable_share"),
        ("always", {"teacher_acts": "yes"}, "teacher_acts"),
        ("always", {"share": 0.5}, "share"),
        ("share", {"share": -0.1}, "share"),
        ("share", {"seed": 1.5}, "seed"),
        ("budget", {"per_second": -1}, "per_second"),
        ("budget", {"total": 2.5}, "total"),
        ("budget", {"total": True}, "total"),
        ("budget", {"burst": 0.5}, "burst"),
        ("uncertainty", {"measure": "variance"}, "measure"),
        ("uncertainty", {"threshold": float("nan")}, "threshold"),
        ("uncertainty", {"target_rate": 0.0}, "target_rate"),
        ("uncertainty", {"target_rate": 1.2}, "target_rate"),
        ("uncertainty", {"threshold": 0.5, "target_rate": 0.1}, "threshold or target_rate"),
        ("uncertainty", {"window": 0}, "window"),
        ("uncertainty", {"act_above": "max"}, "act_above"),
        ("uncertainty", {"budget_total": -3}, "budget_total"),
        ("uncertainty", {"fallback_share": 2}, "fallback_share"),
        ("disagreement", {"measure": "entropy"}, "measure"),
        ("disagreement", {"fallback_share": -0.5}, "fallback_share"),
        ("novelty", {"memory": 0}, "memory"),
        ("novelty", {"fallback_share": 0.1}, "fallback_share"),
        ("novelty", {"target_rate": True}, "target_rate"),
    ],
)
def test_bad_params_raise_naming_policy_and_parameter(name, params, parameter):
    with pytest.raises(ValueError) as raised:
        build(name, params)
    assert f"query {name}" in str(raised.value) and parameter in str(raised.value)
