"""Perception: observation -> features, through the configured chain of perception transforms.

With no transforms the features are the observation itself: the gateway's frames go on to decision
untouched, never decoded here (``forwarded`` counts them)."""

from __future__ import annotations

import numpy as np
import zmq

from runtime.errors import PluginFailure
from runtime.learn.models import perception_chain
from runtime.roles.base import Role
from runtime.wire import frames, transport


class Perception(Role):
    name = "perception"

    def setup(self) -> None:
        self.chain = perception_chain(self.plugins, self.settings, self.observation_space)
        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.PERCEPTION_IN))
        self.to_decision = self.transport.connect(zmq.PUSH, self.transport.internal(transport.DECISION_IN))
        self.returns = self.transport.connect(zmq.PUSH, self.transport.internal(transport.GATEWAY_RETURN))
        handle = self.handle if self.chain.steps else self.forward
        self.on(self.inbox, lambda sock: self.drain(sock, handle, multipart=True))

    def forward(self, parts: list[zmq.Frame]) -> None:
        # Decision checks the framing: a message that does not fit is counted and dropped there.
        if self.send(self.to_decision, parts, "features"):
            self.counters["forwarded"] += 1
        self.counters["observations"] += 1

    def handle(self, parts: list[zmq.Frame]) -> None:
        message = self.decode_frames(parts, frames.OBSERVED)
        if message is None:
            return
        route, seq = message.route, message.seq
        try:
            if message.new_episode:
                self.chain.reset(route)
            features = self.chain(np.asarray(message.arrays[0], dtype=np.float32), route)
        except PluginFailure as failure:
            self.plugin_failed(failure, self.returns, route, seq)
            return
        self.counters["observations"] += 1
        self.send(self.to_decision, frames.with_features(message, parts, features), "features")
