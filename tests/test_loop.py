"""The online loop's core (runtime/learn/loop.py), socket-free, on a clock the test moves by hand."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium import spaces

from runtime import config as config_module
from runtime import hookimpl
from runtime.config import Settings
from runtime.learn.loop import Decider, LabelShare, Learner, PerLabel
from runtime.plugin import pluginmanager

OBSERVATIONS = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
ACTIONS = spaces.Discrete(2)


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def plugins():
    return pluginmanager.load(config_module.defaults()["plugins"])


def make_config(query: dict | None = None, **distillation) -> Settings:
    config = copy.deepcopy(config_module.defaults())
    config["distillation"].update(
        {"min_samples": 16, "steps_per_publish": 5, "publish_interval_s": 2.0, "heldout_share": 0.0, **distillation}
    )
    if query is not None:
        config["query"] = query
    return Settings.of(config)


def labels(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observations labelled by a simple rule the student can learn (push toward the pole's lean)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(count, 4)).astype(np.float32)
    right = features[:, 2] > 0
    return features, np.stack([np.where(right, -2.0, 2.0), np.where(right, 2.0, -2.0)], axis=1).astype(np.float32)


# --- learning ---------------------------------------------------------------------------------------


def test_learner_trains_only_with_enough_labels_and_publishes_on_its_clock(plugins):
    clock = HandClock()
    learner = Learner(plugins, make_config(), OBSERVATIONS, ACTIONS, clock)
    learner.add_labels(*labels(8))
    assert learner.tick().steps == 0 and learner.next_step_in() is None  # below min_samples: resting
    learner.add_labels(*labels(8, seed=1))
    for _ in range(10):  # the clock stands still: the cpu-share rest costs nothing, the interval is not over
        assert not learner.tick().candidates
    assert learner.stats().train_steps == 10
    clock.now += 2.0
    progress = learner.tick()
    assert [c.version for c in progress.candidates] == [1]
    first = progress.candidates[0]
    assert first.promoted and first.parent is None and first.serving_before == 0  # no serving version yet
    assert first.samples == 16 and first.train_steps == 11
    stats = learner.stats()
    assert (stats.version, stats.serving_version, stats.labels, stats.buffer, stats.heldout) == (1, 1, 16, 16, 0)
    assert 0.0 <= stats.agreement <= 1.0 and np.isfinite(stats.loss)


def test_learner_rests_after_a_cycle_without_new_labels(plugins):
    clock = HandClock()
    learner = Learner(plugins, make_config(publish_interval_s=0.5), OBSERVATIONS, ACTIONS, clock)
    learner.add_labels(*labels(32))
    clock.now += 1.0
    candidates = [c for _ in range(5) for c in learner.tick().candidates]
    assert [c.version for c in candidates] == [1]
    for _ in range(20):  # one more cycle of steps, then nothing to learn and nothing to publish
        clock.now += 1.0
        assert not learner.tick().candidates
    assert learner.stats().train_steps == 10 and learner.next_step_in() is None
    learner.add_labels(*labels(4, seed=2))  # new labels: training goes on, from version 1
    assert learner.next_step_in() == 0.0
    candidates = [c for _ in range(5) for c in learner.tick().candidates]
    assert [(c.version, c.parent) for c in candidates] == [(2, 1)]


class Saboteur:
    """Honest cross-entropy on the teacher's choice for ``honest_steps`` steps, then on its opposite."""

    def __init__(self, honest_steps: int) -> None:
        self.honest_steps = honest_steps
        self.steps = 0

    def loss(self, inputs):
        import torch

        self.steps += 1
        choice = inputs.teacher_outputs.argmax(dim=1)
        target = choice if self.steps <= self.honest_steps else 1 - choice
        return torch.nn.functional.cross_entropy(inputs.student_outputs, target)


class SaboteurPlugin:
    @staticmethod
    @hookimpl
    def agentrt_register_distillation_strategies():
        return {"saboteur": lambda params: Saboteur(params["honest_steps"])}


def test_gate_rejects_a_candidate_worse_than_the_serving_version():
    config = make_config(
        strategy="saboteur",
        params={"honest_steps": 400},
        heldout_share=0.5,
        min_heldout=8,
        steps_per_publish=50,
        publish_interval_s=0.0,
    )
    plugins = pluginmanager.load(config.plugins.table(), extra={"saboteur": SaboteurPlugin})
    learner = Learner(plugins, config, OBSERVATIONS, ACTIONS, HandClock(), PerLabel(steps=4))
    learner.add_labels(*labels(200))
    candidates = learner.tick().candidates
    assert len(candidates) == 16  # 200 labels buy 800 steps, a candidate every 50
    honest, sabotaged = candidates[:8], candidates[8:]
    assert honest[-1].promoted and honest[-1].verdict.heldout_agreement > 0.8
    rejected = [c for c in sabotaged if not c.promoted]
    assert rejected and all(c.verdict.heldout_agreement < c.verdict.serving_agreement - 0.02 for c in rejected)
    serving = max(c.version for c in candidates if c.promoted)
    assert learner.stats().serving_version == serving < rejected[-1].version == learner.stats().version
    assert all(c.parent == c.version - 1 for c in candidates[1:])  # training goes on from rejected weights too


def test_per_label_pacing_buys_the_same_training_for_every_label(plugins):
    learner = Learner(plugins, make_config(), OBSERVATIONS, ACTIONS, HandClock(), PerLabel(steps=3))
    learner.add_labels(*labels(10))
    assert learner.tick().steps == 0  # below min_samples: the steps stay owed
    learner.add_labels(*labels(10, seed=1))
    assert learner.tick().steps == 60  # the backlog first
    learner.add_labels(*labels(1, seed=2))
    progress = learner.tick()
    assert progress.steps == 3 and learner.stats().train_steps == 63


def test_saved_labels_keep_the_teachers_temperature_and_the_agreement_they_were_learnt_with(plugins):
    """A restarted distiller trains the restored buffer before the teacher has answered again, and
    compress fine-tunes on it: both must use the calibrated temperature, not the strategy's default."""
    learner = Learner(plugins, make_config(), OBSERVATIONS, ACTIONS, HandClock())
    learner.trainer.teacher_temperature = 1.7
    learner.add_labels(*labels(16))
    saved = learner.data()
    restored = Learner(plugins, make_config(), OBSERVATIONS, ACTIONS, HandClock())
    assert restored.trainer.teacher_temperature is None and restored.trainer.agreement is None
    restored.restore_data(*saved)
    assert restored.trainer.teacher_temperature == 1.7
    assert restored.trainer.agreement == learner.trainer.agreement is not None
    assert restored.stats().buffer == 16


def test_restore_serves_an_earlier_version_and_trains_on_from_it(plugins):
    clock = HandClock()
    learner = Learner(plugins, make_config(publish_interval_s=0.1), OBSERVATIONS, ACTIONS, clock, PerLabel(steps=5))
    learner.add_labels(*labels(16))
    clock.now += 1.0
    first = learner.tick().candidates[0]
    learner.restore(first.version, first.state)
    assert learner.stats().serving_version == first.version
    for name, tensor in learner.student.state_dict().items():
        assert np.array_equal(tensor.numpy(), first.state[name].numpy()), name


def test_after_a_restore_the_next_candidate_waits_for_labels_that_arrive_after_it(plugins):
    clock = HandClock()
    learner = Learner(plugins, make_config(), OBSERVATIONS, ACTIONS, clock)  # the daemon's pacing
    learner.add_labels(*labels(32))
    candidates = []
    while not candidates:
        clock.now += 1.0
        candidates = learner.tick().candidates
    learner.add_labels(*labels(32, seed=1))  # held, not yet learnt from, when a person rolls back
    learner.restore(candidates[0].version, candidates[0].state)
    trained = 0
    for _ in range(50):
        clock.now += 1.0
        progress = learner.tick()
        assert not progress.candidates  # the rollback serves: nothing new arrived since
        trained += progress.steps
    assert trained == 5 and learner.next_step_in() is None  # one cycle on the held labels, then rest
    learner.add_labels(*labels(8, seed=2))
    while not candidates[-1].version > candidates[0].version:
        clock.now += 1.0
        candidates += learner.tick().candidates
    assert candidates[-1].parent == candidates[0].version  # trained on from the restored weights


# --- deciding ---------------------------------------------------------------------------------------


def decider(plugins, clock=None, settings: dict | None = None, **query) -> Decider:
    """A Decider with query policy ``policy`` (default share) and its ``query`` params; ``settings``
    sets other keys of [query]."""
    config = make_config(query={"policy": query.pop("policy", "share"), "params": query, **(settings or {})})
    return Decider(plugins, config, OBSERVATIONS, ACTIONS, *([clock] if clock else []))


def test_an_acting_stacked_teacher_decides_by_its_members_joint_choice(plugins):
    decide = decider(plugins, policy="always", teacher_acts=True)
    # Two members over two actions: one mildly prefers action 0, the other strongly action 1.
    stacked = np.array([[1.0, 0.0, -5.0, 5.0]], dtype=np.float32)
    asked = []

    def teacher(observations):
        asked.append(len(observations))
        return stacked

    decisions = decide.decide(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32), ["auto"], teacher)
    assert asked == [1] and decisions.decided_by[0] == "teacher" and decisions.label[0]
    assert int(decisions.actions[0]) == 1  # not the first member's argmax (what a [:, :width] slice would take)
    assert np.array_equal(decisions.teacher_outputs[0], stacked[0])  # the label is the whole answer


def test_the_teacher_stands_in_for_a_non_finite_student(plugins):
    decide = decider(plugins, share=0.0)
    state = {name: tensor * float("nan") for name, tensor in decide.student.state_dict().items()}
    decide.serve(3, state)
    observations = np.zeros((2, 4), np.float32)
    answered = decide.decide(
        observations, observations, ["auto", "auto"], lambda obs: np.tile([[0.0, 1.0]], (len(obs), 1))
    )
    assert answered.not_finite == 2 and list(answered.decided_by) == ["teacher", "teacher"]
    assert all(answered.acted(row) for row in range(2)) and list(answered.actions) == [1, 1]
    silent = decide.decide(observations, observations, ["auto", "auto"], lambda obs: None)
    assert silent.teacher_timed_out and not silent.acted(0) and list(silent.decided_by) == ["student", "student"]


def test_a_row_the_teacher_could_not_label_keeps_the_students_output(plugins):
    decide = decider(plugins, share=0.0)
    observations = np.zeros((3, 4), np.float32)
    answer = np.array([[0.0, 1.0], [np.nan, np.nan], [1.0, 0.0]], np.float32)  # row 1: the teacher failed
    decisions = decide.decide(observations, observations, ["teacher"] * 3, lambda obs: answer)
    assert list(decisions.decided_by) == ["teacher", "student", "teacher"]
    assert all(decisions.acted(row) for row in range(3)) and [int(a) for a in decisions.actions[[0, 2]]] == [1, 0]
    assert decisions.teacher_outputs[1] is None  # nothing to learn from for that row


def test_the_deciders_clock_reaches_the_query_policy(plugins):
    clock = HandClock()
    decide = decider(plugins, clock, policy="budget", per_second=1.0)
    observations = np.zeros((5, 4), np.float32)

    def labelled() -> int:
        return int(decide.decide(observations, observations, ["auto"] * 5, lambda obs: None).label.sum())

    assert labelled() == 1  # the bucket starts with one second's worth
    assert labelled() == 0  # the hand clock stands still, whatever the wall clock does
    clock.now += 3.0
    assert labelled() == 1  # the bucket holds at most one second's worth


def label_counts(decide: Decider, clock: HandClock, batches: int, rows: dict[str, int]) -> dict[str, int]:
    """Decide ``batches`` mixed batches of ``rows[peer]`` rows per peer, 0.1 s apart; labels per peer."""
    peers = [peer for peer, count in rows.items() for _ in range(count)]
    observations = np.zeros((len(peers), 4), np.float32)
    counts = dict.fromkeys(rows, 0)
    for _ in range(batches):
        decisions = decide.decide(observations, observations, ["auto"] * len(peers), lambda obs: None, peers=peers)
        for peer, labelled in zip(peers, decisions.label, strict=True):
            counts[peer] += int(labelled)
        clock.now += 0.1
    return counts


def test_a_hammering_peer_takes_at_most_its_share_of_labels_and_the_other_still_gets_them(plugins):
    clock = HandClock()
    # The policy would label every observation of everyone; labels hardly decay within the test,
    # so that the counts below are the shares the limit is about.
    decide = decider(plugins, clock, {"max_peer_label_share": 0.5, "peer_share_window_s": 1e6}, policy="always")
    counts = label_counts(decide, clock, 100, {"hammer": 60, "quiet": 2})
    assert counts["quiet"] >= 190  # nearly all of the quiet peer's observations were labelled
    # At most half of the labels, give or take the labels a peer may run ahead of its share.
    assert counts["quiet"] - 2 * LabelShare.AHEAD <= counts["hammer"] <= counts["quiet"] + 2 * LabelShare.AHEAD


def test_by_default_a_hammering_peer_takes_at_most_four_fifths_of_the_labels(plugins):
    clock = HandClock()
    decide = decider(plugins, clock, {"peer_share_window_s": 1e6}, policy="always")
    assert decide.shares.limit == 0.8
    counts = label_counts(decide, clock, 100, {"hammer": 60, "quiet": 2})
    assert counts["quiet"] == 200
    assert counts["hammer"] <= 4 * counts["quiet"] + 5 * LabelShare.AHEAD


def test_peers_served_in_turn_are_not_held_back(plugins):
    clock = HandClock()
    decide = decider(plugins, clock, {"max_peer_label_share": 0.5}, policy="always")
    # Equal peers, one a label ahead at every batch: none is over its share.
    assert label_counts(decide, clock, 50, {"a": 3, "b": 2, "c": 3}) == {"a": 150, "b": 100, "c": 150}
    assert decide.shares.limit == 0.5


def test_a_peer_alone_may_take_every_label_and_is_freed_when_the_others_leave(plugins):
    clock = HandClock()
    decide = decider(plugins, clock, policy="always")
    assert label_counts(decide, clock, 10, {"alone": 30}) == {"alone": 300}
    label_counts(decide, clock, 10, {"alone": 30, "other": 1})
    assert label_counts(decide, clock, 5, {"alone": 30}) != {"alone": 150}  # the other is still recent
    clock.now += 31.0  # peer_share_window_s (30) without a word from the other peer
    assert label_counts(decide, clock, 5, {"alone": 30}) == {"alone": 150}


def test_label_share_tables_keep_at_most_max_peers_peers():
    shares = LabelShare(0.5, window_s=1e6, now=0.0, max_peers=3)
    for step in range(20):  # twenty peers come and go within one window
        peer = f"peer-{step}"
        shares.allowances([peer, "steady"], float(step))
        shares.taken([peer, "steady"], np.array([True, True]))
    assert len(shares.seen) <= 3 and len(shares.counts) <= 3 + 2  # + one batch's newcomers
    assert "steady" in shares.seen and "steady" in shares.counts  # the most recent and the largest stay
    assert "peer-0" not in shares.seen


def test_without_a_share_limit_the_policy_alone_decides(plugins):
    clock = HandClock()
    decide = decider(plugins, clock, {"max_peer_label_share": 1.0}, policy="always")
    assert label_counts(decide, clock, 20, {"hammer": 60, "quiet": 2}) == {"hammer": 1200, "quiet": 40}


# --- the numpy forward --------------------------------------------------------------------------------


@pytest.mark.parametrize("activation, numpy_runs_it", [("relu", True), ("tanh", True), ("gelu", False)])
def test_decider_runs_an_mlp_student_with_numpy_only_where_it_equals_torch(plugins, activation, numpy_runs_it):
    settings = make_config()
    config = settings.as_config()
    config["student"]["params"] = {"hidden": [16, 8], "activation": activation}
    decider = Decider(plugins, Settings.of(config), OBSERVATIONS, ACTIONS)
    assert (decider.fast is not None) == numpy_runs_it
    features = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = decider.student(torch.from_numpy(features)).numpy()
    assert np.allclose(decider.forward(features)[0], expected, atol=1e-5)
    # New weights are verified and served by the numpy forward too.
    state = {name: torch.randn_like(tensor) for name, tensor in decider.student.state_dict().items()}
    decider.serve(7, state)
    with torch.no_grad():
        expected = decider.student(torch.from_numpy(features)).numpy()
    assert (decider.fast is not None) == numpy_runs_it
    assert np.allclose(decider.forward(features)[0], expected, atol=1e-5)


def test_numpy_forward_refuses_what_it_cannot_run_or_does_not_match():
    from torch import nn

    from runtime.learn.fastpath import NumpyForward

    probe = np.ones((2, 4), np.float32)
    assert NumpyForward.compile(nn.Sequential(nn.Linear(4, 3), nn.Softplus()), probe) is None
    assert NumpyForward.compile(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), probe) is not None
    poisoned = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        poisoned[0].weight.fill_(float("nan"))  # NaN never equals NaN: torch keeps serving
    assert NumpyForward.compile(poisoned, probe) is None
