"""Teacher: labels batches of observations for decision (acting) and distillation (labels)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import zmq

from runtime import protocol, transport
from runtime.pluginmanager import PluginFailure, serve
from runtime.roles.base import Role


class TeacherRole(Role):
    """Serves the configured teacher on the internal ``teacher`` socket, or, run on its own by
    ``agentrt teacher serve``, on a TCP endpoint for daemons on other hosts (the ``remote`` teacher)."""

    name = "teacher"

    def __init__(self, config: dict[str, Any], supervised: bool = True, endpoint: str | None = None) -> None:
        super().__init__(config, supervised)
        self.endpoint = endpoint

    def setup(self) -> None:
        import torch

        torch.set_num_threads(1)
        settings = self.config["teacher"]
        self.component = self.plugins.get("teacher", settings["plugin"])
        self.teacher = self.plugins.build("teacher", settings["plugin"], dict(settings["params"]),
                                          self.observation_space, self.action_space)
        self.server = self.transport.bind(zmq.ROUTER, self.endpoint or self.transport.internal(transport.TEACHER))
        self.log.info("teacher_serving", endpoint=self.server.getsockopt_string(zmq.LAST_ENDPOINT),
                      plugin=settings["plugin"])
        self.on(self.server, self.on_request)
        self.gauges.update(latency_us=0.0)

    def on_request(self, sock: zmq.Socket) -> None:
        for _ in range(64):
            try:
                identity, data = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:  # not two frames: internal senders never do this
                self.counters["errors.MALFORMED_MESSAGE"] += 1
                continue
            request = self.decode(data, frozenset({"teach"}))
            if request is None:
                continue
            started = time.perf_counter()
            try:
                outputs = np.asarray(serve(self.component, self.teacher.label, request["obs"]), dtype=np.float32)
            except PluginFailure as failure:
                self.log.error("plugin_failed", plugin=failure.component.plugin, hook=failure.component.hook,
                               error=str(failure.error))
                self.counters["errors.PLUGIN_FAILED"] += 1
                continue
            batch = len(outputs)
            self.gauges["latency_us"] = (time.perf_counter() - started) * 1e6 / max(batch, 1)
            self.counters["labels"] += batch
            self.counters["requests"] += 1
            self.send(sock, [identity, protocol.encode("taught", request_id=request["request_id"], outputs=outputs)], "taught")
