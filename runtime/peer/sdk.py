"""Peer SDK: attach a robot or simulator to an agentrt runtime. Needs only pyzmq, msgpack and numpy.

    peer = Peer("tcp://127.0.0.1:7411", observation_space, action_space, name="robot-7")
    peer.connect()                      # waits for the runtime if it is not up yet
    action = peer.act(obs).action       # one observation in, one action out
    peer.close()

A peer that does not know the agent's spaces asks first, without a session:

    agent = Peer.describe("tcp://127.0.0.1:7411")
    peer = Peer("tcp://127.0.0.1:7411", agent["observation_space"], agent["action_space"])

Spaces are given in the wire form of docs/protocol.md, or as Gymnasium spaces when gymnasium is
installed. ``act`` resends an unanswered observation every ``resend_s`` and reconnects (new
socket, new hello) after ``reconnect_after`` silent resends, so a restarting runtime costs the
control loop a delay, not an exception.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from runtime.errors import PeerError, PeerTimeout, ProtocolError
from runtime.wire import protocol
from runtime.wire.keys import ClientKeys
from runtime.wire.protocol import ErrorCode


def refused(error: protocol.Message) -> PeerError:
    """The runtime's ``error`` message as an exception whose text names the code."""
    code = error["code"]
    try:
        name = ErrorCode(code).name
    except ValueError:
        name = "UNKNOWN_ERROR"
    return PeerError(code, f"{name} ({code}): {error['message']}", error.get("seq"))


@dataclass(frozen=True)
class Action:
    action: np.ndarray
    seq: int
    student_version: int
    decided_by: str


def space_to_wire(space: Any) -> dict[str, Any]:
    if isinstance(space, Mapping):
        return dict(space)
    from runtime.wire.spaces import to_wire  # needs gymnasium, only when Gymnasium spaces are passed

    return to_wire(space)


class Peer:
    def __init__(
        self,
        endpoint: str,
        observation_space: Any,
        action_space: Any,
        name: str = "",
        timeout_s: float = 30.0,
        resend_s: float = 0.5,
        reconnect_after: int = 4,
        max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES,
        curve: ClientKeys | None = None,
    ) -> None:
        """``curve``: the runtime's public key and this peer's key pair, for an endpoint that requires
        CURVE (``ClientKeys.from_files("server.key", "robot.key_secret")``)."""
        self.endpoint = endpoint
        self.curve = curve
        self.name = name
        self.spaces = {
            "observation_space": space_to_wire(observation_space),
            "action_space": space_to_wire(action_space),
        }
        self.timeout_s = timeout_s
        self.resend_s = resend_s
        self.reconnect_after = reconnect_after
        self.max_message_bytes = max_message_bytes
        self.context = zmq.Context()
        self.socket: zmq.Socket[Any] | None = None
        self.peer_id: str | None = None
        self.welcome: dict[str, Any] = {}
        self.seq = 0
        self.pending: bytes | None = None
        self.reconnects = 0
        self.resends = 0

    # --- before a session --------------------------------------------------------------------------
    @staticmethod
    def describe(
        endpoint: str,
        wait_s: float | None = 30.0,
        resend_s: float = 0.5,
        max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> dict[str, Any]:
        """The agent's ``description`` (docs/protocol.md): ``protocol_version``, its
        ``observation_space`` and ``action_space`` in wire form (bounds included, ready to pass to
        ``Peer``), ``student_version``, ``max_message_bytes`` and ``peer_timeout_ms``. Opens no
        session. Asks again every ``resend_s`` until ``wait_s`` (None: forever) has passed."""
        asking = Peer(endpoint, {}, {}, resend_s=resend_s, max_message_bytes=max_message_bytes)
        deadline = None if wait_s is None else time.monotonic() + wait_s
        try:
            while True:
                # A new socket each time, as connect does: a runtime not up yet never saw the last one.
                asking._new_socket().send(protocol.encode("describe"))
                remaining = resend_s if deadline is None else min(resend_s, deadline - time.monotonic())
                message = asking._receive(max(remaining, 0.0))
                if message is not None and message.kind == "description":
                    return message.fields
                if message is not None and message.kind == "error":
                    raise refused(message)
                if deadline is not None and time.monotonic() >= deadline:
                    raise PeerTimeout(f"no runtime answered at {endpoint} within {wait_s:g} s")
        finally:
            asking.close()

    # --- session ---------------------------------------------------------------------------------
    def connect(self, wait_s: float | None = None) -> dict[str, Any]:
        """Open a session: send hello until welcomed. Waits ``wait_s`` seconds (None: forever)."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            self._new_socket().send(protocol.encode("hello", peer_name=self.name, **self.spaces))
            remaining = self.resend_s if deadline is None else min(self.resend_s, deadline - time.monotonic())
            message = self._receive(max(remaining, 0.0))
            if message is not None and message.kind == "welcome":
                self.peer_id = message["peer_id"]
                self.welcome = message.fields
                return self.welcome
            if message is not None and message.kind == "error":
                raise refused(message)
            if deadline is not None and time.monotonic() >= deadline:
                raise PeerTimeout(f"no runtime answered at {self.endpoint} within {wait_s:g} s")

    def _new_socket(self) -> zmq.Socket[Any]:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.reconnects += 1
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 200)
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.socket_cap(self.max_message_bytes))
        if self.curve is not None:
            self.curve.apply(self.socket)
        self.socket.connect(self.endpoint)
        return self.socket

    @property
    def _connected(self) -> zmq.Socket[Any]:
        if self.socket is None:
            raise RuntimeError("this peer has no session: call connect() first (or use it in a with block)")
        return self.socket

    def _resend(self) -> None:
        if self.pending is not None:
            self._connected.send(self.pending)

    def _receive(self, timeout_s: float) -> protocol.Message | None:
        deadline = time.monotonic() + timeout_s
        while self._connected.poll(int(max(deadline - time.monotonic(), 0.0) * 1000)):
            try:
                return protocol.decode(
                    self._connected.recv(), protocol.socket_cap(self.max_message_bytes), accept=protocol.TO_PEER
                )
            except ProtocolError as exc:
                if exc.code != ErrorCode.UNKNOWN_KIND:
                    raise
                # A newer runtime may send kinds this SDK does not know: skip them.
        return None

    # --- observations ----------------------------------------------------------------------------
    def submit(
        self, obs: np.ndarray, reward: float | None = None, episode_start: bool | None = None, policy: str = "auto"
    ) -> int:
        """Send an observation without waiting; collect its action with ``result``. Returns its seq.

        ``reward`` is the reward for the previous action; ``episode_start`` marks the first
        observation after a reset; ``policy`` "student" or "teacher" forces who decides.
        """
        if self.socket is None:
            self.connect()
        self.seq += 1
        fields: dict[str, Any] = {"seq": self.seq, "obs": np.asarray(obs), "policy": policy}
        if reward is not None:
            fields["reward"] = float(reward)
        if episode_start is not None:
            fields["episode_start"] = bool(episode_start)
        self.pending = protocol.encode("observation", **fields)
        self._resend()
        return self.seq

    def result(self) -> Action:
        """Wait for the action of the last submitted observation, resending and reconnecting as needed."""
        [answer] = results([self])
        return answer

    def _answer(self, message: protocol.Message, deadline: float) -> Action | None:
        """The action if ``message`` answers the last observation; None if it answers an older one
        (a resend's duplicate), or said that the runtime restarted: then the peer has a new session
        and has sent the observation again. Another refusal of it raises."""
        if message.kind == "action" and message["seq"] == self.seq:
            return Action(message["action"], message["seq"], message["student_version"], message["decided_by"])
        if message.kind == "error" and message["seq"] in (self.seq, None):
            if message["code"] != ErrorCode.NOT_ATTACHED:
                raise refused(message)
            self.connect(wait_s=max(deadline - time.monotonic(), 0.0))
            self._resend()
        return None

    def act(self, obs: np.ndarray, **kwargs: Any) -> Action:
        """Send one observation and return its action."""
        self.submit(obs, **kwargs)
        return self.result()

    def heartbeat(self) -> bool:
        """Tell the runtime this peer is alive while idle; True if it answered."""
        self._connected.send(protocol.encode("heartbeat"))
        message = self._receive(self.resend_s)
        return message is not None and message.kind == "heartbeat"

    def close(self, reason: str = "done") -> None:
        if self.socket is not None:
            # Only a peer that was welcomed says bye. Queue full or runtime gone: the session
            # times out on the runtime's side.
            with contextlib.suppress(zmq.Again):
                if self.peer_id is not None:
                    self.socket.send(protocol.encode("bye", reason=reason), zmq.NOBLOCK)
            self.socket.close()
            self.socket = None
        self.context.term()

    def __enter__(self) -> Peer:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def results(peers: Sequence[Peer]) -> list[Action]:
    """The action of every peer's last submitted observation, awaited together: each peer resends
    on its own timer while the others are awaited, so whatever lost a batch of observations (a
    role that restarted) costs the batch one resend interval, not one per peer. A peer reconnects
    after ``reconnect_after`` silent resends. PeerTimeout (a TimeoutError) if a peer has no answer within its
    ``timeout_s``."""
    now = time.monotonic()
    deadlines = [now + peer.timeout_s for peer in peers]
    resend_at = [now + peer.resend_s for peer in peers]
    silent = [0] * len(peers)
    answers: dict[int, Action] = {}
    while len(answers) < len(peers):
        waiting = [i for i in range(len(peers)) if i not in answers]
        poller = zmq.Poller()
        for i in waiting:
            poller.register(peers[i]._connected, zmq.POLLIN)
        next_resend_s = max(min(resend_at[i] for i in waiting) - time.monotonic(), 0.0)
        ready = dict(poller.poll(int(next_resend_s * 1000)))
        for i in waiting:
            peer, now, reconnects = peers[i], time.monotonic(), peers[i].reconnects
            message = peer._receive(0) if peer.socket in ready else None
            if message is not None and (answer := peer._answer(message, deadlines[i])) is not None:
                answers[i] = answer
            elif now >= deadlines[i]:
                raise PeerTimeout(f"no action for observation {peer.seq} within {peer.timeout_s:g} s")
            elif peer.reconnects > reconnects:  # the runtime restarted: sent again in a new session
                resend_at[i] = time.monotonic() + peer.resend_s
            elif message is None and now >= resend_at[i]:
                silent[i] += 1
                if silent[i] >= peer.reconnect_after:
                    peer.connect(wait_s=max(deadlines[i] - now, 0.0))
                    silent[i] = 0
                peer.resends += 1
                peer._resend()
                resend_at[i] = time.monotonic() + peer.resend_s
    return [answers[i] for i in range(len(peers))]
