"""The codec of runtime.protocol, without a daemon: round trips, arrays, every rejection, and the doc.

docs/protocol.md is checked against the code here: every kind and error code is mentioned, each
peer-facing kind's field table matches KINDS, and the example bytes are what the encoder produces.
The last section asks a real daemon to ``describe`` itself, over real ZeroMQ.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import msgpack
import numpy as np
import pytest

from runtime.errors import ProtocolError
from runtime.wire import protocol
from runtime.wire.protocol import ARRAY_DTYPES, KINDS, PEER_KINDS, ErrorCode

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# One valid value per field type, for building messages of any kind from its spec.
SAMPLES = {
    protocol.UINT: 7,
    protocol.INT: -3,
    protocol.FLOAT: 0.25,
    protocol.STR: "text ✓",
    protocol.BOOL: True,
    protocol.BIN: b"\x00\xffroute",
    protocol.ARRAY: np.arange(6, dtype=np.float32).reshape(2, 3),
    protocol.MAP: {"a": 1, "nested": {"b": [1, 2]}},
    protocol.LIST: [1, "two"],
}
SHAPES = [(), (0,), (5,), (2, 3), (2, 0, 3), (1, 2, 3, 2)]


def sample_fields(kind: str, optional: bool = True) -> dict:
    return {f.name: SAMPLES[f.type] for f in KINDS[kind].fields if f.required or optional}


def raw(**body) -> bytes:
    """A message packed by hand, as a foreign peer would: no help from protocol.encode."""
    return msgpack.packb(body, use_bin_type=True)


def valid_observation(**overrides) -> dict:
    body = {
        "v": 1,
        "kind": "observation",
        "seq": 9,
        "obs": {"dtype": "float32", "shape": [4], "data": struct.pack("<4f", 0.5, -1.0, 2.0, 0.0)},
    }
    body.update(overrides)
    return body


def rejected(data: bytes, **decode_args) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        protocol.decode(data, **decode_args)
    return info.value


def assert_same(decoded, original) -> None:
    if isinstance(original, np.ndarray):
        assert decoded.dtype == original.dtype and decoded.shape == original.shape
        assert decoded.tobytes() == original.tobytes()
    else:
        assert decoded == original and type(decoded) is type(original)


def random_array(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random bit patterns (NaN payloads, subnormals, extremes included), or 0/1 for bool."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    if dtype == "bool":
        return rng.integers(0, 2, count).astype(bool).reshape(shape)
    return np.frombuffer(rng.bytes(count * np.dtype(dtype).itemsize), dtype=dtype).reshape(shape).copy()


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("optional", [True, False], ids=["all-fields", "required-only"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_round_trips(kind, optional):
    fields = sample_fields(kind, optional)
    message = protocol.decode(protocol.encode(kind, **fields))
    assert message.kind == kind
    assert set(message.fields) == set(fields)
    for name, value in fields.items():
        assert_same(message[name], value)


def test_nullable_field_round_trips_as_nil():
    message = protocol.decode(protocol.error_message(ErrorCode.WRONG_SHAPE, "bad", None))
    assert message["seq"] is None and message["code"] == 300
    with_seq = protocol.decode(protocol.error_message(ErrorCode.WRONG_SHAPE, "bad", 12))
    assert with_seq["seq"] == 12


def test_encode_refuses_a_missing_required_field():
    with pytest.raises(ValueError, match="seq"):
        protocol.encode("observation", obs=np.zeros(4, np.float32))


def test_encoder_output_is_the_documented_plain_msgpack():
    body = msgpack.unpackb(
        protocol.encode("observation", seq=3, obs=np.array([1.5, -2.0], np.float32), episode_start=True), raw=False
    )
    assert body == {
        "v": 1,
        "kind": "observation",
        "seq": 3,
        "episode_start": True,
        "obs": {"dtype": "float32", "shape": [2], "data": struct.pack("<2f", 1.5, -2.0)},
    }
    assert isinstance(body["obs"]["data"], bytes)  # bin, not str


# --- arrays ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ARRAY_DTYPES)
def test_arrays_round_trip_bit_exactly(dtype, shape):
    original = random_array(dtype, shape, seed=len(shape))
    wire = protocol.encode_array(original)
    assert wire == {
        "dtype": dtype,
        "shape": list(shape),
        "data": original.astype(original.dtype.newbyteorder("<")).tobytes(),
    }
    assert_same(protocol.decode_array(wire), original)
    assert_same(protocol.decode(protocol.encode("observation", seq=1, obs=original))["obs"], original)


@pytest.mark.parametrize("dtype", [d for d in ARRAY_DTYPES if np.dtype(d).itemsize > 1])
def test_big_endian_arrays_travel_little_endian(dtype):
    values = random_array(dtype, (3, 2), seed=5)
    big = values.astype(values.dtype.newbyteorder(">"))
    wire = protocol.encode_array(big)
    assert wire["dtype"] == dtype
    assert wire["data"] == values.astype(values.dtype.newbyteorder("<")).tobytes()
    assert wire["data"] != big.tobytes()  # the bytes really were swapped
    decoded = protocol.decode_array(wire)
    assert decoded.dtype.isnative and decoded.tobytes() == values.tobytes()


def test_non_contiguous_arrays_travel_in_c_order():
    grid = np.arange(12, dtype=np.int32).reshape(3, 4)
    for view in (grid.T, grid[:, ::2], np.asfortranarray(grid)):
        wire = protocol.encode_array(view)
        assert wire["shape"] == list(view.shape)
        assert wire["data"] == np.ascontiguousarray(view).astype("<i4").tobytes()
        assert np.array_equal(protocol.decode_array(wire), view)


@pytest.mark.parametrize("dtype", ["complex64", "float128", "object", "<U3", "datetime64[s]"])
def test_encoder_refuses_dtypes_that_cannot_travel(dtype):
    with pytest.raises(TypeError, match="cannot travel"):
        protocol.encode_array(np.zeros(2, dtype=dtype))


F32x4 = struct.pack("<4f", 0, 0, 0, 0)
BAD_ARRAYS = {
    "data-too-short": {"dtype": "float32", "shape": [4], "data": F32x4[:-1]},
    "data-too-long": {"dtype": "float32", "shape": [4], "data": F32x4 + b"\0"},
    "size-of-other-dtype": {"dtype": "float64", "shape": [4], "data": F32x4},
    "unknown-dtype": {"dtype": "float128", "shape": [1], "data": bytes(16)},
    "byte-order-in-dtype": {"dtype": "<f4", "shape": [4], "data": F32x4},
    "numpy-alias-dtype": {"dtype": "f4", "shape": [4], "data": F32x4},
    "dtype-not-str": {"dtype": 5, "shape": [4], "data": F32x4},
    "missing-dtype": {"shape": [4], "data": F32x4},
    "negative-dim": {"dtype": "float32", "shape": [-4], "data": F32x4},
    "negative-dims-cancel": {"dtype": "float32", "shape": [-2, -2], "data": F32x4},
    "float-dim": {"dtype": "float32", "shape": [4.0], "data": F32x4},
    "bool-dim": {"dtype": "float32", "shape": [True, 4], "data": F32x4},
    "str-dim": {"dtype": "float32", "shape": ["4"], "data": F32x4},
    "shape-not-list": {"dtype": "float32", "shape": 4, "data": F32x4},
    "missing-shape": {"dtype": "float32", "data": F32x4},
    "data-as-str": {"dtype": "uint8", "shape": [4], "data": "abcd"},
    "data-as-list": {"dtype": "uint8", "shape": [4], "data": [1, 2, 3, 4]},
    "missing-data": {"dtype": "float32", "shape": [4]},
    # Dims whose product overflows 64 bits: np.prod would wrap around to a size that matches.
    "dims-wrap-to-zero": {"dtype": "float32", "shape": [2**62, 4], "data": b""},
    "dims-wrap-to-four": {"dtype": "uint8", "shape": [2**62 + 1, 4], "data": b"\0" * 4},
    "huge-dims-no-data": {"dtype": "uint8", "shape": [2**64 - 1] * 50_000, "data": b""},
    "huge-dims-beside-zero": {"dtype": "float32", "shape": [2**62, 2**62, 0], "data": b""},
    "too-many-dims": {"dtype": "uint8", "shape": [1] * 65, "data": b"\0"},
    "not-a-map": [0.0, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize("array", BAD_ARRAYS.values(), ids=BAD_ARRAYS.keys())
def test_bad_arrays_are_invalid_fields_with_the_seq(array):
    error = rejected(raw(**valid_observation(obs=array)))
    assert error.code == ErrorCode.INVALID_FIELD and error.seq == 9
    assert "obs" in error.message and len(error.message) < 500


def test_a_zero_sized_array_may_have_huge_dims():
    decoded = protocol.decode_array({"dtype": "float32", "shape": [2**40, 0], "data": b""})
    assert decoded.shape == (2**40, 0)


# --- the envelope ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, "1", 1.0, None, True])
def test_wrong_version_is_unsupported_and_keeps_the_seq(version):
    error = rejected(raw(**valid_observation(v=version)))
    assert error.code == ErrorCode.UNSUPPORTED_VERSION and error.seq == 9


def test_missing_version_is_unsupported():
    body = valid_observation()
    del body["v"]
    assert rejected(raw(**body)).code == ErrorCode.UNSUPPORTED_VERSION


@pytest.mark.parametrize("kind", ["teleport", "", "OBSERVATION", 7, None, ["observation"]])
def test_unknown_kind(kind):
    error = rejected(raw(**valid_observation(kind=kind)))
    assert error.code == ErrorCode.UNKNOWN_KIND and error.seq == 9


@pytest.mark.parametrize(
    ("message", "seq"),
    [
        ({"kind": "hello", "observation_space": {}}, None),  # hello has no seq: a stray one is not echoed
        ({"kind": "student_request"}, None),
        ({"kind": "observation", "obs": "not an array"}, 9),
        ({"kind": "label", "obs": {"dtype": "f4", "shape": [], "data": b""}}, 9),
    ],
)
def test_field_errors_echo_the_seq_only_of_kinds_that_have_one(message, seq):
    error = rejected(raw(v=1, seq=9, **message))
    assert (error.code, error.seq) == (ErrorCode.INVALID_FIELD, seq)


@pytest.mark.parametrize("kind", sorted(set(KINDS) - PEER_KINDS))
def test_internal_kinds_are_unknown_where_only_peer_kinds_are_accepted(kind):
    data = protocol.encode(kind, **sample_fields(kind))
    assert protocol.decode(data).kind == kind
    assert rejected(data, accept=PEER_KINDS).code == ErrorCode.UNKNOWN_KIND


NOT_MESSAGES = {
    "empty": b"",
    "never-used-byte": b"\xc1",
    "truncated-map": raw(**valid_observation())[:-3],
    "two-objects": raw(**valid_observation()) + b"\x80",
    "array": msgpack.packb([1, "observation"]),
    "int": msgpack.packb(1),
    "str": msgpack.packb("hello"),
    "nil": msgpack.packb(None),
    "int-keys": msgpack.packb({1: 1, "v": 1, "kind": "heartbeat"}),
    "invalid-utf8-str": b"\x82\xa1v\x01\xa4kind\xa4\xff\xfe\xfd\xfc",
    "too-deep": b"\x91" * 5000 + b"\x80",
    "json": b'{"v": 1, "kind": "heartbeat"}',
}


@pytest.mark.parametrize("data", NOT_MESSAGES.values(), ids=NOT_MESSAGES.keys())
def test_not_a_msgpack_map_is_malformed(data):
    error = rejected(data)
    assert error.code == ErrorCode.MALFORMED_MESSAGE and error.seq is None


def test_oversize_is_refused_before_parsing():
    data = raw(**valid_observation())
    assert protocol.decode(data, max_bytes=len(data)).kind == "observation"
    error = rejected(data, max_bytes=len(data) - 1)
    assert error.code == ErrorCode.MESSAGE_TOO_LARGE and error.seq is None
    assert rejected(b"\xc1" * 100, max_bytes=99).code == ErrorCode.MESSAGE_TOO_LARGE


def test_default_limit_is_one_mebibyte():
    big = raw(**valid_observation(padding=b"\0" * protocol.DEFAULT_MAX_MESSAGE_BYTES))
    assert rejected(big).code == ErrorCode.MESSAGE_TOO_LARGE


def test_unknown_fields_are_ignored():
    message = protocol.decode(
        raw(**valid_observation(future_field={"x": [1, 2]}, priority=3, ext=msgpack.ExtType(42, b"\x01")))
    )
    assert set(message.fields) == {"seq", "obs"}
    assert message["obs"].tolist() == [0.5, -1.0, 2.0, 0.0]


REQUIRED = [(kind.name, field.name) for kind in KINDS.values() for field in kind.fields if field.required]


@pytest.mark.parametrize("kind, field", REQUIRED, ids=[f"{k}.{f}" for k, f in REQUIRED])
def test_missing_required_field_is_invalid(kind, field):
    body = msgpack.unpackb(protocol.encode(kind, **sample_fields(kind)), raw=False)
    del body[field]
    error = rejected(raw(**body))
    assert error.code == ErrorCode.INVALID_FIELD and field in error.message


WRONG_TYPES = {
    "negative-seq": {"seq": -1},
    "float-seq": {"seq": 1.0},
    "str-seq": {"seq": "1"},
    "bool-seq": {"seq": True},
    "nil-seq": {"seq": None},  # nil only where a field is nullable
    "reward-str": {"reward": "1.0"},
    "reward-bool": {"reward": False},
    "episode_start-int": {"episode_start": 1},
    "policy-bin": {"policy": b"auto"},
}


@pytest.mark.parametrize("change", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_field_of_the_wrong_type_is_invalid(change):
    error = rejected(raw(**valid_observation(**change)))
    assert error.code == ErrorCode.INVALID_FIELD
    field = next(iter(change))
    assert field in error.message
    assert error.seq == (None if field == "seq" else 9)


def test_float32_int_and_float64_are_all_accepted_for_float_fields():
    as_float32 = msgpack.packb(valid_observation(reward=0.1), use_single_float=True)
    assert as_float32[-5] == 0xCA  # msgpack float 32
    assert protocol.decode(as_float32)["reward"] == float(np.float32(0.1))
    assert protocol.decode(raw(**valid_observation(reward=0.1)))["reward"] == 0.1
    assert protocol.decode(raw(**valid_observation(reward=-2)))["reward"] == -2


def test_int_formats_of_every_width_are_accepted_for_uint_fields():
    for seq in (0, 127, 255, 65535, 2**32 - 1, 2**64 - 1):
        assert protocol.decode(raw(**valid_observation(seq=seq)))["seq"] == seq


# --- a foreign peer's messages --------------------------------------------------------------------


def test_hand_built_cartpole_session_messages_decode():
    low = struct.pack("<4f", -4.8, float("-inf"), -0.41887903, float("-inf"))
    high = struct.pack("<4f", 4.8, float("inf"), 0.41887903, float("inf"))
    hello = raw(
        v=1,
        kind="hello",
        peer_name="c-peer",
        observation_space={
            "type": "box",
            "shape": [4],
            "dtype": "float32",
            "low": {"dtype": "float32", "shape": [4], "data": low},
            "high": {"dtype": "float32", "shape": [4], "data": high},
        },
        action_space={"type": "discrete", "n": 2},
    )
    message = protocol.decode(hello, accept=PEER_KINDS)
    assert message.kind == "hello" and message["peer_name"] == "c-peer"
    assert message["action_space"] == {"type": "discrete", "n": 2}
    observation = protocol.decode(
        raw(
            v=1,
            kind="observation",
            seq=1,
            episode_start=True,
            policy="student",
            obs={"dtype": "float32", "shape": [4], "data": struct.pack("<4f", 0.01, -0.02, 0.03, -0.04)},
        ),
        accept=PEER_KINDS,
    )
    assert observation["obs"].dtype == np.float32 and observation["obs"].shape == (4,)
    assert observation["obs"].tolist() == pytest.approx([0.01, -0.02, 0.03, -0.04])
    assert observation["episode_start"] is True and observation["policy"] == "student"
    for kind in ("heartbeat", "bye"):
        assert protocol.decode(raw(v=1, kind=kind), accept=PEER_KINDS).kind == kind


def test_spaces_from_a_hand_built_hello_match_gymnasium():
    gymnasium = pytest.importorskip("gymnasium")
    from runtime.wire import spaces

    env_space = gymnasium.make("CartPole-v1").observation_space
    wire = msgpack.unpackb(raw(**spaces.to_wire(env_space)), raw=False)
    assert spaces.same_space(spaces.from_wire(wire), env_space)
    plain = {
        "type": "box",
        "shape": [4],
        "dtype": "float32",
        "low": env_space.low.tolist(),
        "high": env_space.high.tolist(),
    }
    assert spaces.same_space(spaces.from_wire(plain), env_space)


def test_canonical_encodings_are_equal_exactly_for_equal_spaces():
    from gymnasium.spaces import Box, Discrete

    from runtime.wire import spaces

    def wire(space):  # as the gateway gets it: packed and unpacked
        return msgpack.unpackb(raw(**spaces.to_wire(space)), raw=False)

    base = Box(-1.0, 1.0, (3, 2), np.float32)
    same_forms = [
        wire(base),
        {"type": "box", "shape": [3, 2], "dtype": "float32", "low": -1.0, "high": 1.0},
        {"type": "box", "shape": [3, 2], "dtype": "float32", "low": [-1.0, -1.0], "high": [[1.0], [1.0], [1.0]]},
    ]
    others = {
        "bounds": Box(np.array([-1, -1, -1, -1, -1, -0.5], np.float32).reshape(3, 2), 1.0, (3, 2), np.float32),
        "shape": Box(-1.0, 1.0, (2, 3), np.float32),
        "dtype": Box(-1.0, 1.0, (3, 2), np.float64),
        "kind": Discrete(6),
    }
    ours = spaces.canonical(wire(base))
    for form in same_forms:
        assert spaces.canonical(form) == ours and spaces.same_space(spaces.from_wire(form), base)
    for name, other in others.items():
        assert spaces.canonical(wire(other)) != ours, name
        assert not spaces.same_space(spaces.from_wire(wire(other)), base), name
    zero = Box(0.0, 1.0, (2,), np.float32)  # -0.0 == 0.0 in a comparison of bounds, so equal here too
    assert spaces.canonical({**wire(zero), "low": -0.0}) == spaces.canonical(wire(zero))
    assert spaces.canonical(wire(Discrete(3, start=1))) != spaces.canonical(wire(Discrete(3)))
    for bad in ({"type": "box", "shape": [2], "low": 1.0, "high": 0.0}, {"type": "box", "shape": [2], "low": np.nan}):
        with pytest.raises(ValueError):
            spaces.canonical(bad)


def test_a_hello_space_is_matched_without_building_it_and_differences_are_remembered_boundedly():
    import tracemalloc

    gymnasium = pytest.importorskip("gymnasium")
    from runtime.wire import spaces

    agent = gymnasium.make("CartPole-v1").observation_space
    matcher = spaces.Matcher(agent, "observation_space", 1 << 20, cache_entries=2)
    huge = {"type": "box", "shape": [1 << 20], "dtype": "float32"}
    tracemalloc.start()
    try:
        assert matcher.difference(huge) == "box(shape=[1048576], dtype=float32)"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10  # bounds of a million float32s would be 4 MiB each
    assert matcher.difference(spaces.to_wire(agent)) is None
    for index in range(4):  # bounds-only differences: worked out once each, the last two remembered
        low = agent.low.copy()
        low[index] = -1.0
        assert matcher.difference({**spaces.to_wire(agent), "low": protocol.encode_array(low)}).startswith(
            f"its low[{index}] is -1.0 where the agent's is"
        )
    assert len(matcher.differences) == 2


def test_documented_limits_of_the_decoder():
    deep = b"\x91" * 1025 + b"\x01"  # a list inside a list ... 1025 deep
    message = {"v": 1, "kind": "heartbeat"}
    with pytest.raises(ProtocolError) as too_deep:
        protocol.decode(msgpack.packb({**message, "x": 0})[:-1] + deep)
    assert too_deep.value.code == ErrorCode.MALFORMED_MESSAGE
    twice = b"\x83\xa1v\x01\xa4kind\xa5hello\xa4kind\xa9heartbeat"  # "kind" written twice: the last wins
    assert protocol.decode(twice).kind == "heartbeat"
    with pytest.raises(ProtocolError) as bin_keys:
        protocol.decode(msgpack.packb({b"v": 1, b"kind": b"heartbeat"}, use_bin_type=True))
    assert bin_keys.value.code == ErrorCode.MALFORMED_MESSAGE


def test_observations_outside_the_finite_bounds_are_refused_or_clipped():
    from gymnasium.spaces import Box, Discrete

    from runtime.wire import spaces

    space = Box(np.array([-1.0, -np.inf], np.float32), np.array([1.0, np.inf], np.float32))
    inside = np.array([0.5, 1e30], np.float32)  # an infinite bound bounds nothing
    assert spaces.check_observation(inside, space, 1) is inside
    with pytest.raises(ProtocolError) as refused:
        spaces.check_observation(np.array([-3.0, 0.0], np.float32), space, 7)
    assert (refused.value.code, refused.value.seq) == (ErrorCode.INVALID_FIELD, 7)
    assert "-3.0 at [0] is outside the space's bounds [-1.0, 1.0]" in refused.value.message
    clipped = spaces.check_observation(np.array([-3.0, 2.0], np.float32), space, 7, out_of_bounds="clip")
    assert clipped.tolist() == [-1.0, 2.0] and clipped.dtype == np.float32
    with pytest.raises(ProtocolError):
        spaces.check_observation(np.array(5, np.int64), Discrete(3, start=1), 8)


def test_discrete_start_travels_and_must_match():
    from gymnasium.spaces import Discrete

    from runtime.wire import spaces

    shifted = Discrete(3, start=1)
    assert spaces.to_wire(shifted) == {"type": "discrete", "n": 3, "start": 1}
    assert spaces.to_wire(Discrete(3)) == {"type": "discrete", "n": 3}  # as every earlier peer sends it
    assert spaces.same_space(spaces.from_wire(spaces.to_wire(shifted)), shifted)
    assert not spaces.same_space(shifted, Discrete(3))  # off by one is a mismatch, not silence
    assert spaces.describe(shifted) == "discrete(n=3, start=1)"
    assert spaces.actions_from_outputs(np.array([[0.0, 5.0, 1.0]]), shifted).tolist() == [2]
    with pytest.raises(ValueError, match="start"):
        spaces.from_wire({"type": "discrete", "n": 3, "start": 2**63 - 2})


# --- docs/protocol.md stays in step with the code --------------------------------------------------


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_doc_mentions_every_kind(doc):
    missing = [name for name in KINDS if f"`{name}`" not in doc]
    assert not missing, f"kinds missing from {DOC.name}: {missing}"


def test_doc_lists_every_error_code_with_its_number(doc):
    rows = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*`(\w+)`\s*\|", doc, flags=re.MULTILINE))
    assert rows == {str(int(code)): code.name for code in ErrorCode}


def doc_field_table(doc: str, kind: str) -> list[list[str]]:
    section = re.search(rf"^### `{kind}`\n(.*?)(?=^#)", doc, flags=re.MULTILINE | re.DOTALL)
    assert section, f"no section '### `{kind}`' in {DOC.name}"
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.group(1).splitlines()
        if line.startswith("| `")
    ]
    return rows


@pytest.mark.parametrize("kind", sorted(PEER_KINDS))
def test_doc_field_table_matches_the_spec(doc, kind):
    rows = doc_field_table(doc, kind)
    documented = [(name.strip("`"), kind_type, required) for name, kind_type, required, *_ in rows]
    expected = [("v", "`uint`", "yes"), ("kind", "`str`", "yes")]
    for field in KINDS[kind].fields:
        wire_type = f"`{field.type}`" + (" or `nil`" if field.nullable else "")
        expected.append((field.name, wire_type, "yes" if field.required else "no"))
    assert documented == expected
    assert all(len(row) == 4 and row[3] for row in rows), "every field needs a meaning"


def doc_example(doc: str, name: str) -> bytes:
    block = re.search(rf"<!-- bytes: {name} -->\s*```\w*\n(.*?)```", doc, flags=re.DOTALL)
    assert block, f"no example bytes '{name}' in {DOC.name}"
    return bytes.fromhex(re.sub(r"\s+", "", block.group(1)))


def test_doc_example_bytes_are_what_the_encoder_produces(doc):
    gymnasium = pytest.importorskip("gymnasium")
    from runtime.wire import spaces

    env = gymnasium.make("CartPole-v1")
    obs = np.array([0.01, -0.02, 0.03, -0.04], dtype=np.float32)
    assert doc_example(doc, "hello") == protocol.encode(
        "hello",
        observation_space=spaces.to_wire(env.observation_space),
        action_space=spaces.to_wire(env.action_space),
        peer_name="cartpole-c",
    )
    assert doc_example(doc, "observation") == protocol.encode("observation", seq=1, obs=obs, episode_start=True)
    assert doc_example(doc, "action") == protocol.encode(
        "action", seq=1, action=np.array(1, dtype=np.int64), student_version=0, decided_by="student"
    )


# --- describe, against a real daemon --------------------------------------------------------------

REPLY_S = 30.0  # generous: a reply normally takes milliseconds


def cartpole_spaces() -> dict:
    import gymnasium

    from runtime.wire import spaces

    env = gymnasium.make("CartPole-v1")
    return {
        "observation_space": spaces.to_wire(env.observation_space),
        "action_space": spaces.to_wire(env.action_space),
    }


def ask(endpoint: str, frames: list[bytes], then: list[bytes] | None = None) -> list[bytes]:
    """Send ``frames`` as one message on a new connection (and ``then`` after its reply); the raw replies."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        replies = []
        for message in [frames, *([then] if then else [])]:
            sock.send_multipart(message)
            assert sock.poll(REPLY_S * 1000), f"no reply within {REPLY_S} s"
            replies.append(sock.recv())
        return replies
    finally:
        sock.close(linger=0)


def test_describe_before_hello_gives_the_spaces_in_full_and_a_hello_with_them_is_welcomed(shared_daemon):
    described, welcomed = (
        protocol.decode(reply, accept=protocol.TO_PEER)
        for reply in ask(
            shared_daemon.endpoint,
            [protocol.encode("describe")],
            then=[protocol.encode("hello", **cartpole_spaces())],  # what a peer builds from the description
        )
    )
    assert described.kind == "description", described
    assert described["protocol_version"] == protocol.PROTOCOL_VERSION == 1
    expected = cartpole_spaces()
    for name in ("observation_space", "action_space"):
        assert described[name] == expected[name]  # bounds included, as the bytes a hello must carry
    assert described["observation_space"]["low"]["dtype"] == "float32"
    assert (described["max_message_bytes"], described["peer_timeout_ms"]) == (protocol.DEFAULT_MAX_MESSAGE_BYTES, 30000)
    assert welcomed.kind == "welcome", welcomed

    # The SDK: describe, then attach with exactly what came back; describe in a session leaves it open.
    from runtime.peer import Peer

    agent = Peer.describe(shared_daemon.endpoint, wait_s=REPLY_S)
    assert agent == described.fields | {"student_version": agent["student_version"]}
    with Peer(shared_daemon.endpoint, agent["observation_space"], agent["action_space"], timeout_s=REPLY_S) as peer:
        assert peer.act(np.zeros(4, np.float32), episode_start=True).seq == 1
        peer._connected.send(protocol.encode("describe"))
        assert peer._receive(REPLY_S).kind == "description"
        assert peer.act(np.zeros(4, np.float32)).seq == 2


def test_describe_is_bounded_and_counted_like_other_messages(shared_daemon):
    def counters(status: dict) -> dict:
        return status["roles"]["gateway"]["counters"]

    before = shared_daemon.status()
    for _ in range(3):
        (reply,) = ask(shared_daemon.endpoint, [protocol.encode("describe")])
        assert len(reply) < 1024  # CartPole's spaces: a few hundred bytes, however often asked
    shared_daemon.wait_until(
        lambda s: counters(s).get("describes", 0) >= counters(before).get("describes", 0) + 3,
        what="three describes counted",
    )
    # Over the decoder's limit (under the socket cap): refused unread, like any message.
    padded = msgpack.packb({"v": 1, "kind": "describe", "padding": bytes(protocol.DEFAULT_MAX_MESSAGE_BYTES)})
    (reply,) = ask(shared_daemon.endpoint, [padded])
    refused = protocol.decode(reply)
    assert (refused.kind, refused["code"], refused["seq"]) == ("error", ErrorCode.MESSAGE_TOO_LARGE, None)
    shared_daemon.wait_until(
        lambda s: (
            s["errors"]["by_code"].get("MESSAGE_TOO_LARGE", 0) > before["errors"]["by_code"].get("MESSAGE_TOO_LARGE", 0)
        ),
        what="the refusal counted",
    )


@pytest.mark.parametrize(
    "frames, code",
    [
        ([msgpack.packb({"v": "1", "kind": "describe"})], ErrorCode.UNSUPPORTED_VERSION),
        ([msgpack.packb({"kind": "describe"})], ErrorCode.UNSUPPORTED_VERSION),
        ([protocol.encode("describe"), protocol.encode("describe")], ErrorCode.MALFORMED_MESSAGE),
        ([msgpack.packb({b"v": 1, b"kind": b"describe"}, use_bin_type=True)], ErrorCode.MALFORMED_MESSAGE),
        ([msgpack.packb({"v": 1, "kind": "description"})], ErrorCode.UNKNOWN_KIND),  # the runtime's answer
    ],
    ids=["string-version", "no-version", "two-frames", "bin-keys", "answer-kind"],
)
def test_a_malformed_describe_gets_its_documented_error_and_the_connection_stays_usable(shared_daemon, frames, code):
    refused, described = ask(shared_daemon.endpoint, frames, then=[protocol.encode("describe")])
    error = protocol.decode(refused)
    assert (error.kind, error["code"], error["seq"]) == ("error", code, None), error.fields
    assert protocol.decode(described).kind == "description"
