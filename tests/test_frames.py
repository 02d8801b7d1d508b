"""The internal framing of the observation path (runtime.wire.frames, docs/architecture.md).

The codec through real ZeroMQ sockets: every dtype round-trips, arrays come out sharing the
received frame's memory, and a message that does not fit the framing is a ProtocolError. Then real
daemons: perception and execution with empty chains forward without decoding, with chains they
transform, and a malformed internal message sent to any role on the path is counted and dropped
while the same role processes keep serving.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest
import zmq

from runtime.errors import ProtocolError
from runtime.peer import Peer
from runtime.testing import start_daemon
from runtime.wire import frames, protocol, transport
from runtime.wire.protocol import ARRAY_DTYPES, ErrorCode

ENV = gymnasium.make("CartPole-v1")
GOOD_OBS = np.array([0.01, -0.02, 0.03, -0.04], dtype=np.float32)
STATS_S = 60.0  # stats arrive every 0.1 s


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """A PUSH and a PULL over inproc: frames cross a real ZeroMQ socket and come back as zmq.Frame."""
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind("inproc://frames")
    push = context.socket(zmq.PUSH)
    push.connect("inproc://frames")
    yield push, pull
    push.close(linger=0)
    pull.close(linger=0)
    context.term()


def cross(pair: tuple[zmq.Socket, zmq.Socket], parts: list) -> list[zmq.Frame]:
    push, pull = pair
    push.send_multipart(parts)
    assert pull.poll(10_000), "the message did not cross the socket"
    return pull.recv_multipart(copy=False)


def shares_frame(array: np.ndarray, frame: zmq.Frame) -> bool:
    return np.shares_memory(array, np.frombuffer(frame.buffer, dtype=np.uint8))


@pytest.mark.parametrize("dtype", ARRAY_DTYPES)
def test_every_dtype_round_trips_without_a_copy(pair, dtype):
    obs = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    parts = cross(pair, frames.observed(b"\x00route", 2**64 - 1, obs, "teacher", True))
    message = frames.decode(parts, frames.OBSERVED, (1,))
    header = (message.route, message.seq, message.policy, message.new_episode)
    assert header == (b"\x00route", 2**64 - 1, "teacher", True)
    (decoded,) = message.arrays
    assert decoded.dtype.name == dtype and decoded.shape == (2, 3) and (decoded == obs).all()
    assert shares_frame(decoded, parts[2]), "the array is a view of the received frame, not a copy"


def test_features_ride_along_and_the_observation_frame_is_passed_on_as_it_came(pair):
    received = cross(pair, frames.observed(b"r", 7, GOOD_OBS, "auto", False))
    observed = frames.decode(received, frames.OBSERVED, (1,))
    features = np.stack([GOOD_OBS, GOOD_OBS])
    onward = frames.with_features(observed, received, features)
    assert onward[0] is received[0] and onward[2] is received[2]
    message = frames.decode(cross(pair, onward), frames.OBSERVED, (2,))
    assert (message.seq, message.policy, message.new_episode) == (7, "auto", False)
    assert (message.arrays[0] == GOOD_OBS).all() and (message.arrays[-1] == features).all()


def test_a_scalar_action_stays_a_scalar_and_its_map_is_what_the_protocol_encodes(pair):
    parts = cross(pair, frames.decided(b"r", 3, np.int64(1), "teacher", 12, True))
    message = frames.decode(parts, frames.DECIDED, (1,))
    assert (message.decided_by, message.student_version, message.new_episode) == ("teacher", 12, True)
    assert message.arrays[0].shape == () and message.arrays[0] == 1
    assert message.array_map(0) == protocol.encode_array(np.int64(1))


def test_a_returned_message_keeps_its_payload_bytes(pair):
    payload = protocol.error_message(ErrorCode.UNAVAILABLE, "busy", 5)
    route, kind, sent = frames.decode_return(cross(pair, frames.returned(b"r", b"error", payload)))
    assert (route.bytes, kind, sent.bytes) == (b"r", "error", payload)


def observed_frames(**changes: object) -> list:
    """A well-formed ``observed`` message as built frames, with ``changes`` to its header's fields."""
    fields = {"kind": frames.OBSERVED, "new_episode": 0, "policy": 0, "decided_by": 0, "count": 1, "seq": 9}
    fields |= changes
    head = frames.HEAD.pack(*fields.values(), 0) + frames.LAYOUT.pack(ARRAY_DTYPES.index("float32"), 1)
    return [b"r", head + frames.DIM.pack(4), GOOD_OBS.tobytes()]


MALFORMED = {
    "no-header": ([b"r"], ErrorCode.MALFORMED_MESSAGE),
    "short-header": ([b"r", b"\x01\x00", GOOD_OBS.tobytes()], ErrorCode.MALFORMED_MESSAGE),
    "other-kind": (observed_frames(kind=frames.DECIDED), ErrorCode.UNKNOWN_KIND),
    "policy-out-of-range": (observed_frames(policy=len(frames.POLICIES)), ErrorCode.INVALID_FIELD),
    "flag-out-of-range": (observed_frames(new_episode=2), ErrorCode.INVALID_FIELD),
    "more-arrays-than-frames": (observed_frames(count=2), ErrorCode.MALFORMED_MESSAGE),
    "extra-frame": (observed_frames() + [b""], ErrorCode.MALFORMED_MESSAGE),
    "bytes-do-not-fit": (observed_frames()[:2] + [GOOD_OBS.tobytes()[:-1]], ErrorCode.INVALID_FIELD),
    "header-left-over": ([b"r", observed_frames()[1] + b"\x00", GOOD_OBS.tobytes()], ErrorCode.MALFORMED_MESSAGE),
    "header-cut-in-dims": ([b"r", observed_frames()[1][:-1], GOOD_OBS.tobytes()], ErrorCode.INVALID_FIELD),
    "unknown-dtype": (
        [b"r", frames.HEAD.pack(1, 0, 0, 0, 1, 9, 0) + frames.LAYOUT.pack(len(ARRAY_DTYPES), 0), b"x"],
        ErrorCode.INVALID_FIELD,
    ),
    # An empty array whose other dims numpy cannot hold: it must not crash the receiver.
    "huge-empty-dims": (
        [
            b"r",
            frames.HEAD.pack(1, 0, 0, 0, 1, 9, 0)
            + frames.LAYOUT.pack(0, 3)
            + struct.pack("<3Q", 0, 2**63 - 1, 2**63 - 1),
            b"",
        ],
        ErrorCode.INVALID_FIELD,
    ),
}


@pytest.mark.parametrize("parts, code", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_message_that_does_not_fit_the_framing_is_refused(pair, parts, code):
    with pytest.raises(ProtocolError) as refused:
        frames.decode(cross(pair, parts), frames.OBSERVED, (1,))
    assert refused.value.code == code


@pytest.mark.parametrize(
    "parts", [[b"r", b"action"], [b"r", b"welcome", b"payload"], [b"r", b"action", b"p", b"q"]], ids=str
)
def test_a_returned_message_of_another_shape_or_kind_is_refused(pair, parts):
    with pytest.raises(ProtocolError):
        frames.decode_return(cross(pair, parts))


# --- real role processes ----------------------------------------------------------------------------


def act(daemon, episodes: int = 1) -> None:
    """A peer gets valid actions for a few observations."""
    peer = Peer(daemon.endpoint, ENV.observation_space, ENV.action_space, name="frames", timeout_s=10)
    try:
        peer.connect(wait_s=10)
        for seq in range(1, 4):
            answer = peer.act(GOOD_OBS, episode_start=seq == 1)
            assert answer.seq == seq and ENV.action_space.contains(int(answer.action))
    finally:
        peer.close()


def counter(status: dict, role: str, name: str) -> int:
    return status["roles"][role]["counters"].get(name, 0)


def wait_for(daemon, what: str, holds) -> dict:
    deadline = time.monotonic() + STATS_S
    while not holds(status := daemon.status()):
        assert time.monotonic() < deadline, f"{what} within {STATS_S} s: {status['roles']}"
        time.sleep(0.05)
    return status


def test_empty_chains_forward_and_chains_transform():
    # Each role reports its own stats: wait until all three saw the peer's observations.
    def reported(s: dict) -> bool:
        return all(counter(s, role, name) >= 3 for role, name in SEEN)

    # Defaults: no perception transforms (forwarded untouched), execution clips (decodes).
    plain = start_daemon()
    try:
        act(plain)
        status = wait_for(plain, "three observations through every role", reported)
        assert counter(status, "perception", "forwarded") >= 3
        assert counter(status, "execution", "forwarded") == 0
    finally:
        plain.stop()
    # A frame stack: perception decodes and appends features; no execution filter forwards the action's bytes.
    chained = start_daemon('[perception]\ntransforms = ["framestack"]\n[execution]\nfilters = []\n')
    try:
        act(chained)
        status = wait_for(chained, "three observations through every role", reported)
        assert counter(status, "perception", "forwarded") == 0
        assert counter(status, "execution", "forwarded") >= 3
        assert counter(status, "decision", "errors.WRONG_SHAPE") == 0, "decision took the stacked features"
    finally:
        chained.stop()


SEEN = [
    ("perception", "observations"),
    ("decision", "decisions"),
    ("execution", "actions"),
    ("gateway", "actions_sent"),
]


# Each goes to one role's input: (endpoint, frames, the role that counts it, its error code).
INTERNAL_GARBAGE = {
    # Perception forwards without decoding: decision counts it.
    "perception-garbage": (transport.PERCEPTION_IN, [b"r", b"\x01junk"], "decision", "MALFORMED_MESSAGE"),
    "decision-wrong-shape": (
        transport.DECISION_IN,
        frames.observed(b"r", 1, np.zeros(5, np.float32), "auto", True),
        "decision",
        "WRONG_SHAPE",
    ),
    "decision-single-frame": (transport.DECISION_IN, [b"not multipart"], "decision", "MALFORMED_MESSAGE"),
    "execution-observed": (
        transport.EXECUTION_IN,
        frames.observed(b"r", 1, GOOD_OBS, "auto", True),
        "execution",
        "UNKNOWN_KIND",
    ),
    "gateway-unknown-return": (transport.GATEWAY_RETURN, [b"r", b"teach", b"x"], "gateway", "UNKNOWN_KIND"),
}


@pytest.fixture(scope="module")
def shared_daemon():
    running = start_daemon()
    yield running
    running.stop()


@pytest.mark.parametrize("endpoint, parts, role, code", INTERNAL_GARBAGE.values(), ids=INTERNAL_GARBAGE.keys())
def test_a_malformed_internal_message_is_counted_and_dropped(shared_daemon, endpoint, parts, role, code):
    before = shared_daemon.status()
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 1000)
    try:
        sock.connect(transport.ipc_endpoint(shared_daemon.run_dir, endpoint))
        sock.send_multipart(parts)
    finally:
        sock.close()
    name = f"errors.{code}"
    wait_for(shared_daemon, f"{role} {name}", lambda s: counter(s, role, name) > counter(before, role, name))
    act(shared_daemon)
    after = shared_daemon.status()["roles"]
    for process in ("gateway", "perception", "decision", "execution"):
        assert (after[process]["pid"], after[process]["restarts"]) == (
            before["roles"][process]["pid"],
            before["roles"][process]["restarts"],
        ), f"{process} was restarted"
