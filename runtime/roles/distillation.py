"""Distillation: collects teacher labels for sampled observations, trains the student continuously,
and publishes new weights (safetensors on disk + a ``weights`` message) with increasing versions."""

from __future__ import annotations

import itertools
import time

import numpy as np
import zmq
from gymnasium import spaces

from runtime import protocol, transport
from runtime.checkpoints import CheckpointStore, load_safetensors
from runtime.interfaces import StrategyInputs
from runtime.models import build_student
from runtime.pluginmanager import PluginFailure, serve
from runtime.replay import ReplayBuffer
from runtime.roles.base import Role

LABEL_TIMEOUT_S = 10.0


class Distillation(Role):
    name = "distillation"

    def setup(self) -> None:
        import torch

        self.torch = torch
        settings = self.config["distillation"]
        torch.set_num_threads(settings["torch_threads"])
        self.settings = settings
        self.student = build_student(self.plugins, self.config, self.observation_space, self.action_space)
        self.strategy_component = self.plugins.get("strategy", settings["strategy"])
        self.strategy = self.plugins.build("strategy", settings["strategy"], dict(settings["params"]))
        self.store = CheckpointStore(f"{self.config['daemon']['run_dir']}/checkpoints")
        self.version = self.store.latest()
        if self.version:  # resume: versions continue after a crash or restart
            self.student.load_state_dict(load_safetensors(self.store.path(self.version))[0])
            self.log.info("distiller_resumed", version=self.version)
        parameters = list(self.student.parameters())
        if isinstance(self.strategy, torch.nn.Module):
            parameters += list(self.strategy.parameters())
        self.optimizer = torch.optim.Adam(parameters, lr=settings["learning_rate"])
        self.buffer = ReplayBuffer(settings["buffer_samples"], settings["seed"])
        self.discrete = isinstance(self.action_space, spaces.Discrete)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # (obs, features) awaiting a teacher label
        self.pending_since = 0.0
        self.in_flight: dict[int, tuple[float, np.ndarray]] = {}  # request id -> (sent at, features)
        self.request_ids = itertools.count(1)
        self.steps_since_publish = 0
        self.last_publish = time.monotonic()
        self.train_time = 0.0
        self.agreement: float | None = None
        self.loss: float | None = None

        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.DISTILLATION_IN))
        self.teacher = self.transport.connect(zmq.DEALER, self.transport.internal(transport.TEACHER))
        self.publisher = self.transport.bind(zmq.PUB, self.transport.internal(transport.WEIGHTS))
        self.on(self.inbox, lambda sock: self.drain(sock, self.on_sample))
        self.on(self.teacher, lambda sock: self.drain(sock, self.on_labels))
        self.gauges.update(version=self.version, buffer=0, loss=None, agreement=None, train_steps_per_s=0.0)

    # --- labels ----------------------------------------------------------------------------------
    def on_sample(self, data: bytes) -> None:
        sample = self.decode(data, frozenset({"sample"}))
        if sample is None:
            return
        self.counters["samples"] += 1
        if sample["teacher_output"] is not None:  # the teacher acted: its answer is the label
            self.add_labelled(sample["features"][None], sample["teacher_output"][None])
            return
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append((sample["obs"], sample["features"]))
        if len(self.pending) >= self.settings["label_batch"]:
            self.request_labels()

    def request_labels(self) -> None:
        observations = np.stack([obs for obs, _ in self.pending])
        request_id = next(self.request_ids)
        self.in_flight[request_id] = (time.monotonic(), np.stack([features for _, features in self.pending]))
        self.pending.clear()
        self.send(self.teacher, protocol.encode("teach", request_id=request_id, obs=observations), "teach")

    def on_labels(self, data: bytes) -> None:
        reply = self.decode(data, frozenset({"taught"}))
        if reply is None:
            return
        request = self.in_flight.pop(reply["request_id"], None)
        if request is not None:
            self.add_labelled(request[1], reply["outputs"])

    def add_labelled(self, features: np.ndarray, outputs: np.ndarray) -> None:
        self.measure_agreement(features, outputs)
        self.buffer.add(features.astype(np.float32, copy=False), outputs.astype(np.float32, copy=False))
        self.counters["labels"] += len(features)
        self.gauges["buffer"] = len(self.buffer)

    def measure_agreement(self, features: np.ndarray, outputs: np.ndarray) -> None:
        """Agreement on fresh labels, before training on them: an honest online estimate."""
        with self.torch.no_grad():
            student = self.student(self.torch.as_tensor(features, dtype=self.torch.float32)).numpy()
        if self.discrete:
            agree = float((student.argmax(axis=1) == outputs.argmax(axis=1)).mean())
        else:
            width = student.shape[1]
            agree = float(np.exp(-np.mean((student - outputs[:, :width]) ** 2)))
        self.agreement = agree if self.agreement is None else 0.95 * self.agreement + 0.05 * agree
        self.gauges["agreement"] = round(self.agreement, 4)

    # --- training --------------------------------------------------------------------------------
    def poll_timeout_ms(self) -> int:
        if len(self.buffer) < self.settings["min_samples"]:
            return 20
        # Stay within the configured CPU share: rest in proportion to the time spent training.
        share = self.settings["cpu_share"]
        return int(1000 * self.train_time * (1 - share) / share)

    def tick(self) -> None:
        now = time.monotonic()
        if self.pending and now - self.pending_since > self.settings["label_wait_ms"] / 1000:
            self.request_labels()
        # A teacher that restarted never answers what it had in hand: forget those requests.
        for request_id in [i for i, (sent, _) in self.in_flight.items() if now - sent > LABEL_TIMEOUT_S]:
            self.counters["labels_lost"] += len(self.in_flight.pop(request_id)[1])
        self.train_time = 0.0
        if len(self.buffer) >= self.settings["min_samples"]:
            self.train_step()
        if self.steps_since_publish >= self.settings["steps_per_publish"] and \
                time.monotonic() - self.last_publish >= self.settings["publish_interval_s"]:
            self.publish()

    def train_step(self) -> None:
        torch = self.torch
        started = time.perf_counter()
        features, outputs = self.buffer.sample(self.settings["batch_size"])
        teacher = torch.from_numpy(outputs)
        inputs = StrategyInputs(student_outputs=self.student(torch.from_numpy(features)), teacher_outputs=teacher,
                                hard_labels=teacher.argmax(dim=1) if self.discrete else None,
                                agreement=self.agreement)
        try:
            loss = serve(self.strategy_component, self.strategy.loss, inputs)
        except PluginFailure as failure:
            self.counters["errors.PLUGIN_FAILED"] += 1
            self.log.error("plugin_failed", plugin=failure.component.plugin, hook=failure.component.hook,
                           error=str(failure.error))
            return
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.loss = loss.item()
        self.steps_since_publish += 1
        self.counters["train_steps"] += 1
        self.train_time = time.perf_counter() - started

    def publish(self) -> None:
        elapsed = time.monotonic() - self.last_publish
        self.version += 1
        metrics = {"loss": self.loss, "agreement": self.agreement, "samples": self.buffer.added}
        path = self.store.save(self.version, self.student.state_dict(),
                               {k: str(v) for k, v in metrics.items()})
        self.send(self.publisher, protocol.encode("weights", version=self.version, path=str(path)), "weights")
        self.gauges.update(version=self.version, loss=self.loss,
                           train_steps_per_s=round(self.steps_since_publish / elapsed, 1))
        self.log.info("weights_published", version=self.version, loss=round(self.loss, 5),
                      agreement=None if self.agreement is None else round(self.agreement, 4))
        self.plugins.notify("agentrt_weights_published", version=self.version, path=str(path), metrics=metrics)
        self.steps_since_publish = 0
        self.last_publish = time.monotonic()
