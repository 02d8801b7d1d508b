"""Distillation: collects teacher labels for sampled observations, trains the student continuously,
and publishes new versions through a promotion gate.

Every candidate is written as safetensors and recorded in the registry (runtime/registry.py); it is
announced to decision (``weights``) only if, on a held-out set of teacher-labelled samples that
training never sees, it is no worse than the serving version by more than
``distillation.promotion_margin``. After a crash the distiller resumes from its latest checkpoint
and version numbers continue.
"""

from __future__ import annotations

import copy
import itertools
import time

import numpy as np
import zmq
from gymnasium import spaces

from runtime import protocol, transport
from runtime.checkpoints import CheckpointStore, load_safetensors
from runtime.evaluation import agreement_and_loss, per_sample_disagreement
from runtime.interfaces import StrategyInputs
from runtime.models import build_student
from runtime.pluginmanager import PluginFailure, serve
from runtime.registry import PROMOTED, REJECTED, ROLLED_BACK, Registry
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
        self.discrete = isinstance(self.action_space, spaces.Discrete)
        self.student = build_student(self.plugins, self.config, self.observation_space, self.action_space)
        self.strategy_component = self.plugins.get("strategy", settings["strategy"])
        self.strategy = self.plugins.build("strategy", settings["strategy"], dict(settings["params"]))
        run_dir = self.config["daemon"]["run_dir"]
        self.store = CheckpointStore(f"{run_dir}/checkpoints")
        self.registry = Registry(run_dir)
        self.version = max(self.registry.latest_version(), self.store.latest())
        self.serving_version = self.registry.serving()
        self.serving_state = None
        if self.serving_version:
            self.serving_state = load_safetensors(self.store.path(self.serving_version))[0]
        if self.version:  # resume: versions continue after a crash or restart
            self.student.load_state_dict(load_safetensors(self.store.path(self.version))[0])
            self.log.info("distiller_resumed", version=self.version, serving=self.serving_version)
        self.judge = copy.deepcopy(self.student).eval()  # scratch module for scoring the serving version
        self.optimizer = self.make_optimizer()
        self.buffer = ReplayBuffer(settings["buffer_samples"], settings["buffer_bytes"], settings["eviction"],
                                   settings["prioritized"], settings["priority_alpha"], settings["seed"])
        self.heldout = ReplayBuffer(settings["heldout_samples"], settings["buffer_bytes"], seed=settings["seed"])
        self.random = np.random.default_rng(settings["seed"])
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # (obs, features) awaiting a teacher label
        self.pending_since = 0.0
        self.in_flight: dict[int, tuple[float, np.ndarray]] = {}  # request id -> (sent at, features)
        self.request_ids = itertools.count(1)
        self.steps_since_publish = 0
        self.added_at_publish = 0
        self.last_publish = time.monotonic()
        self.train_time = 0.0
        self.agreement: float | None = None
        self.loss: float | None = None

        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.DISTILLATION_IN))
        self.teacher = self.transport.connect(zmq.DEALER, self.transport.internal(transport.TEACHER))
        self.publisher = self.transport.bind(zmq.PUB, self.transport.internal(transport.WEIGHTS))
        self.control = self.transport.bind(zmq.REP, self.transport.internal(transport.DISTILLATION_CONTROL))
        self.on(self.inbox, lambda sock: self.drain(sock, self.on_sample))
        self.on(self.teacher, lambda sock: self.drain(sock, self.on_labels))
        self.on(self.control, self.on_control)
        self.gauges.update(version=self.version, serving_version=self.serving_version, buffer=0, heldout=0,
                           loss=None, agreement=None, train_steps_per_s=0.0)

    def make_optimizer(self):
        parameters = list(self.student.parameters())
        if isinstance(self.strategy, self.torch.nn.Module):
            parameters += list(self.strategy.parameters())
        return self.torch.optim.Adam(parameters, lr=self.settings["learning_rate"])

    def teardown(self) -> None:
        self.registry.close()

    # --- labels ----------------------------------------------------------------------------------
    def on_sample(self, data: bytes) -> None:
        sample = self.decode(data, frozenset({"sample"}))
        if sample is None:
            return
        self.counters["samples"] += 1
        # An acting teacher's answer is the label, unless its features are wanted too (the teacher's
        # answer cache makes asking again free).
        if sample["teacher_output"] is not None and not self.settings["teacher_features"]:
            self.add_labelled(sample["features"][None], sample["teacher_output"][None], None)
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
        self.send(self.teacher, protocol.encode("teach", request_id=request_id, obs=observations,
                                                want_features=self.settings["teacher_features"]), "teach")

    def on_labels(self, data: bytes) -> None:
        reply = self.decode(data, frozenset({"taught"}))
        if reply is None:
            return
        request = self.in_flight.pop(reply["request_id"], None)
        if request is not None:
            self.add_labelled(request[1], reply["outputs"], reply.get("features"))

    def add_labelled(self, features: np.ndarray, outputs: np.ndarray, teacher_features: np.ndarray | None) -> None:
        features = features.astype(np.float32, copy=False)
        outputs = outputs.astype(np.float32, copy=False)
        with self.torch.no_grad():
            student = self.student(self.torch.from_numpy(features)).numpy()
        # Agreement on fresh labels, before training on them: an honest online estimate.
        agree, _ = agreement_and_loss(student, outputs, self.discrete)
        self.agreement = agree if self.agreement is None else 0.95 * self.agreement + 0.05 * agree
        columns = {"features": features, "outputs": outputs}
        if teacher_features is not None:
            columns["teacher_features"] = teacher_features.reshape(len(features), -1)
        held = self.random.random(len(features)) < self.settings["heldout_share"]
        if held.any():
            self.heldout.add(**{name: column[held] for name, column in columns.items()})
        if (~held).any():
            priorities = per_sample_disagreement(student[~held], outputs[~held], self.discrete)
            self.buffer.add(priority=priorities, **{name: column[~held] for name, column in columns.items()})
        self.counters["labels"] += len(features)
        self.gauges.update(agreement=round(self.agreement, 4), buffer=len(self.buffer), heldout=len(self.heldout),
                           buffer_bytes=self.buffer.nbytes)

    # --- training --------------------------------------------------------------------------------
    def poll_timeout_ms(self) -> int:
        if len(self.buffer) < self.settings["min_samples"] or self.train_time == 0.0:
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
        cycle_done = self.steps_since_publish >= self.settings["steps_per_publish"]
        # Without new labels there is nothing new to learn: train one cycle, then rest (and publish nothing).
        new_labels = self.buffer.added > self.added_at_publish
        if len(self.buffer) >= self.settings["min_samples"] and (new_labels or not cycle_done):
            self.train_step()
        if cycle_done and new_labels and now - self.last_publish >= self.settings["publish_interval_s"]:
            self.publish_candidate()

    def train_step(self) -> None:
        torch = self.torch
        started = time.perf_counter()
        index, batch = self.buffer.sample(self.settings["batch_size"])
        teacher = torch.from_numpy(batch["outputs"])
        features = torch.from_numpy(batch["features"])
        if hasattr(self.student, "forward_features"):
            outputs, student_features = self.student.forward_features(features)
        else:
            outputs, student_features = self.student(features), None
        teacher_features = batch.get("teacher_features")
        inputs = StrategyInputs(student_outputs=outputs, teacher_outputs=teacher,
                                hard_labels=teacher.argmax(dim=1) if self.discrete else None,
                                student_features=student_features,
                                teacher_features=None if teacher_features is None else torch.from_numpy(teacher_features),
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
        if self.buffer.prioritized:
            detached = outputs.detach().numpy()
            self.buffer.update_priorities(index, per_sample_disagreement(detached, batch["outputs"], self.discrete))
        self.loss = loss.item()
        self.steps_since_publish += 1
        self.counters["train_steps"] += 1
        self.train_time = time.perf_counter() - started

    # --- versions --------------------------------------------------------------------------------
    def score(self, state) -> tuple[float | None, float | None]:
        """Held-out (agreement, loss) of a set of student weights; None while the set is too small."""
        if len(self.heldout) < self.settings["min_heldout"]:
            return None, None
        self.judge.load_state_dict(state)
        features = self.heldout.columns["features"][: len(self.heldout)]
        with self.torch.no_grad():
            outputs = self.judge(self.torch.from_numpy(features)).numpy()
        return agreement_and_loss(outputs, self.heldout.columns["outputs"][: len(self.heldout)], self.discrete)

    def publish_candidate(self) -> None:
        elapsed = time.monotonic() - self.last_publish
        state = {name: tensor.detach().clone() for name, tensor in self.student.state_dict().items()}
        candidate_agreement, candidate_loss = self.score(state)
        serving_agreement = self.score(self.serving_state)[0] if self.serving_state is not None else None
        promoted = candidate_agreement is None or serving_agreement is None or \
            candidate_agreement >= serving_agreement - self.settings["promotion_margin"]
        self.version += 1
        path = self.store.save(self.version, state, {"loss": str(self.loss), "agreement": str(self.agreement),
                                                     "parent": str(self.serving_version)})
        self.registry.record(self.version, self.serving_version or None, self.buffer.added, self.counters["train_steps"],
                             candidate_agreement, candidate_loss, serving_agreement,
                             PROMOTED if promoted else REJECTED, str(path))
        self.gauges.update(version=self.version, loss=self.loss, train_steps_per_s=round(self.steps_since_publish / elapsed, 1))
        self.steps_since_publish = 0
        self.last_publish = time.monotonic()
        self.added_at_publish = self.buffer.added
        if not promoted:
            self.counters["candidates_rejected"] += 1
            self.log.warning("candidate_rejected", version=self.version, heldout_agreement=candidate_agreement,
                             serving_version=self.serving_version, serving_agreement=serving_agreement)
            self.prune_checkpoints()
            return
        self.serve_version(self.version, str(path), state)
        metrics = {"loss": self.loss, "agreement": self.agreement, "heldout_agreement": candidate_agreement,
                   "samples": self.buffer.added}
        self.log.info("weights_published", version=self.version, loss=round(self.loss, 5),
                      heldout_agreement=candidate_agreement, serving_agreement=serving_agreement)
        self.plugins.notify("agentrt_weights_published", version=self.version, path=str(path), metrics=metrics)
        self.prune_checkpoints()

    def serve_version(self, version: int, path: str, state) -> None:
        self.serving_version = version
        self.serving_state = state
        self.gauges["serving_version"] = version
        self.send(self.publisher, protocol.encode("weights", version=version, path=path), "weights")

    def prune_checkpoints(self) -> None:
        keep = self.settings["keep_checkpoints"]
        for version in self.store.versions()[:-keep]:
            if version != self.serving_version:
                self.store.path(version).unlink(missing_ok=True)

    # --- control ---------------------------------------------------------------------------------
    def on_control(self, sock: zmq.Socket) -> None:
        request = self.decode(sock.recv(), frozenset({"control"}))
        if request is None:
            sock.send(protocol.encode("control_reply", ok=False, message="malformed request"))
            return
        if request["command"] != "rollback":
            sock.send(protocol.encode("control_reply", ok=False, message=f"unknown command {request['command']!r}"))
            return
        try:
            target = self.registry.rollback_target(request.get("args", {}).get("to"))
        except ValueError as exc:
            sock.send(protocol.encode("control_reply", ok=False, message=str(exc)))
            return
        previous = self.serving_version
        state = load_safetensors(target.path)[0]
        self.registry.set_status(previous, ROLLED_BACK)
        self.registry.serve(target.version, f"rollback from {previous}")
        # Train on from the restored weights: the newer ones were judged worse by a person.
        self.student.load_state_dict(state)
        self.optimizer = self.make_optimizer()
        self.serve_version(target.version, target.path, state)
        self.log.warning("student_rolled_back", version=target.version, previous=previous)
        sock.send(protocol.encode("control_reply", ok=True, result={"serving": target.version, "previous": previous}))
