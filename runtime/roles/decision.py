"""Decision: the student picks actions in batches; the query policy decides when the teacher acts
or labels; new student weights are swapped in between batches."""

from __future__ import annotations

import itertools
import time

import numpy as np
import zmq
from gymnasium import spaces

from runtime.learn import registry
from runtime.learn.checkpoints import CheckpointStore, load_safetensors
from runtime.learn.evaluation import teacher_policy_outputs
from runtime.learn.models import build_student
from runtime.plugin.interfaces import QueryContext
from runtime.plugin.pluginmanager import PluginFailure, serve
from runtime.roles.base import Role
from runtime.wire import protocol, transport
from runtime.wire.protocol import ErrorCode
from runtime.wire.spaces import actions_from_outputs


class Decision(Role):
    name = "decision"

    def setup(self) -> None:
        import torch

        self.torch = torch
        torch.set_num_threads(self.config["decision"]["torch_threads"])
        self.student = build_student(self.plugins, self.config, self.observation_space, self.action_space).eval()
        self.student_component = self.plugins.get("student", self.config["student"]["plugin"])
        query = self.config["query"]
        self.policy_component = self.plugins.get("query_policy", query["policy"])
        self.policy = self.plugins.build("query_policy", query["policy"], dict(query["params"]))
        self.version = 0
        serving = registry.serving_version(self.config["daemon"]["run_dir"])
        if serving:
            self.swap_in(serving, str(CheckpointStore(f"{self.config['daemon']['run_dir']}/checkpoints").path(serving)))
        self.discrete = isinstance(self.action_space, spaces.Discrete)
        self.batch_max = self.config["decision"]["batch_max"]
        self.teacher_timeout_ms = self.config["teacher"]["timeout_ms"]
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
        self.gauges.update(student_version=self.version, student_latency_us=0.0)

    # --- weights ---------------------------------------------------------------------------------
    def on_weights(self, data: bytes) -> None:
        message = self.decode(data, frozenset({"weights"}))
        if message is not None and message["version"] != self.version:
            self.swap_in(message["version"], message["path"])

    def swap_in(self, version: int, path: str) -> None:
        try:
            state, _ = load_safetensors(path)
            self.student.load_state_dict(state)
        except (OSError, RuntimeError, ValueError) as exc:  # keep serving the current version
            self.counters["weights_rejected"] += 1
            self.log.error("weights_rejected", version=version, path=path, error=str(exc))
            return
        self.version = version
        self.gauges["student_version"] = version
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
        observations = np.stack([m["obs"] for m in batch])
        try:
            started = time.perf_counter()
            with self.torch.no_grad():
                inputs = self.torch.from_numpy(features)
                if hasattr(self.student, "forward_members"):  # an ensemble: its members' spread informs the policy
                    members = serve(self.student_component, self.student.forward_members, inputs).numpy()
                    outputs = members.mean(axis=0)
                else:
                    members, outputs = None, serve(self.student_component, self.student, inputs).numpy()
            self.gauges["student_latency_us"] = (time.perf_counter() - started) * 1e6 / len(batch)
            context = QueryContext(features=features, student_outputs=outputs, student_version=self.version,
                                   action_space=self.action_space, forced=[m["policy"] for m in batch],
                                   member_outputs=members, observations=observations)
            choice = serve(self.policy_component, self.policy.decide, context)
        except PluginFailure as failure:
            for message in batch:
                self.plugin_failed(failure, self.returns, message["route"], message["seq"])
            return
        decided_by = np.array(["student"] * len(batch), dtype=object)
        teacher_outputs = np.full(len(batch), None, dtype=object)
        # A student that outputs NaN or infinity must not act: the teacher stands in.
        broken = ~np.isfinite(outputs).all(axis=1)
        self.counters["student_not_finite"] += int(broken.sum())
        acting = np.flatnonzero(choice.teacher_acts | broken)
        if len(acting):
            answer = self.ask_teacher(observations[acting])
            if answer is not None:
                outputs = outputs.copy()
                outputs[acting] = teacher_policy_outputs(answer, outputs.shape[1], self.discrete)
                decided_by[acting] = "teacher"
                self.counters["decided_by_teacher"] += len(acting)
                for row, index in enumerate(acting):
                    teacher_outputs[index] = answer[row]
        actions = actions_from_outputs(outputs, self.action_space)
        for index, message in enumerate(batch):
            if not np.isfinite(outputs[index]).all():  # the teacher could not stand in either
                self.reply_error(self.returns, message["route"], ErrorCode.UNAVAILABLE,
                                 "the student produced a non-finite output and the teacher did not answer", message["seq"])
                continue
            self.send(self.to_execution, protocol.encode(
                "decided", route=message["route"], seq=message["seq"], action=actions[index],
                student_version=self.version, decided_by=decided_by[index], new_episode=message["new_episode"]), "decided")
            if choice.label[index]:
                self.counters["labels_requested"] += 1
                self.send(self.to_distiller, protocol.encode(
                    "sample", obs=message["obs"], features=features[index], teacher_output=teacher_outputs[index]), "sample")
        self.counters["decisions"] += len(batch)
        self.counters["batches"] += 1

    def ask_teacher(self, observations: np.ndarray) -> np.ndarray | None:
        """Ask the teacher to act for these observations; None if it does not answer in time."""
        request_id = next(self.request_ids)
        self.send(self.teacher, protocol.encode("teach", request_id=request_id, obs=observations), "teach")
        deadline = time.monotonic() + self.teacher_timeout_ms / 1000
        while (remaining := deadline - time.monotonic()) > 0:
            if not self.teacher.poll(remaining * 1000):
                break
            reply = self.decode(self.teacher.recv(), frozenset({"taught"}))
            if reply is not None and reply["request_id"] == request_id:  # older ids answered too late
                return reply["outputs"]
        self.counters["teacher_timeouts"] += 1
        self.log.warning("teacher_timeout", batch=len(observations), timeout_ms=self.teacher_timeout_ms)
        return None
