"""Per-stream state for perception transforms and execution filters, bounded by least-recent use.

Part of the plugin API: the built-in ``framestack`` and ``rate_limit`` use it, and so can any
third-party step that keeps state per peer stream.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

Value = TypeVar("Value")


class StreamState(Generic[Value]):
    """A dict from stream to state that keeps at most ``max_streams`` (>= 1) streams.

    A peer that vanishes without a bye never gets its stream reset, so an unbounded dict would grow
    for as long as the runtime lives; evicting the least recently used stream bounds that. An
    evicted stream that comes back simply starts afresh, as after ``reset``.
    """

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._states: OrderedDict[bytes, Value] = OrderedDict()

    def get(self, stream: bytes) -> Value | None:
        """The stream's state (marking it most recently used), or None for a new stream."""
        state = self._states.get(stream)
        if state is not None:
            self._states.move_to_end(stream)
        return state

    def put(self, stream: bytes, state: Value) -> None:
        self._states[stream] = state
        self._states.move_to_end(stream)
        if len(self._states) > self.max_streams:
            self._states.popitem(last=False)

    def forget(self, stream: bytes) -> None:
        self._states.pop(stream, None)

    def __contains__(self, stream: object) -> bool:
        return stream in self._states

    def __len__(self) -> int:
        return len(self._states)
