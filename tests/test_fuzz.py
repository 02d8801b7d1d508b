"""Fuzzing the gateway: random and mutated messages from one connection while a well-behaved peer
acts on another. Every reply must be a documented message (an error with a documented code, or the
answer a valid message gets), the gateway must never restart, and the good peer must keep getting
actions.

Bounded and seeded: a few seconds in ``make test``. ``FUZZ_MESSAGES=100000`` (and
``FUZZ_SEED``) for a long run; the counts are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from typing import Any

import gymnasium
import msgpack
import numpy as np
import pytest
import zmq

from runtime.errors import ProtocolError
from runtime.peer import Peer
from runtime.testing import start_daemon
from runtime.wire import protocol, spaces
from runtime.wire.protocol import ErrorCode

MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "600"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))
GOOD_PEER_EVERY = 50  # messages between two actions of the well-behaved peer
REPLY_S = 30.0  # generous: replies take milliseconds; only a lost reply waits this long

ENV = gymnasium.make("CartPole-v1")
SPACES = {"observation_space": spaces.to_wire(ENV.observation_space), "action_space": spaces.to_wire(ENV.action_space)}
GOOD_OBS = np.array([0.01, -0.02, 0.03, -0.04], dtype=np.float32)


def valid_bodies(seq: int) -> list[dict[str, Any]]:
    """Plain msgpack maps of every kind a peer may send, as the documented wire form."""
    observation = {"v": 1, "kind": "observation", "seq": seq, "obs": protocol.encode_array(GOOD_OBS)}
    return [
        {"v": 1, "kind": "hello", "peer_name": "fuzz", **SPACES},
        {"v": 1, "kind": "describe"},
        observation,
        {**observation, "reward": 1.0, "episode_start": True, "policy": "student"},
        {"v": 1, "kind": "heartbeat"},
        {"v": 1, "kind": "error", "code": 500, "message": "peer-side trouble", "seq": None},
        {"v": 1, "kind": "bye", "reason": "done"},
    ]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [
        None,
        True,
        rng.randint(-(2**63), 2**64 - 1),
        rng.random() * 10 ** rng.randint(-5, 40),
        float("nan"),
        float("inf"),
        "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 40))),
        rng.randbytes(rng.randint(0, 64)),
        "x" * rng.choice([0, 1, 300, 70_000]),
    ]
    if depth < 3:
        choices += [
            [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))],
            {
                random_value(rng, 3)
                if rng.random() < 0.2
                else rng.choice(["v", "kind", "seq", "obs", "n", "type"]): random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 4))
            },
        ]
    return rng.choice(choices)


def mutate(rng: random.Random, seq: int) -> list[bytes]:
    """One fuzzed message (its frames): a valid body with a field changed, added or removed, bytes
    flipped or cut, several frames, or plain noise."""
    body = dict(rng.choice(valid_bodies(seq)))
    how = rng.randrange(7)
    if how == 0:  # a field gets a random value
        body[rng.choice(list(body))] = random_value(rng)
    elif how == 1:  # a field goes missing
        del body[rng.choice(list(body))]
    elif how == 2:  # an unknown or odd key
        body[random_value(rng, 3) if rng.random() < 0.5 else "extra"] = random_value(rng)
    elif how == 3 and "obs" in body:  # a malformed array
        body["obs"] = {**body["obs"], rng.choice(["dtype", "shape", "data"]): random_value(rng)}
    try:
        data = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):  # a key msgpack cannot pack: send noise instead
        data = rng.randbytes(rng.randint(1, 200))
    if how == 4:  # bytes flipped
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        data = bytes(flipped)
    elif how == 5:  # cut short
        data = data[: rng.randrange(len(data))]
    elif how == 6 and rng.random() < 0.5:  # plain noise
        data = rng.randbytes(rng.randint(0, 300))
    return [data] * (2 if rng.random() < 0.03 else 1)


def replies(sock: zmq.Socket, timeout_ms: int) -> list[protocol.Message]:
    answered = []
    while sock.poll(timeout_ms):
        answered.append(protocol.decode(sock.recv(), 4 * protocol.DEFAULT_MAX_MESSAGE_BYTES, accept=protocol.TO_PEER))
        timeout_ms = 0
    return answered


@pytest.mark.timeout(max(180, MESSAGES // 20))
def test_fuzzed_messages_get_documented_replies_and_a_good_peer_keeps_being_served():
    rng = random.Random(SEED)
    daemon = start_daemon()
    context = zmq.Context()
    fuzzer = context.socket(zmq.DEALER)
    fuzzer.setsockopt(zmq.LINGER, 0)
    good = Peer(daemon.endpoint, ENV.observation_space, ENV.action_space, name="well-behaved", timeout_s=REPLY_S)
    try:
        fuzzer.connect(daemon.endpoint)
        before = daemon.status()["roles"]["gateway"]
        good.connect(wait_s=REPLY_S)
        kinds: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        served = 0
        for index in range(MESSAGES):
            if index % 5 == 0:  # keep a session open most of the time, so observations reach the runtime
                fuzzer.send(protocol.encode("hello", peer_name="fuzz", **SPACES))
            fuzzer.send_multipart(mutate(rng, index))
            for reply in replies(fuzzer, 0):
                kinds[reply.kind] += 1
                if reply.kind == "error":
                    codes[ErrorCode(reply["code"]).name] += 1  # ValueError: an undocumented code
                    assert len(reply["message"]) < 2048, reply["message"][:300]
            if index % GOOD_PEER_EVERY == 0:
                answer = good.act(GOOD_OBS)
                assert ENV.action_space.contains(int(answer.action))
                served += 1
        # Whatever is still in flight arrives; each must be documented too.
        for reply in replies(fuzzer, 2000):
            kinds[reply.kind] += 1
        after = daemon.status()["roles"]["gateway"]
        assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"])
        assert served == len(range(0, MESSAGES, GOOD_PEER_EVERY))
        assert codes, "the fuzzer never provoked an error: it is not fuzzing"
        print(json.dumps({"seed": SEED, "messages": MESSAGES, "replies": dict(kinds), "error_codes": dict(codes)}))
    except ProtocolError as exc:
        pytest.fail(f"an undecodable or undocumented reply: {exc}")
    finally:
        good.close()
        fuzzer.close(linger=0)
        context.term()
        daemon.stop()
