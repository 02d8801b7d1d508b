"""Execution: decided action -> safe action for the peer, through the configured execution filters."""

from __future__ import annotations

import zmq

from runtime.errors import PluginFailure
from runtime.learn.models import execution_chain
from runtime.roles.base import Role
from runtime.wire import protocol, transport


class Execution(Role):
    name = "execution"

    def setup(self) -> None:
        self.chain = execution_chain(self.plugins, self.settings, self.action_space)
        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.EXECUTION_IN))
        self.returns = self.transport.connect(zmq.PUSH, self.transport.internal(transport.GATEWAY_RETURN))
        self.on(self.inbox, lambda sock: self.drain(sock, self.handle))

    def handle(self, data: bytes) -> None:
        message = self.decode(data, frozenset({"decided"}))
        if message is None:
            return
        route, seq = message["route"], message["seq"]
        try:
            if message["new_episode"]:  # a rate limit must not carry the last episode's action over
                self.chain.reset(route)
            action = self.chain(message["action"], route)
        except PluginFailure as failure:
            self.plugin_failed(failure, self.returns, route, seq)
            return
        self.counters["actions"] += 1
        payload = protocol.encode(
            "action",
            seq=seq,
            action=action,
            student_version=message["student_version"],
            decided_by=message["decided_by"],
        )
        self.send(self.returns, protocol.encode("reply", route=route, payload=payload, payload_kind="action"), "action")
