"""Bad input from peers, against a real daemon (docs/protocol.md, Error codes).

Each refusal must be answered as documented (code and seq), counted in ``status()["errors"]``,
leave the refused peer's session usable, and leave the runtime serving a well-behaved peer with
the same gateway process (no crash, no restart). All tests share one daemon.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gymnasium
import msgpack
import numpy as np
import pytest
import zmq

from runtime.peer import Peer
from runtime.wire import protocol, spaces
from runtime.wire.protocol import ErrorCode

ENV = gymnasium.make("CartPole-v1")
SPACES = {"observation_space": spaces.to_wire(ENV.observation_space), "action_space": spaces.to_wire(ENV.action_space)}
GOOD_OBS = np.array([0.01, -0.02, 0.03, -0.04], dtype=np.float32)
LIMIT = protocol.DEFAULT_MAX_MESSAGE_BYTES  # the daemon runs with the default
SOCKET_CAP = 2 * LIMIT + 4096  # runtime.transport.Transport.socket_limit()
REPLY_S = 30.0  # generous: a reply normally takes milliseconds
STATS_S = 60.0  # stats arrive every 0.1 s


# --- helpers --------------------------------------------------------------------------------------


@contextmanager
def dealer(endpoint: str) -> Iterator[zmq.Socket]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close(linger=0)


def receive(sock: zmq.Socket, timeout_s: float = REPLY_S) -> protocol.Message | None:
    if not sock.poll(timeout_s * 1000):
        return None
    return protocol.decode(sock.recv(), SOCKET_CAP)


def exchange(sock: zmq.Socket, frames: list[bytes]) -> protocol.Message:
    sock.send_multipart(frames)
    reply = receive(sock)
    assert reply is not None, f"no reply within {REPLY_S} s"
    return reply


def attach(sock: zmq.Socket) -> protocol.Message:
    welcome = exchange(sock, [protocol.encode("hello", peer_name="bad-input", **SPACES)])
    assert welcome.kind == "welcome", welcome
    return welcome


def packed(**body) -> bytes:
    """A message built by hand (version 1 unless ``v`` says otherwise), as a foreign peer would."""
    return msgpack.packb({"v": 1, **body}, use_bin_type=True)


def observation(seq: int, obs: np.ndarray = GOOD_OBS, **fields) -> bytes:
    return protocol.encode("observation", seq=seq, obs=obs, **fields)


def padded_observation(seq: int, padding_bytes: int) -> bytes:
    """A valid observation, grown by an unknown field (which the decoder would ignore)."""
    return packed(kind="observation", seq=seq, obs=protocol.encode_array(GOOD_OBS), padding=bytes(padding_bytes))


def hello_with(**space_overrides) -> bytes:
    return protocol.encode("hello", **{**SPACES, **space_overrides})


def error_counts(status: dict) -> Counter:
    return Counter(status["errors"]["by_code"])


def wait_for_counts(daemon, what: str, grown: Callable[[dict], bool]) -> dict:
    """Poll status until ``grown(status)``; stats arrive every 0.1 s."""
    deadline = time.monotonic() + STATS_S
    while True:
        status = daemon.status()
        if grown(status):
            return status
        assert time.monotonic() < deadline, f"{what} did not grow within {STATS_S} s: {status['errors']}"
        time.sleep(0.05)


def wait_for_error_count(daemon, code: ErrorCode, before: dict) -> dict:
    return wait_for_counts(
        daemon, f"errors.by_code.{code.name}", lambda s: error_counts(s)[code.name] > error_counts(before)[code.name]
    )


def assert_serving(daemon, before: dict) -> None:
    """A well-behaved peer still gets actions, from the same gateway process."""
    peer = Peer(daemon.endpoint, ENV.observation_space, ENV.action_space, name="well-behaved", timeout_s=10)
    try:
        peer.connect(wait_s=10)
        answer = peer.act(GOOD_OBS, episode_start=True)
    finally:
        peer.close()
    assert answer.seq == 1 and ENV.action_space.contains(int(answer.action))
    assert answer.decided_by in ("student", "teacher")
    gateway_before, gateway_after = before["roles"]["gateway"], daemon.status()["roles"]["gateway"]
    assert (gateway_after["pid"], gateway_after["restarts"]) == (gateway_before["pid"], gateway_before["restarts"])


# --- one refusal per case -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    frames: Callable[[], list[bytes]]  # built lazily: some are megabytes
    code: ErrorCode
    seq: int | None
    attached: bool = True  # send after a hello (and check the session survives the refusal)


CASES = {
    "malformed-msgpack": Case(lambda: [packed(kind="observation", seq=10)[:-4]], ErrorCode.MALFORMED_MESSAGE, None),
    "not-a-map": Case(lambda: [msgpack.packb([1, "observation", 10])], ErrorCode.MALFORMED_MESSAGE, None),
    "wrong-version": Case(
        lambda: [packed(v=2, kind="observation", seq=11, obs=protocol.encode_array(GOOD_OBS))],
        ErrorCode.UNSUPPORTED_VERSION,
        11,
    ),
    "unknown-kind": Case(lambda: [packed(kind="teleport", seq=12)], ErrorCode.UNKNOWN_KIND, 12),
    "internal-kind": Case(
        lambda: [packed(kind="teach", seq=13, request_id=1, obs=protocol.encode_array(GOOD_OBS))],
        ErrorCode.UNKNOWN_KIND,
        13,
    ),
    "observation-before-hello": Case(lambda: [observation(14)], ErrorCode.NOT_ATTACHED, 14, attached=False),
    "hello-with-mismatched-spaces": Case(
        lambda: [hello_with(observation_space=spaces.to_wire(gymnasium.spaces.Box(-1, 1, (5,), np.float32)))],
        ErrorCode.SPACE_MISMATCH,
        None,
        attached=False,
    ),
    "wrong-shape": Case(lambda: [observation(15, np.zeros(5, np.float32))], ErrorCode.WRONG_SHAPE, 15),
    "wrong-dtype": Case(lambda: [observation(16, GOOD_OBS.astype(np.float64))], ErrorCode.WRONG_DTYPE, 16),
    "nan": Case(lambda: [observation(17, np.array([0, np.nan, 0, 0], np.float32))], ErrorCode.NOT_FINITE, 17),
    "plus-inf": Case(lambda: [observation(18, np.array([0, 0, np.inf, 0], np.float32))], ErrorCode.NOT_FINITE, 18),
    "array-size-mismatch": Case(
        lambda: [packed(kind="observation", seq=19, obs={"dtype": "float32", "shape": [4], "data": bytes(15)})],
        ErrorCode.INVALID_FIELD,
        19,
    ),
    # Dims whose product wraps around 64 bits to the data's size: this used to crash the gateway.
    "overflowing-dims": Case(
        lambda: [packed(kind="observation", seq=20, obs={"dtype": "uint8", "shape": [2**62 + 1, 4], "data": bytes(4)})],
        ErrorCode.INVALID_FIELD,
        20,
    ),
    "unknown-policy": Case(lambda: [observation(21, policy="boss")], ErrorCode.INVALID_FIELD, 21),
    # Spaces that used to crash the gateway (OverflowError) or make it allocate 40 GB of bounds.
    "huge-discrete-space": Case(
        lambda: [hello_with(action_space={"type": "discrete", "n": 2**64 - 1})],
        ErrorCode.INVALID_FIELD,
        None,
        attached=False,
    ),
    "huge-box-space": Case(
        lambda: [hello_with(observation_space={"type": "box", "shape": [100_000, 100_000], "dtype": "float32"})],
        ErrorCode.INVALID_FIELD,
        None,
        attached=False,
    ),
    "oversized": Case(lambda: [padded_observation(22, (LIMIT + SOCKET_CAP) // 2)], ErrorCode.MESSAGE_TOO_LARGE, None),
    "multi-frame": Case(lambda: [observation(23), observation(23)], ErrorCode.MALFORMED_MESSAGE, None),
    "discrete-start-mismatch": Case(
        lambda: [hello_with(action_space={"type": "discrete", "n": 2, "start": 1})],
        ErrorCode.SPACE_MISMATCH,
        None,
        attached=False,
    ),
    "bin-keys": Case(
        lambda: [msgpack.packb({b"v": 1, b"kind": b"observation", b"seq": 25})], ErrorCode.MALFORMED_MESSAGE, None
    ),
    "out-of-bounds": Case(lambda: [observation(26, np.array([1e6, 0, 0, 0], np.float32))], ErrorCode.INVALID_FIELD, 26),
    "megabyte-kind": Case(lambda: [packed(kind="k" * (2**20 - 100), seq=24)], ErrorCode.UNKNOWN_KIND, 24),
    "long-peer-name": Case(
        lambda: [protocol.encode("hello", peer_name="n" * 500_000, **SPACES)],
        ErrorCode.INVALID_FIELD,
        None,
        attached=False,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_message_is_refused_counted_and_survived(shared_daemon, case):
    before = shared_daemon.status()
    with dealer(shared_daemon.endpoint) as sock:
        if case.attached:
            assert attach(sock)["max_message_bytes"] == LIMIT
        reply = exchange(sock, case.frames())
        assert reply.kind == "error", reply
        assert len(reply["message"]) <= 2 * protocol.QUOTE_CHARS + 200, "an error text quotes a bounded excerpt"
        assert (ErrorCode(reply["code"]), reply["seq"]) == (case.code, case.seq), reply["message"]
        if case.attached:  # the refusal was the only reply, and the session is still open
            follow_up = exchange(sock, [observation(100)])
            assert (follow_up.kind, follow_up.get("seq")) == ("action", 100), follow_up
    wait_for_error_count(shared_daemon, case.code, before)
    assert_serving(shared_daemon, before)


def test_a_flood_of_refusals_keeps_replies_and_log_lines_small(run_dir):
    # A daemon of its own: its log is read whole. Refusals log at most one warning per code and second.
    from runtime.testing import start_daemon

    daemon = start_daemon(run_dir=run_dir)
    try:
        before = daemon.status()
        flood = 200
        with dealer(daemon.endpoint) as sock:
            for seq in range(flood):
                reply = exchange(sock, [packed(kind="k" * (2**20 - 100), seq=seq)])
                assert reply["code"] == ErrorCode.UNKNOWN_KIND and len(msgpack.packb(reply.fields)) < 4096
        wait_for_counts(daemon, "UNKNOWN_KIND", lambda s: error_counts(s)["UNKNOWN_KIND"] >= flood)
        assert_serving(daemon, before)
        lines = daemon.log().splitlines()
        assert max(len(line) for line in lines) < 4096
        warnings = [json.loads(line) for line in lines if '"messages_rejected"' in line]
        assert warnings and all(w["error"] == "UNKNOWN_KIND" for w in warnings)
        assert len(warnings) < flood and sum(w["count"] for w in warnings) <= flood
    finally:
        daemon.stop()


# --- refusals without a reply ---------------------------------------------------------------------


def test_message_over_the_socket_cap_drops_the_connection(shared_daemon):
    before = shared_daemon.status()
    with dealer(shared_daemon.endpoint) as sock:
        attach(sock)
        sock.send(padded_observation(30, SOCKET_CAP))
        assert receive(sock, timeout_s=1.0) is None, "ZeroMQ should drop the connection without a reply"
        # The DEALER reconnects by itself, but as a new connection: the session is gone.
        reply = exchange(sock, [observation(31)])
        assert (reply.kind, reply["code"], reply["seq"]) == ("error", ErrorCode.NOT_ATTACHED, 31)
    after = wait_for_error_count(shared_daemon, ErrorCode.NOT_ATTACHED, before)
    # The decoder never saw the message: nothing was counted as too large.
    assert error_counts(after)["MESSAGE_TOO_LARGE"] == error_counts(before)["MESSAGE_TOO_LARGE"]
    assert_serving(shared_daemon, before)


def test_raw_tcp_garbage_is_a_handshake_failure(shared_daemon):
    before = shared_daemon.status()
    host, port = shared_daemon.endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=REPLY_S) as conn:
        greeting = conn.recv(10)
        assert greeting[:1] == b"\xff" and greeting[9:10] == b"\x7f", f"not a ZMTP signature: {greeting.hex()}"
        conn.sendall(random.Random(7).randbytes(256))

    def failures(status: dict) -> int:
        return status["roles"]["gateway"]["counters"].get("handshake_failures", 0)

    after = wait_for_counts(shared_daemon, "handshake_failures", lambda s: failures(s) > failures(before))
    assert error_counts(after)["MALFORMED_MESSAGE"] > error_counts(before)["MALFORMED_MESSAGE"]
    assert_serving(shared_daemon, before)


def test_sessions_beyond_the_maximum_are_unavailable_until_one_leaves(run_dir):
    from runtime.testing import start_daemon

    daemon = start_daemon(run_dir=run_dir, env={"AGENTRT_PROTOCOL_MAX_SESSIONS": "2"})
    try:
        with dealer(daemon.endpoint) as first, dealer(daemon.endpoint) as second, dealer(daemon.endpoint) as third:
            attach(first)
            attach(second)
            refused = exchange(third, [hello_with()])
            assert (refused.kind, refused["code"]) == ("error", ErrorCode.UNAVAILABLE), refused
            assert "maximum of 2 sessions" in refused["message"]
            first.send(protocol.encode("bye", reason="done"))
            # The bye has no reply: the third peer's next hello is welcomed once the gateway read it.
            deadline = time.monotonic() + REPLY_S
            while (reply := exchange(third, [hello_with()])).kind != "welcome":
                assert reply["code"] == ErrorCode.UNAVAILABLE and time.monotonic() < deadline, reply
    finally:
        daemon.stop()


def test_a_connection_stalled_in_its_greeting_is_closed(run_dir):
    from runtime.testing import start_daemon

    daemon = start_daemon(run_dir=run_dir, env={"AGENTRT_PROTOCOL_STALL_TIMEOUT_S": "1"})
    try:
        host, port = daemon.endpoint.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=REPLY_S) as conn:
            assert conn.recv(10)[:1] == b"\xff"  # the runtime's greeting starts
            conn.sendall(b"\xff\x00\x00")  # a third of a ZMTP signature, then nothing
            # The runtime closes the connection (EOF) after its 1 s stall timeout; ZeroMQ's own default
            # would wait 30 s, past this generous deadline, and the recv would time out instead.
            conn.settimeout(15)
            while conn.recv(4096):
                pass
        assert_serving(daemon, daemon.status())
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    "frames, attached",
    [
        ([packed(kind="bye", reason=7)], True),  # a malformed bye
        ([packed(kind="error", code="x", message="m", seq=None)], True),  # a malformed peer error
        ([protocol.encode("error", code=500, message="trouble", seq=None)], False),  # an error without a session
    ],
    ids=["bad-bye", "bad-peer-error", "error-without-session"],
)
def test_bye_and_peer_errors_are_never_answered(shared_daemon, frames, attached):
    before = shared_daemon.status()
    with dealer(shared_daemon.endpoint) as sock:
        if attached:
            attach(sock)
        sock.send_multipart(frames)
        # Nothing comes back for it: the next reply on this connection answers what follows it.
        follow_up = protocol.encode("heartbeat") if attached else hello_with()
        reply = exchange(sock, [follow_up])
        assert reply.kind == ("heartbeat" if attached else "welcome"), reply
    assert_serving(shared_daemon, before)


def test_a_bounds_only_mismatch_names_the_first_bound_that_differs(shared_daemon):
    low = ENV.observation_space.low.copy()
    low[2] = -0.2  # CartPole's is -0.41887903 (24 degrees, in radians)
    shifted = gymnasium.spaces.Box(low, ENV.observation_space.high, dtype=np.float32)
    with dealer(shared_daemon.endpoint) as sock:
        reply = exchange(sock, [hello_with(observation_space=spaces.to_wire(shifted))])
    assert reply["code"] == ErrorCode.SPACE_MISMATCH
    assert reply["message"] == (
        "observation space does not match the agent's box(shape=[4], dtype=float32): "
        "its low[2] is -0.2 where the agent's is -0.41887903 (1 of 8 bounds differ)"
    )


def test_a_burst_of_huge_space_hellos_never_holds_up_a_streaming_peer(shared_daemon):
    """Bursts of 60 hellos, each 127 bytes or so declaring a 1,048,576-element box, while another
    peer streams observations: that peer's actions keep coming between the first and the last
    reply of a burst (the gateway compares canonical encodings, and takes a few hellos per turn)."""
    before = shared_daemon.status()
    events: list[str] = []  # in the order they happen, from both threads
    stop = threading.Event()
    failures: list[BaseException] = []

    def stream() -> None:
        try:
            with Peer(shared_daemon.endpoint, ENV.observation_space, ENV.action_space, timeout_s=REPLY_S) as peer:
                peer.connect(wait_s=REPLY_S)
                while not stop.is_set():
                    peer.act(GOOD_OBS, policy="student")
                    events.append("answer")
        except BaseException as exc:
            failures.append(exc)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    huge = hello_with(observation_space={"type": "box", "shape": [1 << 20], "dtype": "float32"})
    assert len(huge) < 160
    answered_during: list[int] = []
    try:
        deadline = time.monotonic() + REPLY_S
        while "answer" not in events:
            assert not failures and time.monotonic() < deadline, f"the streaming peer got no action: {failures}"
            time.sleep(0.01)
        with dealer(shared_daemon.endpoint) as sock:
            while len(answered_during) < 10 and sum(answered_during) == 0:
                for _ in range(60):
                    sock.send(huge)
                first = last = 0
                for index in range(60):
                    reply = receive(sock)
                    assert reply is not None and reply["code"] == ErrorCode.SPACE_MISMATCH, reply
                    events.append("hello")
                    last = len(events) - 1  # only this thread appends "hello"
                    first = last if index == 0 else first
                answered_during.append(events[first:last].count("answer"))
    finally:
        stop.set()
        streamer.join(REPLY_S)
    assert not failures, failures
    assert sum(answered_during) > 0, f"no action reached the streaming peer during a burst: {answered_during}"
    assert_serving(shared_daemon, before)


def test_a_peer_forces_the_teacher_only_within_its_budget_unless_trusted(run_dir):
    from runtime.testing import start_daemon

    # With the share policy and no labels, the student acts unless the teacher is forced.
    config_text = '[query]\npolicy = "share"\nparams = { share = 0.0 }\n'
    env = {"AGENTRT_PROTOCOL_FORCED_TEACHER_BUDGET": "3", "AGENTRT_PROTOCOL_TEACHER_PEERS": "trusted"}
    daemon = start_daemon(config_text, env=env, run_dir=run_dir)
    try:
        deciders = {}
        for name in ("untrusted", "trusted"):
            with Peer(daemon.endpoint, ENV.observation_space, ENV.action_space, name=name, timeout_s=REPLY_S) as peer:
                deciders[name] = [peer.act(GOOD_OBS, policy="teacher").decided_by for _ in range(5)]
        assert deciders["untrusted"] == ["teacher"] * 3 + ["student"] * 2
        assert deciders["trusted"] == ["teacher"] * 5
        status = daemon.wait_until(
            lambda s: s["roles"]["gateway"]["counters"].get("forced_teacher_denied") == 2, what="the denials counted"
        )
        assert status["errors"]["total"] == 0
    finally:
        daemon.stop()


def test_a_hammering_peer_is_held_to_its_share_of_labels_while_another_is_labelled(run_dir):
    from runtime.testing import start_daemon

    # Every observation would be labelled; the share (default 0.5) must hold the hammering peer
    # back once the quiet one has labels too. The share itself is measured in tests/test_loop.py.
    daemon = start_daemon('[query]\npolicy = "always"\n', run_dir=run_dir)
    try:
        with (
            Peer(daemon.endpoint, ENV.observation_space, ENV.action_space, name="hammer", timeout_s=REPLY_S) as hammer,
            Peer(daemon.endpoint, ENV.observation_space, ENV.action_space, name="quiet", timeout_s=REPLY_S) as quiet,
        ):
            for step in range(200):
                if step % 20 == 0:
                    assert quiet.act(GOOD_OBS).seq == step // 20 + 1
                hammer.act(GOOD_OBS)
        status = daemon.wait_until(
            lambda s: s["roles"]["decision"]["counters"].get("labels_over_peer_share", 0) > 0,
            what="the hammering peer's observations decided without labels",
        )
        counters = status["roles"]["decision"]["counters"]
        assert counters["labels_requested"] >= 10 and status["errors"]["total"] == 0
    finally:
        daemon.stop()


def test_a_poison_peer_never_costs_another_peer_its_teacher(run_dir):
    """Observations inside the declared space but huge enough that the teacher's outputs are not
    finite: the poison peer gets the student's action (or UNAVAILABLE where the student's is not
    finite either), and a peer whose observations share its batches (and the teacher's) still
    gets the teacher every time, with no teacher timeout."""
    from runtime.peer.sdk import PeerError
    from runtime.testing import start_daemon

    poison = np.array([0.0, 3e38, 0.0, -3e38], dtype=np.float32)
    # A teacher timeout far beyond any busy machine's delays: only a missing answer can run into it.
    config_text = '[protocol]\nteacher_peers = ["good", "poison"]\n[teacher]\ntimeout_ms = 10000\n'
    daemon = start_daemon(config_text, run_dir=run_dir)
    rng = np.random.default_rng(6)
    try:
        with (
            Peer(daemon.endpoint, ENV.observation_space, ENV.action_space, name="good", timeout_s=REPLY_S) as good,
            Peer(daemon.endpoint, ENV.observation_space, ENV.action_space, name="poison", timeout_s=REPLY_S) as bad,
        ):
            for _ in range(40):
                # Both in flight at once, as one client's peers are: decision often batches them together.
                good.submit(rng.normal(0, 0.05, 4).astype(np.float32), policy="teacher")
                bad.submit(poison, policy="teacher")
                assert good.result().decided_by == "teacher"
                try:
                    assert bad.result().decided_by == "student"
                except PeerError as refused:
                    assert refused.code == ErrorCode.UNAVAILABLE
        # Both counts in one report: on a busy machine the SDK resends (the same observations again),
        # so one count can reach 40 in a report that predates the other's last increments.
        status = daemon.wait_until(
            lambda s: (
                s["roles"]["teacher"]["counters"].get("labels_failed", 0) >= 40
                and s["roles"]["teacher"]["counters"].get("labels", 0) >= 40
            ),
            what="the teacher's labels and failed labels counted",
        )
        assert status["roles"]["decision"]["counters"].get("teacher_timeouts", 0) == 0
    finally:
        daemon.stop()
