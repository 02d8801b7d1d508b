"""The edge mode of the peer SDK: the peer runs the student itself, and the runtime keeps teaching it.

    edge = EdgePeer("tcp://127.0.0.1:7411", observation_space, action_space, name="robot-7")
    edge.connect()                      # a session, then the serving student (docs/protocol.md, Edge mode)
    action = edge.act(obs)              # decided here, by the local student: no round trip
    edge.close()

Each ``act`` first takes whatever the runtime pushed (a newly promoted version is swapped in
between two decisions), then runs the student on the observation, and sends the runtime the
observations the local query policy (``EdgeQuery``: uncertainty and a budget) wants labelled, plus
a share of the others (``transitions``) for the runtime's own query policy, so the distiller goes
on learning from what the peer really sees. Sends never wait: a full queue drops a label.

Needs numpy and pyzmq (and msgpack); ``format="onnx"`` needs onnxruntime. Never torch.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import zmq

from runtime.errors import PeerError, PeerTimeout
from runtime.peer.sdk import Peer, refused
from runtime.wire import protocol
from runtime.wire.keys import ClientKeys
from runtime.wire.layout import Actions, LayoutStudent
from runtime.wire.protocol import ErrorCode

#: How many recent per-decision latencies an EdgePeer keeps (for percentiles).
LATENCY_WINDOW = 100_000


class LocalStudent(Protocol):
    """What an edge peer acts with: the runtime's student in a torch-free form."""

    version: int
    metadata: dict[str, Any]
    action: Actions

    def outputs(self, observations: np.ndarray) -> np.ndarray: ...


class OnnxStudent:
    """A student exported as ONNX, run with onnxruntime."""

    def __init__(self, model: bytes, metadata: dict[str, Any]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # one observation at a time
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(metadata["input_shape"]) if "input_shape" in metadata else None
        self.metadata = metadata
        self.version = int(metadata["version"])
        self.action = Actions(metadata["action_space"])

    def outputs(self, observations: np.ndarray) -> np.ndarray:
        (outputs,) = self.session.run(None, {self.input_name: np.asarray(observations, dtype=np.float32)})
        return np.asarray(outputs)


def student_from_message(message: protocol.Message) -> LocalStudent:
    """The local student a ``student`` message holds. ValueError if it does not hold one."""
    metadata = dict(message["metadata"])
    metadata["version"] = message["version"]
    if message["format"] == protocol.EDGE_LAYOUT:
        tensors = message.get("tensors")
        if not isinstance(tensors, dict):
            raise ValueError("a safetensors+json student message needs its tensors")
        return LayoutStudent({name: protocol.decode_array(a, name) for name, a in tensors.items()}, metadata)
    if message["format"] == protocol.EDGE_ONNX and isinstance(message.get("model"), bytes):
        return OnnxStudent(message["model"], metadata)
    raise ValueError(f"a student message in format {message['format']!r} without what that format needs")


@dataclass
class EdgeQuery:
    """Which observations an edge peer asks the teacher to label: those where the student is unsure
    (for a discrete action: its two most probable actions are within ``margin`` of each other), and
    a ``share`` of the others at random (a box action has no uncertainty here: the share alone);
    within a budget of ``per_second`` labels (a token bucket holding up to one second's worth) and
    ``per_episode`` per episode, so a fast control loop cannot flood the teacher."""

    margin: float = 0.3
    share: float = 0.02
    per_second: float = 50.0
    per_episode: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.tokens, self.refilled = self.per_second, time.monotonic()

    def wants(self, outputs: np.ndarray, discrete: bool, labelled_this_episode: int) -> bool:
        now = time.monotonic()
        self.tokens = min(self.per_second, self.tokens + (now - self.refilled) * self.per_second)
        self.refilled = now
        if labelled_this_episode >= self.per_episode or self.tokens < 1:
            return False
        if self._wanted(outputs, discrete):
            self.tokens -= 1
            return True
        return False

    def _wanted(self, outputs: np.ndarray, discrete: bool) -> bool:
        if discrete and len(outputs) > 1:
            # Plain floats: for a handful of logits, several times faster than numpy's calls.
            logits = sorted(outputs.tolist())
            top = logits[-1]
            exps = [math.exp(x - top) for x in logits]
            if (exps[-1] - exps[-2]) / sum(exps) < self.margin:
                return True
        return self.random.random() < self.share


@dataclass
class EdgeStats:
    """What an edge peer did: labels sent, versions acted with, latencies."""

    decisions: int = 0
    labels_sent: int = 0  # asked with policy "teacher"
    transitions_sent: int = 0  # sent with policy "auto"
    labels_dropped: int = 0  # the send queue was full
    answers: int = 0  # replies to labels (the runtime's action for them), read and dropped
    label_errors: int = 0  # labels the runtime refused
    versions: list[int] = field(default_factory=list)  # each version swapped in, in order
    promotion_to_edge_s: list[float] = field(default_factory=list)  # announced by the runtime -> swapped in here
    decision_us: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


class EdgePeer:
    """A peer that acts with its own copy of the student (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        observation_space: Any,
        action_space: Any,
        name: str = "",
        format: str = protocol.EDGE_LAYOUT,
        query: EdgeQuery | None = None,
        transitions: float = 0.0,
        curve: ClientKeys | None = None,
        timeout_s: float = 30.0,
        max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES,
        seed: int = 0,
    ) -> None:
        """``format``: ``"safetensors+json"`` (numpy) or ``"onnx"`` (onnxruntime); ``query``: the
        local query policy (None: ask for no labels, the student only acts); ``transitions``: the
        share of other observations sent with policy "auto"."""
        if format not in protocol.EDGE_FORMATS:
            raise ValueError(f"format {format!r} is not one of {', '.join(protocol.EDGE_FORMATS)}")
        self.peer = Peer(
            endpoint,
            observation_space,
            action_space,
            name=name,
            timeout_s=timeout_s,
            curve=curve,
            max_message_bytes=max_message_bytes,
        )
        self.format = format
        self.query = query
        self.transitions = transitions
        self.random = random.Random(seed)
        self.student: LocalStudent | None = None
        self.stats = EdgeStats()
        self.seq = 0
        self.labelled_this_episode = 0
        self.heartbeat_every_s = 1.0
        self.last_sent = 0.0

    @property
    def version(self) -> int:
        """The version the next decision is taken with (-1 before the first student arrived)."""
        return self.student.version if self.student is not None else -1

    def connect(self, wait_s: float | None = None) -> dict[str, Any]:
        """Open a session and wait until the runtime sent the serving student (``wait_s``: None, forever)."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        welcome = self.peer.connect(wait_s)
        # Well within the runtime's timeout: a peer that needs no labels still keeps its session.
        self.heartbeat_every_s = welcome["peer_timeout_ms"] / 3000
        self._send(protocol.encode("student_request", format=self.format))
        while self.student is None:
            remaining = self.peer.resend_s if deadline is None else min(self.peer.resend_s, deadline - time.monotonic())
            if remaining <= 0:
                raise PeerTimeout(f"the runtime at {self.peer.endpoint} sent no student within {wait_s:g} s")
            self._take(self.peer._receive(remaining))
        return welcome

    def _send(self, payload: bytes) -> bool:
        try:
            self.peer._connected.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            return False
        self.last_sent = time.monotonic()
        return True

    def _take(self, message: protocol.Message | None) -> None:
        if message is None:
            return
        if message.kind == "student":
            try:
                student = student_from_message(message)
            except (ValueError, KeyError, TypeError) as exc:
                raise PeerError(
                    ErrorCode.INVALID_FIELD, f"the runtime sent a student this peer cannot run: {exc}"
                ) from None
            announced_at = message.get("announced_at")
            if announced_at is not None and self.student is not None:
                self.stats.promotion_to_edge_s.append(time.time() - announced_at)
            self.student = student
            self.stats.versions.append(student.version)
        elif message.kind == "action":
            self.stats.answers += 1
        elif message.kind == "error":
            if message["code"] == ErrorCode.NOT_ATTACHED:  # the runtime restarted: a new session, the student again
                self.student = None
                self.connect(self.peer.timeout_s)
            elif message["seq"] is not None:
                self.stats.label_errors += 1
            else:
                raise refused(message)

    def poll(self) -> None:
        """Take what the runtime sent (a new student, answers), without waiting; keep the session alive."""
        while (message := self.peer._receive(0)) is not None:
            self._take(message)
        if time.monotonic() - self.last_sent > self.heartbeat_every_s:
            self._send(protocol.encode("heartbeat"))

    def act(self, obs: np.ndarray, reward: float | None = None, episode_start: bool = False) -> Any:
        """The local student's action for ``obs``; labels and transitions go to the runtime as the
        query policy and ``transitions`` say. ``episode_start`` on the first observation after a reset."""
        self.poll()
        if self.student is None:
            raise RuntimeError("this edge peer has no student: call connect() first")
        if episode_start:
            self.labelled_this_episode = 0
        started = time.perf_counter()
        outputs = self.student.outputs(obs[None])[0]
        action = self.student.action(outputs)
        self.stats.decision_us.append((time.perf_counter() - started) * 1e6)
        self.stats.decisions += 1
        if self.query is not None and self.query.wants(
            outputs, self.student.action.discrete, self.labelled_this_episode
        ):
            self._label(obs, reward, episode_start, "teacher")
            self.labelled_this_episode += 1
        elif self.transitions and self.random.random() < self.transitions:
            self._label(obs, reward, episode_start, "auto")
        return action

    def _label(self, obs: np.ndarray, reward: float | None, episode_start: bool, policy: str) -> None:
        self.seq += 1
        fields: dict[str, Any] = {"seq": self.seq, "obs": np.asarray(obs), "episode_start": episode_start}
        if reward is not None:
            fields["reward"] = float(reward)
        if not self._send(protocol.encode("label", policy=policy, **fields)):
            self.stats.labels_dropped += 1
        elif policy == "teacher":
            self.stats.labels_sent += 1
        else:
            self.stats.transitions_sent += 1

    def close(self, reason: str = "done") -> None:
        self.peer.close(reason)

    def __enter__(self) -> EdgePeer:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
