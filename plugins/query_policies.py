"""Built-in teacher query policies: when to ask the teacher for a label, and when the teacher acts.

Every teacher answer costs (latency, money, a large model's time), and the student should learn
from as few of them as possible. Pick by what you know about the student and the budget:

* ``cascade`` (default): student first; the teacher acts while no student is trained and when a
  discrete student's confidence is low, and a random share of the rest is labelled.
* ``always``: label every observation (DAgger). The most teacher answers, the fastest learning;
  pick it when the teacher is cheap or for a baseline.
* ``share``: label a fixed random share. Cheap, unbiased, blind to what the student knows.
* ``budget``: label as many observations as a rate (per second) and/or lifetime cap allows; pick
  it when the teacher's cost, not the student's needs, is the constraint.
* ``uncertainty``: label where the student itself is unsure (softmax entropy or margin). The usual
  active-learning choice for a discrete student.
* ``disagreement``: label where the members of an ensemble student disagree (query by committee);
  works for discrete and box actions, but needs an ensemble student (``member_outputs``).
* ``novelty``: label observations far from those already labelled; needs nothing from the
  student, so it suits any action space and an untrained student.

``uncertainty``, ``disagreement`` and ``novelty`` are *gated*: they score each observation
(higher = more worth asking), label scores above a ``threshold`` or tune the threshold online to
label a ``target_rate`` share, can cap their answers with ``budget_total``, and with ``act_above``
let the teacher act instead of the student when the score is very high (a cascade). Every policy
honours per-observation ``forced`` requests ("student": never ask; "teacher": always act).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from runtime import hookimpl
from runtime.errors import ParamError
from runtime.plugin.interfaces import QueryContext, QueryDecision
from runtime.plugin.params import (
    Param,
    Validator,
    and_,
    boolean,
    declare,
    ge,
    gt,
    in_,
    integer,
    le,
    number,
    optional,
    positive_int,
    share,
)

COUNT = and_(integer, ge(0))
SEED = Param(0, "seed of the policy's random choices", COUNT)


# --- scores: one function per measure; higher = more worth asking the teacher -------------------


def softmax(outputs: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (logits -> probabilities), numerically stable."""
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def softmax_confidence(outputs: np.ndarray) -> np.ndarray:
    """Largest softmax probability per row: the student's confidence in its discrete action."""
    return softmax(np.asarray(outputs, dtype=np.float64)).max(axis=1)


def entropy_score(outputs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row's softmax: 0 when certain, log(n) for a uniform distribution."""
    probabilities = softmax(np.asarray(outputs, dtype=np.float64))
    logs = np.log(np.where(probabilities > 0, probabilities, 1.0))
    return -(probabilities * logs).sum(axis=1)


def margin_score(outputs: np.ndarray) -> np.ndarray:
    """1 - (top1 - top2 probability) per row: 0 when certain, 1 when the best two actions tie."""
    probabilities = softmax(np.asarray(outputs, dtype=np.float64))
    if probabilities.shape[1] < 2:  # a single action: nothing to be unsure about
        return np.zeros(len(probabilities))
    top2 = np.partition(probabilities, -2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def vote_disagreement(member_outputs: np.ndarray) -> np.ndarray:
    """Fraction of ensemble members whose argmax differs from the majority action, per row (K, B, n) -> (B,)."""
    members, batch, actions = member_outputs.shape
    votes = member_outputs.argmax(axis=2)  # (K, B)
    counts = np.zeros((batch, actions), dtype=np.int64)
    np.add.at(counts, (np.broadcast_to(np.arange(batch), votes.shape), votes), 1)
    return 1.0 - counts.max(axis=1) / members


def probability_variance(member_outputs: np.ndarray) -> np.ndarray:
    """Variance of the members' softmax probabilities, across members, averaged over actions (K, B, n) -> (B,)."""
    return softmax(np.asarray(member_outputs, dtype=np.float64)).var(axis=0).mean(axis=1)


def member_std(member_outputs: np.ndarray) -> np.ndarray:
    """Standard deviation of the members' outputs (box actions), across members, averaged over dimensions."""
    return np.asarray(member_outputs, dtype=np.float64).std(axis=0).mean(axis=1)


# --- shared machinery: forced rows, gates, budgets ----------------------------------------------


def apply_forced(context: QueryContext, label: np.ndarray, teacher_acts: np.ndarray) -> QueryDecision:
    """Honour per-observation ``policy`` requests: "student" never asks the teacher, "teacher" always acts."""
    for index, forced in enumerate(context.forced):
        if forced == "student":
            label[index] = teacher_acts[index] = False
        elif forced == "teacher":
            label[index] = teacher_acts[index] = True
    return QueryDecision(label=label, teacher_acts=teacher_acts)


def nan_as_infinite(scores: np.ndarray) -> np.ndarray:
    """Scores as float64 with NaN read as +inf: a student whose outputs are NaN should ask."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(scores), np.inf, scores)


def automatic_rows(context: QueryContext, batch: int) -> np.ndarray:
    """Bool (B,): the rows the policy decides for (not forced to "student" or "teacher")."""
    chosen = np.ones(batch, dtype=bool)
    for index, forced in enumerate(context.forced[:batch]):
        chosen[index] = forced not in ("student", "teacher")
    return chosen


def ring_append(ring: np.ndarray, position: int, count: int, items: np.ndarray) -> tuple[int, int]:
    """Write ``items`` into the ring buffer ``ring`` at ``position`` (the oldest are overwritten);
    return the new position and the number of items held."""
    size = len(ring)
    items = items[-size:]
    ring[(position + np.arange(len(items))) % size] = items
    return (position + len(items)) % size, min(size, count + len(items))


class Gate:
    """Turns scores into labels: ``score > threshold`` with a fixed threshold, or, with a
    ``target_rate``, a threshold tuned online so that about that share of scores passes.

    The tuned threshold is the (1 - target_rate) quantile of the last ``window`` scores (the
    current batch included), so it follows a drifting score distribution (a student that gets
    more confident) within about one window. Scores equal to the threshold pass at random with
    the probability that makes the expected share exact, so scores with many ties (votes of a
    small ensemble) are rated correctly too.
    """

    def __init__(
        self, threshold: float | None = None, target_rate: float | None = None, window: int = 1024, seed: int = 0
    ) -> None:
        if (threshold is None) == (target_rate is None):
            raise ValueError("Gate needs exactly one of threshold and target_rate")
        self.threshold = threshold
        self.target_rate = target_rate
        self.tie_probability = 0.0
        self.scores = np.zeros(window)
        self.count = 0  # scores in the window (at most ``window``)
        self.position = 0
        self.random = np.random.default_rng(seed)

    def select(self, scores: np.ndarray) -> np.ndarray:
        """Bool mask of the scores that pass; in target-rate mode also updates the threshold.

        NaN scores count as infinitely high (a student whose outputs are NaN should ask)."""
        scores = nan_as_infinite(scores)
        if self.target_rate is None:
            return scores > self.threshold
        self._remember(scores[np.isfinite(scores)])
        self._tune(self.target_rate)
        ties = (scores == self.threshold) & (self.random.random(len(scores)) < self.tie_probability)
        return (scores > self.threshold) | ties

    def _remember(self, scores: np.ndarray) -> None:
        self.position, self.count = ring_append(self.scores, self.position, self.count, scores)

    def _tune(self, target_rate: float) -> None:
        if self.count == 0:  # nothing finite seen yet: every score passes
            self.threshold, self.tie_probability = -np.inf, 1.0
            return
        recent = np.sort(self.scores[: self.count])[::-1]  # descending
        wanted = target_rate * self.count  # how many of the window should pass
        self.threshold = float(recent[max(math.ceil(wanted), 1) - 1])
        above = int(np.count_nonzero(recent > self.threshold))
        equal = int(np.count_nonzero(recent == self.threshold))
        self.tie_probability = min(1.0, max(0.0, (wanted - above) / equal))


class Budget:
    """Teacher answers allowed: a token bucket of ``per_second`` answers (holding at most ``burst``,
    one second's worth when 0; it starts full) and a lifetime cap of ``total`` answers.
    0 means unlimited for either. Time is the runtime's clock as ``QueryContext.now`` tells it
    (simulated time in a benchmark), so the bucket keeps no clock of its own."""

    def __init__(self, per_second: float = 0.0, total: int = 0, burst: float = 0.0) -> None:
        self.per_second = per_second
        self.total = total
        self.capacity = burst or max(1.0, per_second)
        self.tokens = self.capacity
        self.spent = 0
        self.last: float | None = None  # full until the first request

    @property
    def unlimited(self) -> bool:
        return self.per_second == 0 and self.total == 0

    def grant(self, wanted: int, now: float) -> int:
        """How many of ``wanted`` answers may be asked at time ``now`` (seconds); they are spent."""
        granted = min(wanted, self.total - self.spent) if self.total else wanted
        if self.per_second:
            elapsed = 0.0 if self.last is None else max(0.0, now - self.last)
            self.tokens = min(self.capacity, self.tokens + elapsed * self.per_second)
            self.last = now
            granted = min(granted, math.floor(self.tokens + 1e-9))
            self.tokens -= granted
        self.spent += granted
        return granted


def keep_best(chosen: np.ndarray, priority: np.ndarray, budget: Budget, now: float) -> np.ndarray:
    """``chosen`` cut down to what ``budget`` grants at time ``now``, keeping the rows of highest
    priority (ties: the earlier row)."""
    if budget.unlimited:
        return chosen
    rows = np.flatnonzero(chosen)
    granted = budget.grant(len(rows), now)
    if granted == len(rows):
        return chosen
    order = rows[np.argsort(-priority[rows], kind="stable")]
    kept = np.zeros_like(chosen)
    kept[order[:granted]] = True
    return kept


# --- policies -----------------------------------------------------------------------------------


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


@declare(
    "query cascade",
    # 0.02: the rate the label-efficiency benchmark's tuning seeds chose for cascade on every task
    # tuned (CartPole, Pendulum, Acrobot; docs/distillation.md), against 0.05 and 0.2.
    label_share=Param(0.02, "share of the student's own decisions sent for labels", share),
    act_below_confidence=Param(0.75, "the teacher acts where a discrete student's confidence is below this", share),
    seed=SEED,
)
def build_cascade(params: dict[str, Any]) -> Cascade:
    """Student first; the teacher acts while no student is trained and where it is unsure (the default)."""
    return Cascade(params["label_share"], params["act_below_confidence"], params["seed"])


class Always:
    """Label every observation the student meets (DAgger: the student acts, the teacher labels
    every visited state); with ``teacher_acts`` the teacher also acts on every one (pure
    imitation of the teacher's own trajectories). Pick it when teacher answers are cheap, or as
    the upper bound other policies are measured against."""

    def __init__(self, teacher_acts: bool) -> None:
        self.teacher_acts = teacher_acts

    def decide(self, context: QueryContext) -> QueryDecision:
        batch = len(context.student_outputs)
        return apply_forced(context, np.ones(batch, dtype=bool), np.full(batch, self.teacher_acts))


@declare("query always", teacher_acts=Param(False, "the teacher also acts on every observation", boolean))
def build_always(params: dict[str, Any]) -> Always:
    """Label every observation (DAgger); optionally the teacher acts on every one."""
    return Always(params["teacher_acts"])


class Share:
    """Label a random ``share`` of observations; the student acts (DAgger thinned uniformly). Pick
    it for a cheap, unbiased stream of labels when nothing is known about where the student is
    weak. With ``teacher_acts`` the teacher acts on every observation and a ``share`` of its own
    states is labelled: behaviour cloning on teacher rollouts spread over many episodes."""

    def __init__(self, share: float, teacher_acts: bool, seed: int) -> None:
        self.share = share
        self.teacher_acts = teacher_acts
        self.random = np.random.default_rng(seed)

    def decide(self, context: QueryContext) -> QueryDecision:
        batch = len(context.student_outputs)
        label = self.random.random(batch) < self.share
        return apply_forced(context, label, np.full(batch, self.teacher_acts))


@declare(
    "query share",
    share=Param(0.1, "share of observations labelled", share),
    teacher_acts=Param(False, "the teacher acts on every observation (behaviour cloning)", boolean),
    seed=SEED,
)
def build_share(params: dict[str, Any]) -> Share:
    """Label a fixed random share of observations; optionally the teacher acts on every one."""
    return Share(params["share"], params["teacher_acts"], params["seed"])


class Budgeted:
    """Label as many observations as the budget allows, first come first served within a batch:
    ``per_second`` answers per second (token bucket) and/or ``total`` answers over the policy's
    lifetime. Pick it when the teacher's cost (rate limits, a paid API) is the constraint; it
    spends the budget as fast as it may, blind to what the student needs."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def decide(self, context: QueryContext) -> QueryDecision:
        batch = len(context.student_outputs)
        first_come = -np.arange(batch, dtype=np.float64)
        label = keep_best(automatic_rows(context, batch), first_come, self.budget, context.now)
        return apply_forced(context, label, np.zeros(batch, dtype=bool))


@declare(
    "query budget",
    per_second=Param(0.0, "answers per second, token bucket (0: unlimited)", and_(number, ge(0))),
    total=Param(0, "answers over the policy's lifetime (0: unlimited)", COUNT),
    burst=Param(
        0.0,
        "answers the bucket holds (0: one second's worth)",
        and_(number, Validator("0 or >= 1", lambda v: v == 0 or v >= 1)),
    ),
)
def build_budget(params: dict[str, Any]) -> Budgeted:
    """Label as many observations as a rate and/or lifetime budget allows, first come first served
    (time is the caller's: ``QueryContext.now``)."""
    return Budgeted(Budget(params["per_second"], params["total"], params["burst"]))


class Gated:
    """A scored policy: ``scorer`` rates each observation, ``gate`` picks which to label, the
    teacher acts where the score is above ``act_above`` (and everywhere while no student is
    trained yet, when ``act_above`` is set), ``budget`` caps all teacher answers (the
    highest-scored rows win). Rows the scorer cannot rate are labelled at random with
    ``fallback_share``. Forced rows bypass the gate and the budget."""

    def __init__(
        self, scorer: Scorer, gate: Gate, act_above: float | None, budget: Budget, fallback_share: float, seed: int
    ) -> None:
        self.scorer = scorer
        self.gate = gate
        self.act_above = act_above
        self.budget = budget
        self.fallback_share = fallback_share
        self.random = np.random.default_rng(seed)

    def decide(self, context: QueryContext) -> QueryDecision:
        batch = len(context.student_outputs)
        auto = automatic_rows(context, batch)
        scores = self.scorer.scores(context)
        label = np.zeros(batch, dtype=bool)
        teacher_acts = np.zeros(batch, dtype=bool)
        if scores is None:
            priority = np.zeros(batch)
            label[auto] = self.random.random(int(auto.sum())) < self.fallback_share
        else:
            priority = nan_as_infinite(scores)
            label[auto] = self.gate.select(scores[auto])
            if self.act_above is not None:
                teacher_acts[auto] = priority[auto] > self.act_above
        if self.act_above is not None and context.student_version == 0:
            teacher_acts[auto] = True  # an untrained student's scores mean nothing: the teacher acts
        label = keep_best(label | teacher_acts, priority, self.budget, context.now)
        decision = apply_forced(context, label, teacher_acts & label)
        self.scorer.labelled(context, decision.label)
        return decision


class Scorer:
    """Rates observations for a gated policy; ``None`` when it cannot (the policy falls back)."""

    def scores(self, context: QueryContext) -> np.ndarray | None:
        raise NotImplementedError

    def labelled(self, context: QueryContext, label: np.ndarray) -> None:
        """Told which rows were finally labelled; stateless scorers ignore it."""


def _members(context: QueryContext) -> np.ndarray | None:
    """The ensemble's outputs as float (K, B, out), or None without at least two members."""
    members = context.member_outputs
    if members is None:
        return None
    batch = len(context.student_outputs)
    if members.ndim != 3 or members.shape[1] != batch:
        raise ValueError(f"member_outputs must be (K, {batch}, output_size), got shape {list(members.shape)}")
    return None if members.shape[0] < 2 else members.astype(np.float64, copy=False)


class UncertaintyScorer(Scorer):
    def __init__(self, measure: str) -> None:
        self.measure = {"entropy": entropy_score, "margin": margin_score}[measure]

    def scores(self, context: QueryContext) -> np.ndarray | None:
        if isinstance(context.action_space, spaces.Discrete):
            return self.measure(context.student_outputs)
        members = _members(context)
        return None if members is None else member_std(members)


class DisagreementScorer(Scorer):
    def __init__(self, measure: str) -> None:
        self.measure = {"vote": vote_disagreement, "variance": probability_variance}[measure]

    def scores(self, context: QueryContext) -> np.ndarray | None:
        members = _members(context)
        if members is None:
            return None
        if isinstance(context.action_space, spaces.Discrete):
            return self.measure(members)
        return member_std(members)


class NoveltyScorer(Scorer):
    """Score: root-mean-square distance, per standardised feature dimension, to the nearest of the
    remembered labelled features and of the earlier rows of the same batch (so a batch of copies
    scores high once; rows forced to "student", never labelled, do not count). Infinite while
    nothing is remembered. Dimensions are standardised by a running std of every feature seen;
    the memory keeps the last ``memory`` labelled rows (FIFO), fewer if that many rows of this
    feature width would take more than ``memory_bytes``."""

    MIN_STD = 1e-6

    def __init__(self, memory: int, memory_bytes: int) -> None:
        self.memory: np.ndarray | None = None  # (rows, D), allocated once D is known
        self.size = memory
        self.max_bytes = memory_bytes
        self.stored = 0
        self.position = 0
        self.seen = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def _observe(self, features: np.ndarray) -> np.ndarray:
        """Update the running per-dimension mean and variance (Chan et al.'s parallel update);
        returns the sum of squared deviations so far, per dimension."""
        count, mean = len(features), features.mean(axis=0)
        m2 = ((features - mean) ** 2).sum(axis=0)
        if self.mean is None or self.m2 is None:
            self.seen, self.mean, self.m2 = count, mean, m2
            return m2
        total = self.seen + count
        delta = mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + m2 + delta**2 * self.seen * count / total
        self.seen = total
        return self.m2

    def scores(self, context: QueryContext) -> np.ndarray:
        features = np.asarray(context.features, dtype=np.float64).reshape(len(context.features), -1)
        if len(features) == 0:
            return np.zeros(0)
        m2 = self._observe(features)
        scale = 1.0 / np.maximum(np.sqrt(m2 / self.seen), self.MIN_STD)
        batch = features * scale
        within = _squared_distances(batch, batch)
        within[np.triu_indices(len(batch))] = np.inf  # only earlier rows of the batch count,
        never_labelled = [i for i, forced in enumerate(context.forced[: len(batch)]) if forced == "student"]
        within[:, never_labelled] = np.inf  # and not those forced to "student"
        nearest = within.min(axis=1)
        if self.memory is not None and self.stored:
            nearest = np.minimum(nearest, _squared_distances(batch, self.memory[: self.stored] * scale).min(axis=1))
        return np.sqrt(nearest / batch.shape[1])

    def labelled(self, context: QueryContext, label: np.ndarray) -> None:
        rows = np.asarray(context.features, dtype=np.float64).reshape(len(context.features), -1)[label]
        if not len(rows):
            return
        if self.memory is None:
            row_bytes = rows.shape[1] * np.dtype(np.float64).itemsize
            self.memory = np.zeros((max(1, min(self.size, self.max_bytes // row_bytes)), rows.shape[1]))
        # FIFO: the oldest labelled row is forgotten first
        self.position, self.stored = ring_append(self.memory, self.position, self.stored, rows)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) squared Euclidean distances, via |a|^2 + |b|^2 - 2ab (memory-light)."""
    squared = (a**2).sum(axis=1)[:, None] + (b**2).sum(axis=1)[None, :] - 2.0 * a @ b.T
    return np.maximum(squared, 0.0)


GATE_PARAMS = {
    "threshold": Param(None, "label scores above this; give this or target_rate", optional(number)),
    "target_rate": Param(
        None,
        "tune the threshold online to label about this share (0.1 when neither is given)",
        optional(and_(number, gt(0), le(1))),
    ),
    "window": Param(1024, "recent scores the tuned threshold is computed from", positive_int),
    "act_above": Param(
        None, "the teacher acts where the score is above this, and while no student is trained", optional(number)
    ),
    "budget_total": Param(0, "teacher answers over the policy's lifetime (0: unlimited)", COUNT),
    "seed": SEED,
}
FALLBACK_SHARE = Param(0.05, "share labelled at random where the student gives no score", share)
DEFAULT_TARGET_RATE = 0.1


def build_gated(component: str, params: dict[str, Any], scorer: Scorer) -> Gated:
    """The gated policy over ``scorer``, from checked ``GATE_PARAMS`` (and ``fallback_share`` when
    declared). Omitting both threshold and target_rate means target_rate 0.1."""
    threshold, target_rate = params["threshold"], params["target_rate"]
    if threshold is not None and target_rate is not None:
        raise ParamError(f"{component}: give threshold or target_rate, not both")
    if threshold is None and target_rate is None:
        target_rate = DEFAULT_TARGET_RATE
    gate = Gate(threshold, target_rate, params["window"], params["seed"])
    return Gated(
        scorer,
        gate,
        params["act_above"],
        Budget(total=params["budget_total"]),
        params.get("fallback_share", 0.0),
        params["seed"] + 1,
    )


@declare(
    "query uncertainty",
    **GATE_PARAMS,
    fallback_share=FALLBACK_SHARE,
    measure=Param(
        "entropy", "entropy (nats of the softmax) or margin (1 - (top1 - top2 probability))", in_("entropy", "margin")
    ),
)
def build_uncertainty(params: dict[str, Any]) -> Gated:
    """Label where the student is unsure of its own action. Scores (``measure``) for a discrete
    action space: "entropy" (nats of the softmax, default) or "margin" (1 - (top1 - top2
    probability)); for a box, the members' standard deviation when the student is an ensemble,
    else no score: a random ``fallback_share`` is labelled. Pick it for a discrete student
    that is reasonably calibrated; it is blind to confidently wrong actions."""
    return build_gated("query uncertainty", params, UncertaintyScorer(params["measure"]))


@declare(
    "query disagreement",
    **GATE_PARAMS,
    fallback_share=FALLBACK_SHARE,
    measure=Param(
        "vote",
        "vote (share of members off the majority) or variance (of the members' softmax)",
        in_("vote", "variance"),
    ),
)
def build_disagreement(params: dict[str, Any]) -> Gated:
    """Label where the members of an ensemble student disagree (query by committee): catches
    confidently wrong members that uncertainty cannot see, for discrete and box actions. Needs a
    student that exposes ``member_outputs`` (K >= 2); without it the policy labels a random
    ``fallback_share``. Scores (``measure``) for a discrete space: "vote" (share of members whose
    argmax differs from the majority, default) or "variance" (variance of the members' softmax
    probabilities, averaged over actions); for a box, the members' standard deviation."""
    return build_gated("query disagreement", params, DisagreementScorer(params["measure"]))


@declare(
    "query novelty",
    **GATE_PARAMS,
    memory=Param(2048, "labelled feature rows remembered (FIFO)", positive_int),
    memory_bytes=Param(16 << 20, "largest memory those rows may take (wide features keep fewer rows)", positive_int),
)
def build_novelty(params: dict[str, Any]) -> Gated:
    """Label observations unlike those already labelled: the score is the distance of the
    features to the nearest of the last ``memory`` labelled ones (standardised per dimension by a
    running std). Needs nothing from the student, so it works from the first observation and
    for any action space; pick it for broad coverage of the state space. It cannot tell whether
    the student is right in familiar states, so pair it with a small share elsewhere if needed."""
    return build_gated("query novelty", params, NoveltyScorer(params["memory"], params["memory_bytes"]))


@hookimpl
def agentrt_register_query_policies() -> dict[str, Any]:
    return {
        "cascade": build_cascade,
        "always": build_always,
        "share": build_share,
        "budget": build_budget,
        "uncertainty": build_uncertainty,
        "disagreement": build_disagreement,
        "novelty": build_novelty,
    }
