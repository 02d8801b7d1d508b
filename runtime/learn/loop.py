"""The online distillation loop, free of sockets: one implementation that the decision and
distillation roles, ``benchmarks/label_efficiency.py`` and the tests all drive.

``Decider`` decides a batch: the serving student's forward pass, the query policy, the teacher
standing in where the policy lets it act (or where the student's output is not finite), actions.
``Learner`` learns: teacher labels in, training steps paced by a ``Pacing``, a candidate every
``steps_per_publish`` steps (at most every ``publish_interval_s``, and only after new labels), the
promotion gate, and the decision which version serves.

Time comes from an injectable clock (seconds; ``time.monotonic`` in the daemon, simulated
environment time in the benchmark, a hand-moved clock in tests). It reaches the query policy
through ``QueryContext.now``. What the roles add around the core is transport: sockets, batching
messages, timeouts, files and the registry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from gymnasium import spaces

from runtime.config import Settings
from runtime.errors import PluginFailure
from runtime.learn.device import on_host, placement
from runtime.learn.evaluation import teacher_policy_outputs
from runtime.learn.models import build_student, feature_space
from runtime.learn.trainer import Trainer, Verdict, Weights
from runtime.plugin.interfaces import ForwardMembers, QueryContext, QueryDecision
from runtime.plugin.pluginmanager import Component, Plugins, serve
from runtime.wire.spaces import actions_from_outputs, output_size

Clock = Callable[[], float]
#: Asks the teacher to act for a batch of observations: its outputs, or None if it did not answer.
AskTeacher = Callable[[np.ndarray], "np.ndarray | None"]
State = dict[str, Any]


# --- deciding --------------------------------------------------------------------------------------


@dataclass
class Decisions:
    """What ``Decider.decide`` chose for a batch of B observations."""

    outputs: np.ndarray  # (B, width): the teacher's where it acted, else the student's
    actions: np.ndarray  # (B, ...) env actions from ``outputs``
    decided_by: np.ndarray  # (B,) "student" or "teacher"
    label: np.ndarray  # (B,) bool: the policy wants a teacher label
    teacher_outputs: list[np.ndarray | None]  # the teacher's answer where it acted (also the label)
    not_finite: int  # rows whose student output was NaN or infinite
    teacher_timed_out: bool  # the teacher was asked to act and did not answer
    student_latency_us: float  # the student's forward pass, per observation
    student_version: int  # the version whose outputs these are
    over_share: int  # rows the student decided alone because their peer had taken its share of labels

    def acted(self, row: int) -> bool:
        """False where neither the student nor the teacher produced a usable output."""
        return bool(np.isfinite(self.outputs[row]).all())


@dataclass
class Proposal:
    """A batch the student and the query policy have decided, its ``acting`` rows waiting for the teacher."""

    observations: np.ndarray
    outputs: np.ndarray  # (B, width): the student's
    label: np.ndarray  # (B,) bool: the policy wants a teacher label
    broken: np.ndarray  # (B,) bool: the student's output is NaN or infinite
    acting: np.ndarray  # indices of the rows the teacher should act for
    student_version: int
    student_latency_us: float
    over_share: int  # rows left to the student because their peer had taken its share of labels

    def acting_observations(self) -> np.ndarray:
        return self.observations[self.acting]


#: Rows of probe features on which a numpy forward must match torch's before it serves.
PROBE_ROWS = 8


class LabelShare:
    """How much of the teacher's recent labels (and acting) each peer took, so that no peer can
    take more than ``limit`` of them while other peers are labelled too: one busy or hostile peer
    can neither fill the replay buffer with its own observations nor spend the teacher's time
    (and a budgeted query policy's answers) that other peers need. Alone, a peer may take all.

    A peer's count is its labels decayed exponentially with time constant ``window_s`` on the
    decider's clock, so the share follows the recent stream; only peers that sent an observation
    within ``window_s`` compete, so a departed peer stops holding the others back. A peer over its
    share has its ``auto`` observations decided by the student alone (neither labelled nor acted
    on by the teacher): shown to the query policy as forced to ``student``, so that a budgeted
    policy spends its answers on other peers, and, within a batch, those the policy chose beyond
    the peer's allowance are taken back. Observations a peer forced to ``teacher`` are the
    gateway's forced-teacher budget's business.

    At most ``max_peers`` peers are remembered (``protocol.max_sessions``): beyond them, the least
    recently seen peers and the smallest counts are forgotten first, so that peers coming and
    going within a window cannot grow the tables.
    """

    #: Counts below this (about a thousandth of a label) are forgotten, so the table stays small.
    FORGET_BELOW = 1e-3
    #: Other peers' labels below this (about one label within the window) are no competition.
    COMPETING = 0.5
    #: How many labels a peer may run ahead of its share before it is held back: peers served in
    #: turn, or one that attached first, must not be held back for being a few labels ahead.
    AHEAD = 16.0

    def __init__(self, limit: float, window_s: float, now: float, max_peers: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_peers = max_peers
        self.counts: dict[Hashable, float] = {}
        self.seen: dict[Hashable, float] = {}  # peer -> when it last had an observation decided
        self.updated = now

    def _decay(self, now: float) -> None:
        factor = math.exp(-max(now - self.updated, 0.0) / self.window_s)
        self.updated = now
        self.counts = {
            peer: count * factor for peer, count in self.counts.items() if count * factor >= self.FORGET_BELOW
        }
        if len(self.counts) > self.max_peers:
            self.counts = dict(sorted(self.counts.items(), key=lambda item: item[1])[-self.max_peers :])

    def allowances(self, peers: Iterable[Hashable], now: float) -> dict[Hashable, float]:
        """Per peer of a batch: how many more labels it may take now (infinite while no other
        active peer is labelled, or without a limit)."""
        self._decay(now)
        self.seen.update((peer, now) for peer in peers)
        self.seen = {peer: when for peer, when in self.seen.items() if now - when <= self.window_s}
        if len(self.seen) > self.max_peers:
            self.seen = dict(sorted(self.seen.items(), key=lambda item: item[1])[-self.max_peers :])
        counts = {peer: count for peer, count in self.counts.items() if peer in self.seen}
        total = sum(counts.values())
        # Never below an equal split between the peers being labelled: with a limit under 1/n,
        # n equally served peers would otherwise all be over it at once, and nobody get labels.
        limit = max(self.limit, 1 / max(sum(count >= self.COMPETING for count in counts.values()), 1))
        allowances = {}
        for peer in set(peers):
            mine = counts.get(peer, 0.0)
            if limit >= 1 or total - mine < self.COMPETING:
                allowances[peer] = math.inf
            else:  # the x with mine + x = limit * (total + x) + AHEAD
                allowances[peer] = max((limit * total + self.AHEAD - mine) / (1 - limit), 0.0)
        return allowances

    def taken(self, peers: Sequence[Hashable], taken: np.ndarray) -> None:
        """Count the rows (of ``peers``) the teacher labelled or acted on, after ``allowances`` decayed to now."""
        for peer, took in zip(peers, taken, strict=True):
            if took:
                self.counts[peer] = self.counts.get(peer, 0.0) + 1.0


class Decider:
    """The serving student and the query policy, as decision uses them."""

    def __init__(
        self,
        plugins: Plugins,
        settings: Settings,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        clock: Clock = time.monotonic,
    ) -> None:
        import torch

        from runtime.learn.fastpath import NumpyForward  # torch too

        self.torch = torch
        self.compile_fast = NumpyForward.compile
        self.clock = clock
        self.action_space = action_space
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.width = output_size(action_space)
        self.where = placement(settings, "decision")
        #: The configured student; ``student`` is the one serving (a compressed version's otherwise).
        self.configured = self.where.module(build_student(plugins, settings, observation_space, action_space)).eval()
        self.student = self.configured
        #: Where the serving student runs: ``where`` for the configured one; a compressed version's
        #: on the CPU in float32 (its int8 kernels are CPU kernels), whatever decision.device says.
        self.serving_at = self.where
        self.ensemble = isinstance(self.student, ForwardMembers)  # checked when the student changes class
        space = feature_space(plugins, settings, observation_space)
        space.seed(0)
        self.probe = np.stack([np.asarray(space.sample(), dtype=np.float32) for _ in range(PROBE_ROWS)])
        # numpy runs on the CPU in float32: elsewhere torch serves.
        numpy_able = self.where.default and not self.ensemble
        self.fast = self.compile_fast(self.student, self.probe) if numpy_able else None
        self.fast_capable = self.fast is not None  # the graph decides; only a weight's value can change it
        self.student_component = plugins.get("student", settings.student.plugin)
        query = settings.query
        self.policy_component = plugins.get("query_policy", query.policy)
        self.policy = plugins.build("query_policy", query.policy, dict(query.params))
        self.shares = LabelShare(
            query.max_peer_label_share, query.peer_share_window_s, clock(), settings.protocol.max_sessions
        )
        self.version = 0  # untrained until a version is served

    def serve(self, version: int, state: State, metadata: Mapping[str, str] | None = None) -> None:
        """Serve other weights from the next batch on; raises (RuntimeError, ValueError) and keeps
        the current ones if they do not fit the student. A compressed version's checkpoint
        ``metadata`` says which student it is (``runtime.learn.nets.build_compressed``)."""
        from runtime.learn.nets import build_compressed, is_compressed

        if metadata is not None and is_compressed(metadata):
            student = build_compressed(metadata).eval()
            student.load_state_dict(state)
            self.student, self.serving_at, fast_capable = student, on_host(), True
        else:
            self.configured.load_state_dict(state)
            self.student, self.serving_at, fast_capable = self.configured, self.where, self.fast_capable
        self.ensemble = isinstance(self.student, ForwardMembers)
        self.version = version
        # Verified again: weights that numpy and torch disagree on keep torch.
        self.fast = self.compile_fast(self.student, self.probe) if fast_capable else None

    def forward(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(outputs, member outputs or None) of the serving student; an ensemble acts on its
        members' mean and the policy sees their spread. Failures are PluginFailures."""
        expected = (len(features), self.width)
        with self.torch.no_grad():
            at = self.serving_at
            if self.ensemble:
                members = serve(
                    self.student_component, lambda x: at.host(self.student.forward_members(x)), at.inputs(features)
                )
                _check_output(self.student_component, "forward_members", members, (len(members), *expected))
                return members.mean(axis=0), members
            if self.fast is not None:  # numpy on the features as they are: no tensor made
                outputs = serve(self.student_component, self.fast, features)
            else:
                outputs = serve(self.student_component, lambda x: at.host(self.student(x)), at.inputs(features))
            _check_output(self.student_component, "forward", outputs, expected)
            return outputs, None

    def decide(
        self,
        features: np.ndarray,
        observations: np.ndarray,
        forced: list[str],
        ask_teacher: AskTeacher,
        peers: Sequence[Hashable] | None = None,
    ) -> Decisions:
        """Decide for a batch, waiting for the teacher where it acts (``propose`` then ``complete``).
        Raises PluginFailure if the student or the policy fails."""
        proposal = self.propose(features, observations, forced, peers)
        answer = ask_teacher(proposal.acting_observations()) if len(proposal.acting) else None
        return self.complete(proposal, answer)

    def propose(
        self,
        features: np.ndarray,
        observations: np.ndarray,
        forced: list[str],
        peers: Sequence[Hashable] | None = None,
    ) -> Proposal:
        """The student's outputs and the policy's choice for a batch; the rows in ``acting`` wait for
        the teacher. ``peers`` names each row's peer (a stream), for its share of labels
        (``LabelShare``); without it the rows are one peer's. Raises PluginFailure if the student
        or the policy fails."""
        features = np.asarray(features, dtype=np.float32)
        started = time.perf_counter()
        outputs, members = self.forward(features)
        latency_us = (time.perf_counter() - started) * 1e6 / len(features)
        now = self.clock()
        peers = [None] * len(features) if peers is None else peers
        allowances = self.shares.allowances(peers, now)
        limited = [f == "auto" and allowances[peer] < 1 for f, peer in zip(forced, peers, strict=True)]
        forced = ["student" if limit else f for f, limit in zip(forced, limited, strict=True)]
        context = QueryContext(
            features=features,
            student_outputs=outputs,
            student_version=self.version,
            action_space=self.action_space,
            forced=forced,
            member_outputs=members,
            observations=observations,
            now=now,
        )
        choice = _checked_choice(
            self.policy_component, serve(self.policy_component, self.policy.decide, context), len(features)
        )
        choice = _within_shares(choice, forced, peers, allowances, limited)
        self.shares.taken(peers, choice.label | choice.teacher_acts)
        # A student that outputs NaN or infinity must not act: the teacher stands in.
        broken = ~np.isfinite(outputs).all(axis=1)
        acting = np.flatnonzero(np.asarray(choice.teacher_acts) | broken)
        return Proposal(observations, outputs, choice.label, broken, acting, self.version, latency_us, sum(limited))

    def complete(self, proposal: Proposal, answer: np.ndarray | None) -> Decisions:
        """The decisions, with the teacher's ``answer`` for the acting rows, or the student's outputs
        where it did not answer (None) or could not label a row (a NaN row)."""
        outputs = proposal.outputs
        decided_by = np.array(["student"] * len(outputs), dtype=object)
        teacher_outputs: list[np.ndarray | None] = [None] * len(outputs)
        acting = proposal.acting
        if len(acting) and answer is not None:
            # A NaN row is an observation the teacher could not label: the student's output stands.
            labelled = np.isfinite(answer).all(axis=1)
            rows = acting[labelled]
            if len(rows):
                outputs = outputs.copy()
                outputs[rows] = teacher_policy_outputs(answer[labelled], outputs.shape[1], self.discrete)
                decided_by[rows] = "teacher"
                for index, row_answer in zip(rows, answer[labelled], strict=True):
                    teacher_outputs[index] = row_answer
        return Decisions(
            outputs,
            actions_from_outputs(outputs, self.action_space),
            decided_by,
            proposal.label,
            teacher_outputs,
            int(proposal.broken.sum()),
            bool(len(acting)) and answer is None,
            proposal.student_latency_us,
            proposal.student_version,
            proposal.over_share,
        )


def _within_shares(
    choice: QueryDecision,
    forced: list[str],
    peers: Sequence[Hashable],
    allowances: dict[Hashable, float],
    limited: list[bool],
) -> QueryDecision:
    """``choice`` without the ``auto`` rows each peer took beyond its allowance (marked in ``limited``)."""
    label, teacher_acts = choice.label.copy(), choice.teacher_acts.copy()
    for row, peer in enumerate(peers):
        if forced[row] == "auto" and (label[row] or teacher_acts[row]):
            if allowances[peer] >= 1:
                allowances[peer] -= 1
            else:
                label[row] = teacher_acts[row] = False
                limited[row] = True
    return QueryDecision(label, teacher_acts)


def _check_output(component: Component, method: str, outputs: Any, shape: tuple[int, ...]) -> None:
    """A student's outputs enter the runtime here: a float array of ``shape``, or the student failed."""
    if not isinstance(outputs, np.ndarray) or outputs.shape != shape or outputs.dtype.kind != "f":
        got = f"{outputs.dtype} {list(outputs.shape)}" if isinstance(outputs, np.ndarray) else type(outputs).__name__
        raise PluginFailure(component, ValueError(f"{method} returned {got}; expected float {list(shape)}"))


def _checked_choice(component: Component, choice: Any, batch: int) -> QueryDecision:
    """A query policy's decision enters the runtime here: two bool arrays (B,), or the policy failed."""
    if not isinstance(choice, QueryDecision):
        raise PluginFailure(component, TypeError(f"decide returned {type(choice).__name__}, not a QueryDecision"))
    for name in ("label", "teacher_acts"):
        value = np.asarray(getattr(choice, name))
        if value.shape != (batch,) or value.dtype != np.bool_:
            raise PluginFailure(
                component,
                ValueError(f"decide returned {name} {value.dtype} {list(value.shape)}; expected bool [{batch}]"),
            )
    return QueryDecision(np.asarray(choice.label), np.asarray(choice.teacher_acts))


# --- learning --------------------------------------------------------------------------------------


class Pacing(Protocol):
    """When the learner trains: how many steps it may take now, and whether what it trains on
    since the last candidate is new (without anything new it trains one cycle, then rests)."""

    def allowance(self, learner: Learner) -> int: ...

    def spent(self, seconds: float) -> None:
        """Heard after every step, with the seconds it took on the learner's clock."""

    def fresh(self, learner: Learner) -> bool: ...

    def wait_s(self) -> float:
        """Seconds until the next step may be due (0: now)."""


class CpuShare:
    """The daemon's pacing: one step at a time, resting in proportion to the time spent training,
    so training stays within ``share`` of a core; fresh means labels arrived since the last candidate."""

    def __init__(self, share: float, clock: Clock) -> None:
        self.share = share
        self.clock = clock
        self.next_at = 0.0

    def allowance(self, learner: Learner) -> int:
        return 1 if self.clock() >= self.next_at else 0

    def spent(self, seconds: float) -> None:
        self.next_at = self.clock() + seconds * (1 - self.share) / self.share

    def fresh(self, learner: Learner) -> bool:
        return learner.has_new_labels()

    def wait_s(self) -> float:
        return max(0.0, self.next_at - self.clock())


class PerLabel:
    """``steps`` training steps bought by every label (the backlog first once training can start):
    the same training per label whatever the policy, as the label-efficiency benchmark measures.
    Every step follows a label, so every cycle is fresh."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def allowance(self, learner: Learner) -> int:
        return max(0, self.steps * learner.labels - learner.train_steps)

    def spent(self, seconds: float) -> None:
        pass

    def fresh(self, learner: Learner) -> bool:
        return True

    def wait_s(self) -> float:
        return 0.0


class PerTick:
    """``steps`` training steps per ``Learner.tick`` (per environment step in the benchmark), with
    the daemon's rule of resting after a cycle without new labels."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def allowance(self, learner: Learner) -> int:
        return self.steps

    def spent(self, seconds: float) -> None:
        pass

    def fresh(self, learner: Learner) -> bool:
        return learner.has_new_labels()

    def wait_s(self) -> float:
        return 0.0


@dataclass(frozen=True)
class Candidate:
    """A set of trained weights that went through the promotion gate."""

    version: int
    parent: int | None  # the version training continued from
    serving_before: int  # the version serving when it was judged
    state: State
    verdict: Verdict
    loss: float | None
    agreement: float | None
    samples: int  # training samples added so far
    train_steps: int  # training steps so far (this process)
    steps_per_s: float  # training steps per second of the clock since the last candidate

    @property
    def promoted(self) -> bool:
        return self.verdict.promoted


@dataclass(frozen=True)
class LearnerStats:
    """What the learner can tell without handing out its internals."""

    labels: int  # labelled samples received (training and held-out)
    samples: int  # added to the training buffer, evicted ones included
    buffer: int  # in the training buffer now
    buffer_bytes: int
    buffer_evicted: int
    heldout: int
    agreement: float | None  # running agreement with the teacher on fresh labels
    loss: float | None  # of the last training step
    train_steps: int
    version: int  # the newest candidate
    serving_version: int


@dataclass
class Progress:
    """What one ``Learner.tick`` did."""

    steps: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)


class Learner:
    """Teacher labels in; training, candidates, the promotion gate and the serving version out."""

    def __init__(
        self,
        plugins: Plugins,
        settings: Settings,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        clock: Clock = time.monotonic,
        pacing: Pacing | None = None,
    ) -> None:
        self.settings = settings.distillation
        self.clock = clock
        self.pacing = pacing or CpuShare(self.settings.cpu_share, clock)
        self.trainer = Trainer(plugins, settings, observation_space, action_space)
        self.version = 0
        self.serving_version = 0
        self.serving_state: Weights | None = None
        self.trained_from: int | None = None
        self.labels = 0
        self.train_steps = 0
        self.steps_since_publish = 0
        self.added_at_publish = 0
        self.last_publish = clock()

    @property
    def student(self) -> Any:
        """The weights in training (a torch module): what the next candidate will be."""
        return self.trainer.student

    def resume(
        self,
        last_version: int,
        trained_from: int,
        state: Weights | None,
        serving_version: int,
        serving_state: Weights | None,
    ) -> None:
        """Continue after a restart: numbering after ``last_version``, training from ``state`` (the
        newest candidate that could be read, ``trained_from``), judged against ``serving_state``
        (a built student when a compressed version serves). Raises RuntimeError if either does not
        fit the student."""
        if isinstance(serving_state, dict):
            self.trainer.scratch.load_state_dict(serving_state)
        if isinstance(state, dict):  # never a compressed version: see ``Distillation.newest_trainable``
            self.trainer.load(state)
        self.version = last_version
        self.trained_from = trained_from or None
        self.serving_version, self.serving_state = serving_version, serving_state

    def data(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The labels learnt from so far (replay buffer, held-out set), for ``restore_data`` after a restart."""
        return self.trainer.data()

    def restore_data(self, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        """Take back ``data()`` after a restart. Those labels are not new: without fresh ones the
        learner trains one cycle on them and rests, publishing nothing (ValueError if they do not fit)."""
        self.trainer.restore_data(arrays, metadata)
        self.added_at_publish = self.trainer.buffer.added

    def restore(self, version: int, state: Weights) -> None:
        """Serve ``version`` again (a rollback) and train on from its weights, with a fresh optimizer;
        a compressed version (a built student) serves, and training goes on from the weights in training.
        The labels held so far count as learnt from: the next candidate waits for labels that arrive
        after the rollback, so a person's rollback is not replaced within a second by weights trained
        on what the rolled-back versions already saw."""
        if isinstance(state, dict):
            self.trainer.load(state)
            self.trained_from = version
        self.serving_version, self.serving_state = version, state
        self.steps_since_publish = 0
        self.last_publish = self.clock()
        self.added_at_publish = self.trainer.buffer.added

    def add_labels(self, features: np.ndarray, outputs: np.ndarray, teacher_features: np.ndarray | None = None) -> None:
        """Teacher outputs for these student features; a ``heldout_share`` goes to the gate's held-out set."""
        self.trainer.add_labelled(features, outputs, teacher_features)
        self.labels += len(features)

    def has_new_labels(self) -> bool:
        return self.trainer.buffer.added > self.added_at_publish

    def wants_training(self) -> bool:
        # Without new labels there is nothing new to learn: train one cycle, then rest (and publish nothing).
        cycle_done = self.steps_since_publish >= self.settings.steps_per_publish
        return self.trainer.ready() and (self.pacing.fresh(self) or not cycle_done)

    def next_step_in(self) -> float | None:
        """Seconds until training may go on; None while resting (no labels to learn from)."""
        return self.pacing.wait_s() if self.wants_training() else None

    def publish_due(self) -> bool:
        return (
            self.steps_since_publish >= self.settings.steps_per_publish
            and self.pacing.fresh(self)
            and self.clock() - self.last_publish >= self.settings.publish_interval_s
        )

    def tick(self) -> Progress:
        """Train as the pacing allows now, and judge a candidate whenever one is due."""
        progress = Progress()
        for _ in range(self.pacing.allowance(self)):
            if not self.wants_training():
                break
            started = self.clock()
            try:
                self.trainer.train_step()
            except PluginFailure as failure:
                progress.failures.append(failure)
            else:
                self.train_steps += 1
                self.steps_since_publish += 1
                progress.steps += 1
            self.pacing.spent(self.clock() - started)
            if self.publish_due():
                progress.candidates.append(self.candidate())
        if not progress.steps and self.publish_due():
            progress.candidates.append(self.candidate())
        return progress

    def candidate(self) -> Candidate:
        """The weights in training as the next version, through the promotion gate: promoted, it
        serves (``serving_version``); rejected, the serving version stays. Training goes on from
        these weights either way."""
        now = self.clock()
        elapsed = now - self.last_publish
        state = self.trainer.state()
        verdict = self.trainer.judge(state, self.serving_state)
        self.version += 1
        candidate = Candidate(
            self.version,
            self.trained_from,
            self.serving_version,
            state,
            verdict,
            self.trainer.loss,
            self.trainer.agreement,
            self.trainer.buffer.added,
            self.train_steps,
            round(self.steps_since_publish / elapsed, 1) if elapsed > 0 else 0.0,
        )
        self.steps_since_publish = 0
        self.last_publish = now
        self.added_at_publish = self.trainer.buffer.added
        self.trained_from = self.version
        if verdict.promoted:
            self.serving_version, self.serving_state = self.version, state
        return candidate

    def stats(self) -> LearnerStats:
        buffer = self.trainer.buffer
        return LearnerStats(
            self.labels,
            buffer.added,
            len(buffer),
            buffer.nbytes,
            buffer.evicted,
            len(self.trainer.heldout),
            self.trainer.agreement,
            self.trainer.loss,
            self.train_steps,
            self.version,
            self.serving_version,
        )
