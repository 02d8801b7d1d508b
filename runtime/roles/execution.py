"""Execution: decided action -> safe action for the peer, through the configured execution filters.

It encodes the peer's ``action`` message once; the gateway sends it on as it is. With no filters
the action's bytes go into that message as they came from decision (``forwarded`` counts them)."""

from __future__ import annotations

from typing import Any

import zmq

from runtime.errors import PluginFailure
from runtime.learn.models import execution_chain
from runtime.roles.base import Role
from runtime.wire import frames, protocol, transport


class Execution(Role):
    name = "execution"

    def setup(self) -> None:
        self.chain = execution_chain(self.plugins, self.settings, self.action_space)
        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.EXECUTION_IN))
        self.returns = self.transport.connect(zmq.PUSH, self.transport.internal(transport.GATEWAY_RETURN))
        self.on(self.inbox, lambda sock: self.drain(sock, self.handle, multipart=True))

    def handle(self, parts: list[zmq.Frame]) -> None:
        message = self.decode_frames(parts, frames.DECIDED)
        if message is None:
            return
        route, seq = message.route, message.seq
        action: Any
        if self.chain.steps:
            try:
                if message.new_episode:  # a rate limit must not carry the last episode's action over
                    self.chain.reset(route)
                action = self.chain(message.arrays[0], route)
            except PluginFailure as failure:
                self.plugin_failed(failure, self.returns, route, seq)
                return
        else:
            action = message.array_map(0)
            self.counters["forwarded"] += 1
        self.counters["actions"] += 1
        payload = protocol.encode(
            "action", seq=seq, action=action, student_version=message.student_version, decided_by=message.decided_by
        )
        self.send(self.returns, frames.returned(parts[0], b"action", payload), "action")
