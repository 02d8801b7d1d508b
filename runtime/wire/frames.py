"""The internal framing of the observation path, gateway → perception → decision → execution →
gateway: multipart ZeroMQ messages whose arrays travel as frames of their own, never inside msgpack.

One observation or decision is ``[route, header, *arrays]``:

* ``route``: the peer's ROUTER routing id, as the gateway received it;
* ``header``: ``HEAD`` (kind, flags, seq, student version, number of arrays), then for each array
  ``LAYOUT`` (dtype index in ``protocol.ARRAY_DTYPES``, number of dims) and its dims as ``DIM``s;
* each array: its raw little-endian, C-ordered bytes, which ``decode`` wraps with ``np.frombuffer``
  (no copy: ``Internal.arrays`` share the received frames' memory).

The way back to the gateway is ``[route, kind, payload]``: ``payload`` is a finished peer-facing
message (docs/protocol.md), ``kind`` its kind (``RETURN_KINDS``), so the gateway forwards
``[route, payload]`` to the peer without decoding it.

Only the runtime's own processes speak this (docs/architecture.md, Internal framing): the gateway
validated everything a peer sent, so a receiver checks the framing (sizes, codes), not the values;
a message that does not fit raises ProtocolError, which the receiving role counts and drops.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from runtime.errors import ProtocolError
from runtime.wire.protocol import ARRAY_DTYPES, ErrorCode, array_nbytes, little_endian

#: Kinds, the header's first byte.
OBSERVED = 1  # gateway -> perception -> decision: a validated observation (and, after transforms, its features)
DECIDED = 2  # decision -> execution: the raw action chosen for an observation
KIND_NAMES = {OBSERVED: "observed", DECIDED: "decided"}
#: The header's policy and decided_by bytes index these.
POLICIES = ("auto", "student", "teacher")
DECIDERS = ("student", "teacher")
#: What the payload of a message on the way back to the gateway is.
RETURN_KINDS = frozenset({b"action", b"error"})

#: kind, new_episode (0 or 1), policy, decided_by, number of arrays, seq, student_version.
HEAD = struct.Struct("<BBBBBQQ")
#: One array's dtype (its index in ARRAY_DTYPES) and number of dims, followed by that many DIMs.
LAYOUT = struct.Struct("<BB")
DIM = struct.Struct("<Q")
#: numpy's own limit on dims.
MAX_DIMS = 64
_DTYPES = tuple(np.dtype(name).newbyteorder("<") for name in ARRAY_DTYPES)
_DTYPE_CODES = {name: code for code, name in enumerate(ARRAY_DTYPES)}
_POLICY_CODES = {name: code for code, name in enumerate(POLICIES)}
_DECIDER_CODES = {name: code for code, name in enumerate(DECIDERS)}

#: A frame as it is received (zmq.Frame, with ``copy=False``) or built (bytes, a numpy array).
Frame = Any


class Internal(NamedTuple):
    """One decoded ``[route, header, *arrays]`` message; ``arrays`` share the frames' memory (``buffers``)."""

    kind: int
    route: bytes
    seq: int
    new_episode: bool
    policy: str
    decided_by: str
    student_version: int
    arrays: tuple[np.ndarray, ...]
    dtypes: tuple[str, ...]  # the arrays' dtype names
    buffers: tuple[memoryview, ...]

    def array_map(self, index: int) -> dict[str, Any]:
        """Array ``index`` as the protocol's array map, its bytes as they came (no numpy conversion)."""
        return {
            "dtype": self.dtypes[index],
            "shape": list(self.arrays[index].shape),
            "data": self.buffers[index].tobytes(),
        }


def header(
    kind: int,
    seq: int,
    arrays: Sequence[tuple[str, np.ndarray]],
    new_episode: bool = False,
    policy: str = "auto",
    decided_by: str = "student",
    student_version: int = 0,
) -> bytes:
    """The header frame for ``arrays``: (dtype name, array) as ``protocol.little_endian`` returns them."""
    head = HEAD.pack(
        kind, new_episode, _POLICY_CODES[policy], _DECIDER_CODES[decided_by], len(arrays), seq, student_version
    )
    return head + b"".join(_layout(a.ndim).pack(_DTYPE_CODES[name], a.ndim, *a.shape) for name, a in arrays)


@functools.cache
def _dims(ndim: int) -> struct.Struct:
    """``ndim`` DIMs, in one struct."""
    return struct.Struct(f"<{ndim}Q")


@functools.cache
def _layout(ndim: int) -> struct.Struct:
    """LAYOUT and ``ndim`` DIMs, in one struct."""
    return struct.Struct(f"{LAYOUT.format}{ndim}Q")


def observed(route: Frame, seq: int, obs: np.ndarray, policy: str, new_episode: bool) -> list[Frame]:
    """gateway -> perception: a validated observation."""
    named = little_endian(obs)
    return [route, header(OBSERVED, seq, [named], new_episode, policy), named[1]]


def with_features(message: Internal, frames: Sequence[Frame], features: np.ndarray) -> list[Frame]:
    """perception -> decision: the ``observed`` ``message`` received as ``frames``, its observation
    frame passed on untouched, with ``features`` appended."""
    named = little_endian(features)
    obs = (message.dtypes[0], message.arrays[0])
    head = header(OBSERVED, message.seq, [obs, named], message.new_episode, message.policy)
    return [frames[0], head, frames[2], named[1]]


def decided(
    route: bytes, seq: int, action: Any, decided_by: str, student_version: int, new_episode: bool
) -> list[Frame]:
    """decision -> execution: the raw action chosen for an observation."""
    named = little_endian(action)
    head = header(DECIDED, seq, [named], new_episode, decided_by=decided_by, student_version=student_version)
    return [route, head, named[1]]


def returned(route: Frame, kind: bytes, payload: bytes) -> list[Frame]:
    """any role -> gateway: ``payload``, a finished peer message of ``kind`` (RETURN_KINDS), for ``route``."""
    return [route, kind, payload]


def decode_return(frames: Sequence[Frame]) -> tuple[Frame, str, Frame]:
    """A message on the way back to the gateway: (route frame, payload kind, payload frame)."""
    if len(frames) != 3:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"a returned message has 3 frames, got {len(frames)}")
    kind = bytes(frames[1])
    if kind not in RETURN_KINDS:
        raise ProtocolError(ErrorCode.UNKNOWN_KIND, f"unknown returned kind {kind[:32]!r}")
    return frames[0], kind.decode(), frames[2]


def decode(frames: Sequence[Frame], kind: int, arrays: Sequence[int]) -> Internal:
    """Decode a ``[route, header, *arrays]`` message of ``kind`` with a number of arrays in ``arrays``;
    ProtocolError if it does not fit the framing."""
    if len(frames) < 2:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"an internal message has a header, got {len(frames)} frames")
    head = memoryview(frames[1])
    if len(head) < HEAD.size:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"a header of {len(head)} bytes; at least {HEAD.size}")
    got, new_episode, policy, decider, count, seq, version = HEAD.unpack_from(head)
    if got != kind:
        raise ProtocolError(ErrorCode.UNKNOWN_KIND, f"internal kind {got}, expected {KIND_NAMES[kind]}", seq)
    if new_episode > 1 or policy >= len(POLICIES) or decider >= len(DECIDERS):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "a header flag out of range", seq)
    if count not in arrays or count != len(frames) - 2:
        raise ProtocolError(
            ErrorCode.MALFORMED_MESSAGE, f"{count} arrays in the header, {len(frames) - 2} array frames", seq
        )
    buffers = tuple(memoryview(frame).cast("B") for frame in frames[2:])
    decoded, names = [], []
    offset = HEAD.size
    for buffer in buffers:
        if len(head) < offset + LAYOUT.size:
            raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "a header cut short", seq)
        code, ndim = LAYOUT.unpack_from(head, offset)
        offset += LAYOUT.size
        if code >= len(_DTYPES) or ndim > MAX_DIMS or len(head) < offset + ndim * DIM.size:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"array layout: dtype {code}, {ndim} dims", seq)
        shape = _dims(ndim).unpack_from(head, offset)
        offset += ndim * DIM.size
        if buffer.nbytes != array_nbytes(list(shape), _DTYPES[code].itemsize, buffer.nbytes):
            detail = f"{buffer.nbytes} array bytes do not fit {ARRAY_DTYPES[code]} {list(shape)}"
            raise ProtocolError(ErrorCode.INVALID_FIELD, detail, seq)
        try:
            decoded.append(np.frombuffer(buffer, dtype=_DTYPES[code]).reshape(shape))
            names.append(ARRAY_DTYPES[code])
        except ValueError:  # an empty array whose other dims exceed numpy's limits
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"an array of shape {list(shape)} cannot be", seq) from None
    if offset != len(head):
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"{len(head) - offset} header bytes left over", seq)
    return Internal(
        kind,
        bytes(frames[0]),
        seq,
        bool(new_episode),
        POLICIES[policy],
        DECIDERS[decider],
        version,
        tuple(decoded),
        tuple(names),
        buffers,
    )
