"""Gateway: the peer-facing ROUTER. Validates every peer message, keeps sessions, routes replies back.

Peer message handling lives here: decode → session check → observation check → forward to
perception. Replies (actions, errors from later roles) come back on the return PULL socket.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from runtime.config import peer_security
from runtime.errors import CheckpointError, ConfigError, ExportError, ProtocolError
from runtime.learn import registry
from runtime.learn.export import Exporter
from runtime.roles.base import DRAIN_LIMIT, Role
from runtime.wire import frames, protocol, spaces, transport
from runtime.wire.protocol import ErrorCode

POLICIES = frozenset({"auto", "student", "teacher"})
#: A ``label``'s policies: "teacher" labels it (within ``protocol.edge_label_budget``), "auto" leaves
#: it to the query policy.
LABEL_POLICIES = frozenset({"auto", "teacher"})
# A poll turn handles at most this many hellos; the rest wait for the next turn, after the replies
# that came back meanwhile went out: a burst of hellos must not hold up attached peers' actions.
HELLOS_PER_TURN = 8


@dataclass
class Session:
    peer_id: str
    peer_name: str
    last_seen: float
    observed: int = 0
    forced_teacher: int = 0  # observations it sent with policy "teacher" that were honoured
    labelled: int = 0  # edge labels it sent with policy "teacher" that were honoured


class Gateway(Role):
    name = "gateway"

    def setup(self) -> None:
        endpoint = self.settings.daemon.peer_endpoint
        security = peer_security(self.settings)
        curve_secret = None
        if security == "curve":
            keys = self.settings.security.keys()
            curve_secret = keys.server_secret()
            self.transport.authenticate(keys)
        elif security == "insecure":
            self.log.warning("peer_endpoint_insecure", endpoint=endpoint)
        try:
            self.peers = self.transport.bind(
                zmq.ROUTER,
                endpoint,
                stall_timeout_ms=int(self.settings.protocol.stall_timeout_s * 1000),
                curve_secret=curve_secret,
            )
        except zmq.ZMQError as exc:
            # A port in use or a malformed endpoint: no restart can help, so the daemon stops and says why.
            raise ConfigError(f"cannot bind daemon.peer_endpoint {endpoint!r}: {exc.strerror}") from None
        self.peers.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished peer raises, so it is counted
        self.to_perception = self.transport.connect(zmq.PUSH, self.transport.internal(transport.PERCEPTION_IN))
        self.returns = self.transport.bind(zmq.PULL, self.transport.internal(transport.GATEWAY_RETURN))
        self.monitor = self.transport.monitor(self.peers, transport.HANDSHAKE_FAILURES)
        self.weights = self.transport.connect(zmq.SUB, self.transport.internal(transport.WEIGHTS))
        self.weights.setsockopt(zmq.SUBSCRIBE, b"")
        self.on(self.weights, self.on_weights)
        self.on(self.peers, self.on_peer_message)
        self.on(self.returns, self.on_return)
        self.on(self.monitor, self.on_transport_event)
        self.sessions: dict[bytes, Session] = {}
        self.peer_numbers = itertools.count(1)
        self.peer_timeout = self.settings.protocol.peer_timeout_s
        self.max_sessions = self.settings.protocol.max_sessions
        self.out_of_bounds = self.settings.protocol.out_of_bounds
        self.forced_teacher_budget = self.settings.protocol.forced_teacher_budget
        self.teacher_peers = frozenset(self.settings.protocol.teacher_peers)
        self.matchers = [
            spaces.Matcher(space, what, self.max_message_bytes, self.settings.protocol.space_cache_entries)
            for what, space in (("observation_space", self.observation_space), ("action_space", self.action_space))
        ]
        self.agent_spaces = {
            "observation_space": spaces.to_wire(self.observation_space),
            "action_space": spaces.to_wire(self.action_space),
        }
        self.student_version = registry.serving_version(self.settings.daemon.run_dir)
        # The edge mode: peers running the student themselves, by route, with the format each asked for.
        self.edge_label_budget = self.settings.protocol.edge_label_budget
        self.edge_peers: dict[bytes, str] = {}
        self.exporter: Exporter | None = None  # built when the first edge peer asks: it imports torch
        self.student_path: str | None = None  # the serving version's checkpoint, when a weights message named it
        self.announced_at: float | None = None
        self.student_messages: dict[str, bytes] = {}  # the serving version's `student` message, by format
        self.next_sweep = 0.0
        self.gauges.update(
            peers_connected=0, peer_endpoint=self.peers.getsockopt_string(zmq.LAST_ENDPOINT), peer_security=security
        )

    # --- peers -----------------------------------------------------------------------------------
    def on_peer_message(self, sock: zmq.Socket) -> None:
        hellos = 0
        for _ in range(DRAIN_LIMIT):
            if hellos >= HELLOS_PER_TURN:
                return
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            route, payload = frames[0], frames[-1]
            session = self.sessions.get(route)
            if session is not None:  # any message, a refused one too, shows the peer is there
                session.last_seen = time.monotonic()
            if len(frames) != 2:
                self.reject(
                    route,
                    ProtocolError(
                        ErrorCode.MALFORMED_MESSAGE, f"expected one frame per message, got {len(frames) - 1}"
                    ),
                )
                continue
            try:
                message = protocol.decode(payload, self.max_message_bytes, accept=protocol.FROM_PEER)
                hellos += message.kind == "hello"
                self.handle_peer(route, message)
            except ProtocolError as exc:
                if exc.kind in protocol.UNANSWERED:  # refused, counted, but bye and error get no reply
                    self.count_error(exc.code, detail=exc.message, seq=exc.seq)
                else:
                    self.reject(route, exc)
            except Exception as exc:  # a bug must cost one request, not every peer's session
                self.log.exception("peer_message_failed")
                self.reject(route, ProtocolError(ErrorCode.INTERNAL_ERROR, f"internal error: {type(exc).__name__}"))

    def handle_peer(self, route: bytes, message: protocol.Message) -> None:
        session = self.sessions.get(route)
        if message.kind == "hello":
            self.on_hello(route, message)
        elif message.kind == "describe":  # before a hello too: how a peer learns the spaces to say it with
            self.counters["describes"] += 1
            self.to_peer(
                route,
                protocol.encode("description", protocol_version=protocol.PROTOCOL_VERSION, **self.agent_fields()),
                "description",
            )
        elif session is None:
            if message.kind not in protocol.UNANSWERED:
                raise ProtocolError(ErrorCode.NOT_ATTACHED, "no session: send hello first", message.get("seq"))
        elif message.kind == "observation":
            self.on_observation(route, session, message)
        elif message.kind == "label":
            self.on_observation(route, session, message, label=True)
        elif message.kind == "student_request":
            self.on_student_request(route, message)
        elif message.kind == "heartbeat":
            self.to_peer(route, protocol.encode("heartbeat"), "heartbeat")
        elif message.kind == "bye":
            self.detach(route, "bye")
        elif message.kind == "error":
            self.counters["peer_reported_errors"] += 1
            self.log.warning(
                "peer_reported_error",
                peer_id=session.peer_id,
                code=message["code"],
                detail=protocol.quote(message["message"]),
            )

    def on_hello(self, route: bytes, message: protocol.Message) -> None:
        peer_name = message.get("peer_name", "")
        if len(peer_name) > protocol.MAX_PEER_NAME_CHARS:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"hello: peer_name has {len(peer_name)} characters; at most {protocol.MAX_PEER_NAME_CHARS}",
            )
        # Canonical encodings, never the peer's spaces themselves: a hello declaring a million-element
        # box costs microseconds (docs/protocol.md, Spaces).
        try:
            differences = [(matcher, matcher.difference(message[matcher.what])) for matcher in self.matchers]
        except (ValueError, TypeError, ProtocolError) as exc:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"hello: {exc}") from None
        for matcher, differs in differences:
            if differs is not None:
                raise ProtocolError(
                    ErrorCode.SPACE_MISMATCH,
                    f"{matcher.what.removesuffix('_space')} space does not match the agent's "
                    f"{spaces.describe(matcher.ours)}: {differs}",
                )
        if route in self.sessions:
            self.detach(route, "rehello")
        elif len(self.sessions) >= self.max_sessions:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                f"the runtime serves its maximum of {self.max_sessions} sessions; try again later",
            )
        session = Session(f"peer-{next(self.peer_numbers)}-{uuid.uuid4().hex[:8]}", peer_name, time.monotonic())
        self.sessions[route] = session
        self.gauges["peers_connected"] = len(self.sessions)
        self.counters["peers_attached"] += 1
        welcome = protocol.encode("welcome", peer_id=session.peer_id, **self.agent_fields())
        self.to_peer(route, welcome, "welcome")
        self.log.info("peer_attached", peer_id=session.peer_id, peer_name=session.peer_name)
        self.plugins.notify(
            "agentrt_peer_attached",
            peer_id=session.peer_id,
            peer_name=session.peer_name,
            observation_space=self.observation_space,  # the peer's: it matches
            action_space=self.action_space,
        )

    def agent_fields(self) -> dict[str, object]:
        """The fields of a welcome and a description that describe the agent (``protocol._AGENT_FIELDS``)."""
        return {
            **self.agent_spaces,
            "student_version": self.student_version,
            "max_message_bytes": self.max_message_bytes,
            "peer_timeout_ms": int(self.peer_timeout * 1000),
        }

    def on_observation(self, route: bytes, session: Session, message: protocol.Message, label: bool = False) -> None:
        """An ``observation``, or with ``label`` an edge peer's ``label``: the same path through the
        pipeline (a label is answered by the action the runtime would have taken, which the peer may
        ignore), a policy of its own and its own budget."""
        seq = message["seq"]
        obs = spaces.check_observation(message["obs"], self.observation_space, seq, self.out_of_bounds)
        policy = message.get("policy", "teacher" if label else "auto")
        allowed = LABEL_POLICIES if label else POLICIES
        if policy not in allowed:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"{message.kind}: policy {protocol.quote(policy)} is not one of {', '.join(sorted(allowed))}",
                seq,
            )
        # The teacher costs: a peer may force it only within its budget, unless configured as trusted.
        forced_teacher = policy == "teacher" and session.peer_name not in self.teacher_peers
        used, budget = (
            (session.labelled, self.edge_label_budget)
            if label
            else (session.forced_teacher, self.forced_teacher_budget)
        )
        if forced_teacher and used >= budget:
            policy, forced_teacher = "auto", False  # the query policy decides; the reply's decided_by says who
            self.counters["edge_labels_denied" if label else "forced_teacher_denied"] += 1
        episode_start = bool(message.get("episode_start")) or session.observed == 0
        observed = frames.observed(route, seq, obs, policy, episode_start)
        if not self.send(self.to_perception, observed, "observation"):
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the runtime is overloaded; observation dropped", seq)
        # Counted once accepted, so a dropped first observation still starts the episode next time.
        session.observed += 1
        if label:
            session.labelled += forced_teacher
            self.counters["edge_labels"] += 1
        else:
            session.forced_teacher += forced_teacher
        self.counters["observations"] += 1
        self.counters["episodes"] += episode_start

    # --- the edge mode ---------------------------------------------------------------------------
    def on_student_request(self, route: bytes, message: protocol.Message) -> None:
        fmt = message["format"]
        if fmt not in protocol.EDGE_FORMATS:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"student_request: format {protocol.quote(fmt)} is not one of {', '.join(protocol.EDGE_FORMATS)}",
            )
        payload = self.student_message(fmt)
        self.edge_peers[route] = fmt
        self.gauges["edge_peers"] = len(self.edge_peers)
        self.to_peer(route, payload, "student")
        self.counters["students_sent"] += 1

    def student_message(self, fmt: str) -> bytes:
        """The serving version's ``student`` message as ``fmt``, made once per version; the
        ProtocolError to send back when it cannot be made or is too large for a peer to take."""
        payload = self.student_messages.get(fmt)
        if payload is None:
            try:
                if self.exporter is None:
                    self.exporter = Exporter(self.settings, self.plugins)
                path = self.student_path or str(
                    Path(self.settings.daemon.run_dir) / registry.checkpoint_path(self.student_version)
                )
                payload = self.exporter.student_message(fmt, self.student_version, path, self.announced_at)
            except (ExportError, CheckpointError, RuntimeError, ValueError) as exc:
                self.log.warning("student_not_exported", version=self.student_version, format=fmt, error=str(exc))
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"student_request: {exc}") from None
            if len(payload) > self.max_message_bytes:
                raise ProtocolError(
                    ErrorCode.UNAVAILABLE,
                    f"student_request: the student as {fmt} is {len(payload)} bytes, over the "
                    f"{self.max_message_bytes}-byte limit (protocol.max_message_bytes)",
                )
            self.student_messages[fmt] = payload
        return payload

    def push_student(self) -> None:
        """Send every edge peer the version that serves now."""
        for route, fmt in list(self.edge_peers.items()):
            try:
                payload = self.student_message(fmt)
            except ProtocolError as exc:
                self.reject(route, exc)
                continue
            if self.to_peer(route, payload, "student"):
                self.counters["students_pushed"] += 1

    def detach(self, route: bytes, reason: str) -> None:
        session = self.sessions.pop(route)
        if self.edge_peers.pop(route, None) is not None:
            self.gauges["edge_peers"] = len(self.edge_peers)
        self.gauges["peers_connected"] = len(self.sessions)
        self.counters["peers_detached"] += 1
        self.log.info("peer_detached", peer_id=session.peer_id, reason=reason)
        self.plugins.notify("agentrt_peer_detached", peer_id=session.peer_id, reason=reason)

    def reject(self, route: bytes, error: ProtocolError) -> None:
        session = self.sessions.get(route)
        self.count_error(error.code, detail=error.message, seq=error.seq, peer_id=session.peer_id if session else None)
        self.to_peer(route, protocol.error_message(error.code, error.message, error.seq), "error")

    def to_peer(self, route: bytes | zmq.Frame, payload: bytes | zmq.Frame, what: str) -> bool:
        try:
            self.peers.send_multipart([route, payload], zmq.NOBLOCK)
            return True
        except zmq.ZMQError:  # EHOSTUNREACH (peer gone) or EAGAIN (peer not reading): count, move on
            self.counters[f"undeliverable.{what}"] += 1
            return False

    # --- replies from the pipeline ---------------------------------------------------------------
    def on_return(self, sock: zmq.Socket) -> None:
        self.drain(sock, self.handle_return, multipart=True)

    def handle_return(self, parts: list[zmq.Frame]) -> None:
        """A finished peer message from the pipeline, sent on as it came: never decoded here."""
        try:
            route, kind, payload = frames.decode_return(parts)
        except ProtocolError as exc:
            self.count_error(exc.code, detail=exc.message, source="internal")
            return
        if self.to_peer(route, payload, kind):
            self.counters[f"{kind}s_sent"] += 1

    def on_transport_event(self, sock: zmq.Socket) -> None:
        event = recv_monitor_message(sock)
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # a CURVE key the authorized directory lacks
            self.counters["peers_refused_key"] += 1
            self.log_repeated("refused_key", "warning", "peer_key_refused")
            return
        # not event=...: structlog takes the log message as its first argument, named "event"
        self.count_error(
            ErrorCode.MALFORMED_MESSAGE, detail="transport handshake failed", transport_event=int(event["event"])
        )
        self.counters["handshake_failures"] += 1

    def on_weights(self, sock: zmq.Socket) -> None:
        self.drain(sock, self.handle_weights)

    def handle_weights(self, data: bytes) -> None:
        weights = self.decode(data, frozenset({"weights"}))
        if weights is not None and weights["version"] != self.student_version:
            self.student_version, self.student_path = weights["version"], weights["path"]
            self.announced_at = weights.get("announced_at")
            self.student_messages.clear()
            self.push_student()

    def teardown(self) -> None:
        for route in list(self.sessions):  # plugins hear of every session's end, this one's too
            self.detach(route, "shutdown")

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + 1.0
        for route in [r for r, s in self.sessions.items() if now - s.last_seen > self.peer_timeout]:
            self.detach(route, "timeout")
