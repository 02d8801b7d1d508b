"""Decision: the student picks actions in batches; the query policy decides when the teacher acts
or labels; new student weights are swapped in between batches. The deciding itself is
``runtime.learn.loop.Decider``; this role moves messages to and from it."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import zmq

from runtime.errors import PluginFailure
from runtime.learn import registry
from runtime.learn.checkpoints import CheckpointStore, load_safetensors
from runtime.learn.loop import Decider
from runtime.roles.base import Role
from runtime.wire import protocol, transport
from runtime.wire.protocol import ErrorCode


class Decision(Role):
    name = "decision"

    def setup(self) -> None:
        import torch

        torch.set_num_threads(self.settings.decision.torch_threads)
        self.decider = Decider(self.plugins, self.settings, self.observation_space, self.action_space)
        serving = registry.serving_version(self.settings.daemon.run_dir)
        if serving:
            self.swap_in(serving, str(CheckpointStore(f"{self.settings.daemon.run_dir}/checkpoints").path(serving)))
        self.batch_max = self.settings.decision.batch_max
        self.teacher_timeout_ms = self.settings.teacher.timeout_ms
        self.request_ids = itertools.count(1)

        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.DECISION_IN))
        self.to_execution = self.transport.connect(zmq.PUSH, self.transport.internal(transport.EXECUTION_IN))
        self.to_distiller = self.transport.connect(zmq.PUSH, self.transport.internal(transport.DISTILLATION_IN))
        self.returns = self.transport.connect(zmq.PUSH, self.transport.internal(transport.GATEWAY_RETURN))
        self.teacher = self.transport.connect(zmq.DEALER, self.transport.internal(transport.TEACHER))
        self.weights = self.transport.connect(zmq.SUB, self.transport.internal(transport.WEIGHTS))
        self.weights.setsockopt(zmq.SUBSCRIBE, b"")
        self.on(self.inbox, self.on_features)
        self.on(self.weights, lambda sock: self.drain(sock, self.on_weights))
        self.gauges.update(
            student_version=self.decider.version, student_latency_us=0.0, numpy_forward=self.decider.fast is not None
        )

    # --- weights ---------------------------------------------------------------------------------
    def on_weights(self, data: bytes) -> None:
        message = self.decode(data, frozenset({"weights"}))
        if message is not None and message["version"] != self.decider.version:
            self.swap_in(message["version"], message["path"])

    def swap_in(self, version: int, path: str) -> None:
        try:
            self.decider.serve(version, load_safetensors(path)[0])
        except (OSError, RuntimeError, ValueError) as exc:  # keep serving the current version
            self.counters["weights_rejected"] += 1
            self.log.error("weights_rejected", version=version, path=path, error=str(exc))
            return
        self.gauges.update(student_version=version, numpy_forward=self.decider.fast is not None)
        self.counters["weights_swapped"] += 1
        self.log.info("weights_swapped", version=version)
        self.plugins.notify("agentrt_weights_swapped", version=version)

    # --- decisions -------------------------------------------------------------------------------
    def on_features(self, sock: zmq.Socket) -> None:
        batch = []
        for _ in range(self.batch_max):
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            message = self.decode(data, frozenset({"features"}))
            if message is not None:
                batch.append(message)
        if batch:
            self.decide(batch)

    def decide(self, batch: list[protocol.Message]) -> None:
        features = np.stack([m["features"] for m in batch]).astype(np.float32, copy=False)
        try:
            decisions = self.decider.decide(
                features,
                np.stack([m["obs"] for m in batch]),
                [m["policy"] for m in batch],
                self.ask_teacher,
                peers=[m["route"] for m in batch],  # one connection, one peer: its share of labels
            )
        except PluginFailure as failure:
            for message in batch:
                self.plugin_failed(failure, self.returns, message["route"], message["seq"])
            return
        self.gauges["student_latency_us"] = decisions.student_latency_us
        self.counters["student_not_finite"] += decisions.not_finite
        self.counters["labels_over_peer_share"] += decisions.over_share
        self.counters["decided_by_teacher"] += int((decisions.decided_by == "teacher").sum())
        for index, message in enumerate(batch):
            if not decisions.acted(index):  # the teacher could not stand in either
                self.reply_error(
                    self.returns,
                    message["route"],
                    ErrorCode.UNAVAILABLE,
                    "the student produced a non-finite output and the teacher did not answer",
                    message["seq"],
                )
                continue
            self.send(
                self.to_execution,
                protocol.encode(
                    "decided",
                    route=message["route"],
                    seq=message["seq"],
                    action=decisions.actions[index],
                    student_version=self.decider.version,
                    decided_by=decisions.decided_by[index],
                    new_episode=message["new_episode"],
                ),
                "decided",
            )
            if decisions.label[index]:
                self.counters["labels_requested"] += 1
                self.send(
                    self.to_distiller,
                    protocol.encode(
                        "sample",
                        obs=message["obs"],
                        features=features[index],
                        teacher_output=decisions.teacher_outputs[index],
                    ),
                    "sample",
                )
        self.counters["decisions"] += len(batch)
        self.counters["batches"] += 1

    def ask_teacher(self, observations: np.ndarray) -> np.ndarray | None:
        """Ask the teacher to act for these observations; None if it does not answer in time."""
        request_id = next(self.request_ids)
        self.send(self.teacher, protocol.encode("teach", request_id=request_id, obs=observations), "teach")
        deadline = time.monotonic() + self.teacher_timeout_ms / 1000
        while (remaining := deadline - time.monotonic()) > 0:
            if not self.teacher.poll(math.ceil(remaining * 1000)):
                break
            reply = self.decode(self.teacher.recv(), frozenset({"taught"}))
            if reply is not None and reply["request_id"] == request_id:  # older ids answered too late
                return reply["outputs"]
        self.counters["teacher_timeouts"] += 1
        self.log.warning("teacher_timeout", batch=len(observations), timeout_ms=self.teacher_timeout_ms)
        return None
