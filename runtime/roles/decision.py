"""Decision: the student picks actions in batches; the query policy decides when the teacher acts
or labels; new student weights are swapped in between batches. The deciding itself is
``runtime.learn.loop.Decider``; this role moves messages to and from it."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from runtime.errors import CheckpointError, PluginFailure
from runtime.learn import registry
from runtime.learn.checkpoints import CheckpointStore, read_checkpoint
from runtime.learn.loop import Decider, Decisions, Proposal
from runtime.learn.models import feature_space
from runtime.roles.base import Role
from runtime.wire import frames, protocol, transport
from runtime.wire.protocol import ErrorCode
from runtime.wire.spaces import shape_of

# While the teacher is unavailable (it missed a deadline), how often a batch it should act for is
# also sent to it, as a probe; the batch itself does not wait.
TEACHER_PROBE_INTERVAL_S = 1.0


class Decision(Role):
    name = "decision"

    def setup(self) -> None:
        import torch

        torch.set_num_threads(self.settings.decision.torch_threads)
        self.decider = Decider(self.plugins, self.settings, self.observation_space, self.action_space)
        run_dir = self.settings.daemon.run_dir
        self.store = CheckpointStore(Path(run_dir) / registry.CHECKPOINTS)
        # The serving version, or the newest earlier one that loads: one bad file must not stop service.
        for version in registry.serving_order(run_dir):
            if self.swap_in(version, str(self.store.path(version))):
                break
        self.batch_max = self.settings.decision.batch_max
        # What a batch stacks: a message of another shape or dtype is dropped, not stacked.
        self.obs_layout = (shape_of(self.observation_space), np.dtype(self.observation_space.dtype))
        self.features_shape = shape_of(feature_space(self.plugins, self.settings, self.observation_space))
        self.teacher_timeout_ms = self.settings.teacher.timeout_ms
        self.request_ids = itertools.count(1)
        # Batches waiting for the teacher, by request id; one timeout deadline for all, so in deadline order.
        self.parked: dict[int, Parked] = {}
        self.teacher_available = True
        self.next_probe_at = 0.0

        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.DECISION_IN))
        self.to_execution = self.transport.connect(zmq.PUSH, self.transport.internal(transport.EXECUTION_IN))
        self.to_distiller = self.transport.connect(zmq.PUSH, self.transport.internal(transport.DISTILLATION_IN))
        self.returns = self.transport.connect(zmq.PUSH, self.transport.internal(transport.GATEWAY_RETURN))
        self.teacher = self.teacher_socket(transport.TEACH_DECISION)
        self.weights = self.transport.connect(zmq.SUB, self.transport.internal(transport.WEIGHTS))
        self.weights.setsockopt(zmq.SUBSCRIBE, b"")
        # Handled in this order within a poll turn: a new version serves from the next batch, and
        # batches the teacher answered go out before new ones are decided.
        self.on(self.weights, lambda sock: self.drain(sock, self.on_weights))
        self.on(self.teacher, lambda sock: self.drain(sock, self.on_taught))
        self.on(self.inbox, self.on_features)
        self.gauges.update(
            student_version=self.decider.version,
            student_latency_us=0.0,
            numpy_forward=self.decider.fast is not None,
            teacher_available=True,
        )

    # --- weights ---------------------------------------------------------------------------------
    def on_weights(self, data: bytes) -> None:
        message = self.decode(data, frozenset({"weights"}))
        if message is not None and message["version"] != self.decider.version:
            self.swap_in(message["version"], message["path"])

    def swap_in(self, version: int, path: str) -> bool:
        """Serve ``version`` from ``path``; False (the current version serves on) if its file cannot be
        read (it is quarantined), is gone, or its weights do not fit the student."""
        started = time.perf_counter()
        try:
            self.decider.serve(version, *read_checkpoint(path))
        except (CheckpointError, RuntimeError, ValueError) as exc:
            moved = self.store.quarantine(Path(path)) if isinstance(exc, CheckpointError) else None
            if moved is not None:
                self.note_quarantine(moved, str(exc), version=version)
            else:
                self.counters["weights_rejected"] += 1
                self.log.error("weights_rejected", version=version, path=path, error=str(exc))
            return False
        self.gauges.update(student_version=version, numpy_forward=self.decider.fast is not None)
        self.counters["weights_swapped"] += 1
        self.log.info("weights_swapped", version=version, load_ms=round((time.perf_counter() - started) * 1000, 3))
        self.plugins.notify("agentrt_weights_swapped", version=version)
        return True

    # --- decisions -------------------------------------------------------------------------------
    def on_features(self, sock: zmq.Socket) -> None:
        batch = []
        for _ in range(self.batch_max):  # what is queued, never waiting to fill the batch
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            # The observation, and its features if perception transformed it (else they are the same).
            message = self.decode_frames(parts, frames.OBSERVED, arrays=(1, 2))
            if message is not None and self.fits(message):
                batch.append(message)
        if batch:
            self.decide(batch)

    def fits(self, message: frames.Internal) -> bool:
        """Whether the message's arrays stack with the others' (counted and dropped if not)."""
        obs, features = message.arrays[0], message.arrays[-1]
        if (obs.shape, obs.dtype) == self.obs_layout and features.shape == self.features_shape:
            return True
        self.count_error(
            ErrorCode.WRONG_SHAPE,
            detail=f"observation {obs.dtype} {list(obs.shape)}, features {list(features.shape)}",
            seq=message.seq,
            source="internal",
        )
        return False

    def decide(self, batch: list[frames.Internal]) -> None:
        # Both stacks copy out of the frames: the student gets writable float32 rows.
        features = np.stack([m.arrays[-1] for m in batch]).astype(np.float32, copy=False)
        try:
            proposal = self.decider.propose(
                features,
                np.stack([m.arrays[0] for m in batch]),
                [m.policy for m in batch],
                peers=[m.route for m in batch],  # one connection, one peer: its share of labels
            )
        except PluginFailure as failure:
            for message in batch:
                self.plugin_failed(failure, self.returns, message.route, message.seq)
            return
        self.gauges["student_latency_us"] = proposal.student_latency_us
        if not len(proposal.acting):
            self.finish(batch, features, self.decider.complete(proposal, None))
            return
        now = time.monotonic()
        if self.teacher_available:
            request_id = self.ask_teacher(proposal)
            self.parked[request_id] = Parked(now + self.teacher_timeout_ms / 1000, batch, features, proposal)
            return
        # Not waited for: the student answers now. A request at most every TEACHER_PROBE_INTERVAL_S
        # probes the teacher; any answer makes it available again.
        if now >= self.next_probe_at:
            self.ask_teacher(proposal)
            self.next_probe_at = now + TEACHER_PROBE_INTERVAL_S
        self.counters["teacher_unavailable"] += len(proposal.acting)
        self.finish(batch, features, self.decider.complete(proposal, None))

    def ask_teacher(self, proposal: Proposal) -> int:
        """Send the teacher a ``teach`` request for the proposal's acting rows; its request id."""
        request_id = next(self.request_ids)
        self.send(
            self.teacher, protocol.encode("teach", request_id=request_id, obs=proposal.acting_observations()), "teach"
        )
        return request_id

    def on_taught(self, data: bytes) -> None:
        reply = self.decode(data, frozenset({"taught"}))
        if reply is None:
            return
        if not self.teacher_available:
            self.teacher_available = True
            self.gauges["teacher_available"] = True
            self.log.info("teacher_available")
        parked = self.parked.pop(reply["request_id"], None)
        if parked is not None:  # else answered after its deadline, or a probe
            self.finish(parked.batch, parked.features, self.decider.complete(parked.proposal, reply["outputs"]))

    def tick(self) -> None:
        now = time.monotonic()
        while self.parked:
            request_id, parked = next(iter(self.parked.items()))  # parked in deadline order
            if parked.deadline > now:
                break
            del self.parked[request_id]
            self.counters["teacher_timeouts"] += 1
            if self.teacher_available:
                # Marked once: until it answers again, batches are not held for it.
                self.teacher_available = False
                self.gauges["teacher_available"] = False
                self.log.warning("teacher_unavailable", timeout_ms=self.teacher_timeout_ms)
            self.finish(parked.batch, parked.features, self.decider.complete(parked.proposal, None))

    def poll_timeout_ms(self) -> int:
        if not self.parked:
            return super().poll_timeout_ms()
        first = next(iter(self.parked.values()))
        return max(0, math.ceil((first.deadline - time.monotonic()) * 1000))

    def teardown(self) -> None:
        # Stopping: parked observations are answered by the student rather than left unanswered.
        for parked in self.parked.values():
            self.finish(parked.batch, parked.features, self.decider.complete(parked.proposal, None))
        self.parked.clear()

    def finish(self, batch: list[frames.Internal], features: np.ndarray, decisions: Decisions) -> None:
        """Send each observation's decision on to execution, and its label request to the distiller."""
        self.counters["student_not_finite"] += decisions.not_finite
        self.counters["labels_over_peer_share"] += decisions.over_share
        self.counters["decided_by_teacher"] += int((decisions.decided_by == "teacher").sum())
        for index, message in enumerate(batch):
            if not decisions.acted(index):  # the teacher could not stand in either
                self.reply_error(
                    self.returns,
                    message.route,
                    ErrorCode.UNAVAILABLE,
                    "the student produced a non-finite output and the teacher did not answer",
                    message.seq,
                )
                continue
            self.send(
                self.to_execution,
                frames.decided(
                    message.route,
                    message.seq,
                    decisions.actions[index],
                    decisions.decided_by[index],
                    decisions.student_version,
                    message.new_episode,
                ),
                "decided",
            )
            if decisions.label[index]:
                self.counters["labels_requested"] += 1
                self.send(
                    self.to_distiller,
                    protocol.encode(
                        "sample",
                        obs=message.arrays[0],
                        features=features[index],
                        teacher_output=decisions.teacher_outputs[index],
                    ),
                    "sample",
                )
        self.counters["decisions"] += len(batch)
        self.counters["batches"] += 1


@dataclass
class Parked:
    """A batch waiting for the teacher to act, until ``deadline``."""

    deadline: float
    batch: list[frames.Internal]
    features: np.ndarray
    proposal: Proposal
