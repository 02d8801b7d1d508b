"""Perception: observation -> features, through the configured chain of perception transforms."""

from __future__ import annotations

import numpy as np
import zmq

from runtime.errors import PluginFailure
from runtime.learn.models import perception_chain
from runtime.roles.base import Role
from runtime.wire import protocol, transport


class Perception(Role):
    name = "perception"

    def setup(self) -> None:
        self.chain = perception_chain(self.plugins, self.settings, self.observation_space)
        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.PERCEPTION_IN))
        self.to_decision = self.transport.connect(zmq.PUSH, self.transport.internal(transport.DECISION_IN))
        self.returns = self.transport.connect(zmq.PUSH, self.transport.internal(transport.GATEWAY_RETURN))
        self.on(self.inbox, lambda sock: self.drain(sock, self.handle))

    def handle(self, data: bytes) -> None:
        message = self.decode(data, frozenset({"observed"}))
        if message is None:
            return
        route, seq, obs = message["route"], message["seq"], message["obs"]
        try:
            if message["new_episode"]:
                self.chain.reset(route)
            features = self.chain(np.asarray(obs, dtype=np.float32), route)
        except PluginFailure as failure:
            self.plugin_failed(failure, self.returns, route, seq)
            return
        self.counters["observations"] += 1
        self.send(
            self.to_decision,
            protocol.encode(
                "features",
                route=route,
                seq=seq,
                obs=obs,
                features=features,
                policy=message["policy"],
                new_episode=message["new_episode"],
            ),
            "features",
        )
