"""The wire protocol: message kinds, their fields, error codes, and the msgpack codec.

This module is the single definition of the protocol in code; docs/protocol.md describes it for
peers written in other languages, and a test keeps the two in step.

Every message is one msgpack map: ``{"v": PROTOCOL_VERSION, "kind": <str>, ...fields}`` (except
on the internal observation path, which is framed by ``runtime.wire.frames``).
N-dimensional arrays are maps ``{"dtype": <str>, "shape": [<uint>...], "data": <bin>}`` holding
raw little-endian, C-ordered bytes.
"""

from __future__ import annotations

import enum
import reprlib
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from runtime.errors import ProtocolError

PROTOCOL_VERSION = 1

#: Default upper bound for one encoded message, in bytes (configurable as ``protocol.max_message_bytes``).
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20

ARRAY_DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)


#: A hello's ``peer_name`` is at most this many characters (it goes into logs and status).
MAX_PEER_NAME_CHARS = 256
#: An error text quotes at most this many characters of an offending value: replies and log lines
#: stay a few KiB whatever a peer sends.
QUOTE_CHARS = 200
_quoting = reprlib.Repr()
_quoting.maxstring = _quoting.maxother = QUOTE_CHARS
_quoting.maxlist = _quoting.maxtuple = _quoting.maxdict = _quoting.maxset = 16
_quoting.maxlevel = 3


def quote(value: object) -> str:
    """``repr(value)``, shortened (with ``...``) to about QUOTE_CHARS characters, for error texts."""
    return _quoting.repr(value)


class ErrorCode(enum.IntEnum):
    """Error codes carried by ``error`` messages. 1xx: envelope, 2xx: session, 3xx: data, 5xx: runtime."""

    MALFORMED_MESSAGE = 100
    UNSUPPORTED_VERSION = 101
    UNKNOWN_KIND = 102
    INVALID_FIELD = 103
    MESSAGE_TOO_LARGE = 104
    NOT_ATTACHED = 200
    SPACE_MISMATCH = 201
    WRONG_SHAPE = 300
    WRONG_DTYPE = 301
    NOT_FINITE = 302
    PLUGIN_FAILED = 500
    UNAVAILABLE = 501
    INTERNAL_ERROR = 502


# Field types. "array" is the n-d array map above; "space" is a space description (docs/protocol.md).
UINT, INT, FLOAT, STR, BOOL, BIN, ARRAY, MAP, LIST = (
    "uint",
    "int",
    "float",
    "str",
    "bool",
    "bin",
    "array",
    "map",
    "list",
)


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    required: bool = True
    nullable: bool = False


@dataclass(frozen=True)
class Kind:
    name: str
    fields: tuple[Field, ...]
    peer_facing: bool
    doc: str


def _kind(name: str, peer_facing: bool, doc: str, *fields: Field) -> Kind:
    return Kind(name, tuple(fields), peer_facing, doc)


#: What a peer needs to know of the agent: in a welcome, and in a description before any hello.
_AGENT_FIELDS = (
    Field("observation_space", MAP),
    Field("action_space", MAP),
    Field("student_version", UINT),
    Field("max_message_bytes", UINT),
    Field("peer_timeout_ms", UINT),
)

#: An observation's fields; an edge peer's ``label`` has the same (its ``policy`` takes other values).
_OBSERVATION_FIELDS = (
    Field("seq", UINT),
    Field("obs", ARRAY),
    Field("reward", FLOAT, required=False),
    Field("episode_start", BOOL, required=False),
    Field("policy", STR, required=False),
)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        # --- peer <-> runtime -------------------------------------------------------------------
        _kind(
            "hello",
            True,
            "peer -> runtime: first message of a session; declares the peer's spaces",
            Field("observation_space", MAP),
            Field("action_space", MAP),
            Field("peer_name", STR, required=False),
        ),
        _kind(
            "welcome",
            True,
            "runtime -> peer: the session is open",
            Field("peer_id", STR),
            *_AGENT_FIELDS,
        ),
        _kind("describe", True, "peer -> runtime: what is the agent? Answered with a description, no session needed"),
        _kind(
            "description",
            True,
            "runtime -> peer: the agent's spaces and limits, answering a describe",
            Field("protocol_version", UINT),
            *_AGENT_FIELDS,
        ),
        _kind(
            "observation",
            True,
            "peer -> runtime: one observation; answered by one action or one error",
            *_OBSERVATION_FIELDS,
        ),
        _kind(
            "action",
            True,
            "runtime -> peer: the action for observation `seq`",
            Field("seq", UINT),
            Field("action", ARRAY),
            Field("student_version", UINT),
            Field("decided_by", STR),
        ),
        _kind(
            "error",
            True,
            "either direction: a request was refused",
            Field("code", UINT),
            Field("message", STR),
            Field("seq", UINT, nullable=True),
        ),
        _kind("heartbeat", True, "either direction: liveness; the runtime answers each with a heartbeat"),
        _kind("bye", True, "peer -> runtime: the session ends", Field("reason", STR, required=False)),
        # --- edge mode: the peer runs the student itself (docs/protocol.md, Edge mode) ------------
        _kind(
            "student_request",
            True,
            "peer -> runtime: send me the serving student in `format`, now and each time another version serves",
            Field("format", STR),
        ),
        _kind(
            "student",
            True,
            "runtime -> peer: the serving student, exported; pushed again for each version served after it",
            Field("version", UINT),
            Field("format", STR),
            Field("metadata", MAP),
            Field("tensors", MAP, required=False),
            Field("model", BIN, required=False),
            Field("announced_at", FLOAT, required=False, nullable=True),
        ),
        _kind(
            "label",
            True,
            "peer -> runtime: an observation the peer acted on locally, for the teacher to label",
            *_OBSERVATION_FIELDS,
        ),
        # --- between role processes (ipc, or TCP with CURVE; never from or to peers) ----------------
        # The observation path (gateway -> perception -> decision -> execution -> gateway) is not
        # msgpack: runtime.wire.frames.
        _kind(
            "sample",
            False,
            "decision -> distillation: an observation chosen for a teacher label",
            Field("obs", ARRAY),
            Field("features", ARRAY),
            Field("teacher_output", ARRAY, nullable=True),
        ),
        _kind(
            "teach",
            False,
            "decision or distillation -> teacher: label a batch of observations",
            Field("request_id", UINT),
            Field("obs", ARRAY),
            Field("want_features", BOOL, required=False),
        ),
        _kind(
            "taught",
            False,
            "teacher -> requester: the teacher's outputs (and features, if asked) for a `teach` batch",
            Field("request_id", UINT),
            Field("outputs", ARRAY),
            Field("features", ARRAY, required=False),
            # The teacher's calibrated temperature (runtime.plugin.interfaces.Calibrated), nil if none.
            Field("temperature", FLOAT, required=False, nullable=True),
        ),
        _kind(
            "weights",
            False,
            "distillation -> decision and gateway (PUB): another student version serves (promoted, rolled back)",
            Field("version", UINT),
            Field("path", STR),
            # Wall-clock time (Unix seconds) it was announced, passed on to edge peers in `student`.
            Field("announced_at", FLOAT, required=False),
        ),
        _kind(
            "stats",
            False,
            "any role -> daemon: counters and gauges of one role process",
            Field("role", STR),
            Field("pid", UINT),
            Field("counters", MAP),
            Field("gauges", MAP),
            # Set by a role on another host (agentrt role NAME --connect): the daemon's view of it.
            Field("host", STR, required=False),
        ),
        _kind("control", False, "CLI -> daemon: a command", Field("command", STR), Field("args", MAP, required=False)),
        _kind(
            "control_reply",
            False,
            "daemon -> CLI: a command's result",
            Field("ok", BOOL),
            Field("result", MAP, required=False),
            Field("message", STR, required=False),
        ),
    )
}

PEER_KINDS = frozenset(name for name, kind in KINDS.items() if kind.peer_facing)
#: What a peer may send to the runtime, and what the runtime sends to a peer.
FROM_PEER = frozenset({"hello", "describe", "observation", "heartbeat", "bye", "error", "student_request", "label"})
TO_PEER = frozenset({"welcome", "description", "action", "error", "heartbeat", "student"})
#: The ``format`` values of ``student_request`` and ``student`` (runtime.learn.export's names).
EDGE_LAYOUT, EDGE_ONNX = "safetensors+json", "onnx"
EDGE_FORMATS = (EDGE_LAYOUT, EDGE_ONNX)
#: Kinds the runtime never answers, not even with an error when it refuses one (docs/protocol.md).
UNANSWERED = frozenset({"bye", "error"})
assert FROM_PEER | TO_PEER == PEER_KINDS


def socket_cap(max_message_bytes: int) -> int:
    """The hard cap ZeroMQ enforces (ZMQ_MAXMSGSIZE): above it a connection is dropped without a
    reply. Twice the decoder's limit, so a message somewhat over the limit still reaches the
    decoder and earns a MESSAGE_TOO_LARGE reply."""
    return 2 * max_message_bytes + 4096


@dataclass(frozen=True)
class Message:
    kind: str
    fields: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


#: The dtypes that travel, little-endian (as numpy has them natively on most machines), to their names.
LITTLE_DTYPES = {np.dtype(name).newbyteorder("<"): name for name in ARRAY_DTYPES}


def little_endian(array: Any) -> tuple[str, np.ndarray]:
    """``array`` as a C-ordered, little-endian numpy array, and its dtype's name (TypeError for a
    dtype that cannot travel). An array that is so already is returned as it is: the usual case."""
    array = np.asarray(array)
    # A dict of dtypes, not dtype.name, which costs microseconds each time.
    name = LITTLE_DTYPES.get(array.dtype)
    if name is not None and array.flags.c_contiguous:
        return name, array
    name = array.dtype.name
    if name not in ARRAY_DTYPES:
        raise TypeError(f"dtype {name} cannot travel; allowed: {', '.join(ARRAY_DTYPES)}")
    # ascontiguousarray makes a 0-d array 1-d: the reshape (a view) keeps a scalar a scalar.
    return name, np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(array.shape)


def encode_array(array: np.ndarray) -> dict[str, Any]:
    name, little = little_endian(array)
    return {"dtype": name, "shape": list(little.shape), "data": little.tobytes()}


def decode_array(value: Any, field: str = "array", seq: int | None = None) -> np.ndarray:
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{field}: expected an array map", seq)
    dtype, shape, data = value.get("dtype"), value.get("shape"), value.get("data")
    if dtype not in ARRAY_DTYPES:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"{field}: dtype {quote(dtype)} is not one of {', '.join(ARRAY_DTYPES)}", seq
        )
    # type() rather than isinstance(): msgpack true/false decode to bool, which is an int subclass.
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{field}: shape must be a list of non-negative integers", seq)
    if not isinstance(data, bytes):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{field}: data must be bin", seq)
    np_dtype = np.dtype(dtype).newbyteorder("<")
    if len(data) != array_nbytes(shape, np_dtype.itemsize, len(data)):
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"{field}: {len(data)} data bytes do not match dtype {dtype} and shape {reprlib.repr(shape)}",
            seq,
        )
    try:
        # A copy in native byte order: writable, so torch can wrap it without warnings.
        return np.frombuffer(data, dtype=np_dtype).astype(np_dtype.newbyteorder("=")).reshape(shape)
    except ValueError:  # too many dims, or an empty array whose other dims exceed numpy's limits
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"{field}: shape {reprlib.repr(shape)} is not supported", seq
        ) from None


def array_nbytes(shape: list[int], itemsize: int, limit: int) -> int:
    """Bytes an array of ``shape`` needs: exact up to ``limit``; past it, some larger number.

    Python ints, not np.prod (which wraps around on huge dims), and stopping early, so that a
    long list of huge dims cannot make a product millions of bits long.
    """
    if 0 in shape:
        return 0
    size = itemsize
    for dim in shape:
        size *= dim
        if size > limit:
            break
    return size


def encode(kind: str, **fields: Any) -> bytes:
    """Encode one message; numpy arrays in ``fields`` are converted to array maps (a dict is taken
    as an array map already made, such as ``runtime.wire.frames.Internal.array_map``)."""
    spec = KINDS[kind]
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": kind}
    for field in spec.fields:
        if field.name not in fields:
            if field.required:
                raise ValueError(f"{kind}: missing field {field.name}")
            continue
        value = fields[field.name]
        if field.type == ARRAY and value is not None and not isinstance(value, dict):
            value = encode_array(value)
        body[field.name] = value
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


_TYPE_CHECKS = {
    UINT: lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
    FLOAT: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    STR: lambda v: isinstance(v, str),
    BOOL: lambda v: isinstance(v, bool),
    BIN: lambda v: isinstance(v, bytes),
    MAP: lambda v: isinstance(v, dict),
    LIST: lambda v: isinstance(v, list),
    ARRAY: lambda v: isinstance(v, dict),
}


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, accept: frozenset[str] | None = None) -> Message:
    """Decode and validate one message. Raises ProtocolError with the code to send back.

    ``accept`` limits the kinds this endpoint takes (the gateway accepts FROM_PEER, a peer TO_PEER).
    Unknown fields are dropped, for forward compatibility.
    """
    if len(data) > max_bytes:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE, f"message of {len(data)} bytes exceeds the limit of {max_bytes}"
        )
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"not a msgpack message: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "a message must be a msgpack map")
    if not all(isinstance(key, str) for key in body):
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "a message's keys must be msgpack strings (str, not bin)")
    seq = body.get("seq") if _TYPE_CHECKS[UINT](body.get("seq")) else None
    version = body.get("v")
    if not _TYPE_CHECKS[UINT](version) or version != PROTOCOL_VERSION:  # 1.0 == True == 1 in Python
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {quote(version)} is not supported; this runtime speaks {PROTOCOL_VERSION}",
            seq,
        )
    kind = body.get("kind")
    spec = KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None or (accept is not None and spec.name not in accept):
        raise ProtocolError(ErrorCode.UNKNOWN_KIND, f"unknown message kind {quote(kind)}", seq)
    # From here the kind is known: only a kind that has a seq (an observation, a label) echoes one.
    if not any(field.name == "seq" for field in spec.fields):
        seq = None
    try:
        fields = _checked_fields(spec, body, seq)
    except ProtocolError as exc:
        exc.kind = spec.name
        raise
    return Message(spec.name, fields)


def error_message(code: int, message: str, seq: int | None = None) -> bytes:
    return encode("error", code=int(code), message=message, seq=seq)


def _checked_fields(spec: Kind, body: dict[str, Any], seq: int | None) -> dict[str, Any]:
    kind = spec.name
    fields: dict[str, Any] = {}
    for field in spec.fields:
        if field.name not in body:
            if field.required:
                raise ProtocolError(ErrorCode.INVALID_FIELD, f"{kind}: missing field {field.name!r}", seq)
            continue
        value = body[field.name]
        if value is None and field.nullable:
            fields[field.name] = None
            continue
        if not _TYPE_CHECKS[field.type](value):
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"{kind}: field {field.name!r} must be {field.type}", seq)
        fields[field.name] = decode_array(value, field.name, seq) if field.type == ARRAY else value
    return fields
