"""Distillation: collects teacher labels for sampled observations, trains the student continuously,
and publishes new versions through a promotion gate.

Every candidate is written as safetensors and recorded in the registry (runtime/learn/registry.py); it is
announced to decision (``weights``) only if, on a held-out set of teacher-labelled samples that
training never sees, it is no worse than the serving version by more than
``distillation.promotion_margin``. After a crash the distiller resumes from its latest checkpoint
and version numbers continue.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import zmq

from runtime.errors import ConfigError
from runtime.learn.checkpoints import CheckpointStore, load_safetensors
from runtime.learn.registry import PROMOTED, REJECTED, ROLLED_BACK, Registry
from runtime.learn.trainer import Trainer
from runtime.plugin.pluginmanager import PluginFailure
from runtime.roles.base import Role
from runtime.wire import protocol, transport

LABEL_TIMEOUT_S = 10.0


class Distillation(Role):
    name = "distillation"

    def setup(self) -> None:
        import torch

        settings = self.config["distillation"]
        torch.set_num_threads(settings["torch_threads"])
        self.settings = settings
        self.trainer = Trainer(self.plugins, self.config, self.observation_space, self.action_space)
        run_dir = self.config["daemon"]["run_dir"]
        self.store = CheckpointStore(f"{run_dir}/checkpoints")
        self.registry = Registry(run_dir)
        self.version = max(self.registry.latest_version(), self.store.latest())
        self.serving_version = self.registry.serving()
        self.serving_state = None
        try:
            if self.serving_version:
                self.serving_state = load_safetensors(self.store.path(self.serving_version))[0]
                self.trainer.scratch.load_state_dict(self.serving_state)  # fails now if the student changed shape
            if self.version:  # resume: versions continue after a crash or restart
                self.trainer.load(load_safetensors(self.store.path(self.version))[0])
                self.log.info("distiller_resumed", version=self.version, serving=self.serving_version)
        except (RuntimeError, OSError) as exc:
            raise ConfigError(f"the student checkpoints in {run_dir} do not fit the configured student ({exc}); "
                             "use another run directory, or remove its checkpoints/ and students.sqlite") from None
        self.trained_from = self.version or None  # the version the weights in training started from
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # (obs, features) awaiting a teacher label
        self.pending_since = 0.0
        self.in_flight: dict[int, tuple[float, np.ndarray]] = {}  # request id -> (sent at, features)
        self.request_ids = itertools.count(1)
        self.steps_since_publish = 0
        self.added_at_publish = 0
        self.last_publish = time.monotonic()
        self.next_train_at = 0.0

        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.DISTILLATION_IN))
        self.teacher = self.transport.connect(zmq.DEALER, self.transport.internal(transport.TEACHER))
        self.publisher = self.transport.bind(zmq.PUB, self.transport.internal(transport.WEIGHTS))
        self.control = self.transport.bind(zmq.REP, self.transport.internal(transport.DISTILLATION_CONTROL))
        self.on(self.inbox, lambda sock: self.drain(sock, self.on_sample))
        self.on(self.teacher, lambda sock: self.drain(sock, self.on_labels))
        self.on(self.control, self.on_control)
        self.gauges.update(version=self.version, serving_version=self.serving_version, buffer=0, heldout=0,
                           loss=None, agreement=None, train_steps_per_s=0.0)

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
        self.trainer.add_labelled(features, outputs, teacher_features)
        self.counters["labels"] += len(features)
        self.gauges.update(agreement=round(self.trainer.agreement, 4), buffer=len(self.trainer.buffer),
                           heldout=len(self.trainer.heldout), buffer_bytes=self.trainer.buffer.nbytes,
                           buffer_evicted=self.trainer.buffer.evicted)

    # --- training --------------------------------------------------------------------------------
    def poll_timeout_ms(self) -> int:
        if not self.wants_training():
            return 20  # still wake up to send a partly filled label batch in time
        return min(100, math.ceil(max(0.0, self.next_train_at - time.monotonic()) * 1000))

    def wants_training(self) -> bool:
        # Without new labels there is nothing new to learn: train one cycle, then rest (and publish nothing).
        cycle_done = self.steps_since_publish >= self.settings["steps_per_publish"]
        return self.trainer.ready() and (self.trainer.buffer.added > self.added_at_publish or not cycle_done)

    def tick(self) -> None:
        now = time.monotonic()
        if self.pending and now - self.pending_since > self.settings["label_wait_ms"] / 1000:
            self.request_labels()
        # A teacher that restarted never answers what it had in hand: forget those requests.
        for request_id in [i for i, (sent, _) in self.in_flight.items() if now - sent > LABEL_TIMEOUT_S]:
            self.counters["labels_lost"] += len(self.in_flight.pop(request_id)[1])
        if self.wants_training() and now >= self.next_train_at:
            spent = self.train_step()
            # Stay within the configured CPU share: rest in proportion to the time spent training.
            share = self.settings["cpu_share"]
            self.next_train_at = time.monotonic() + spent * (1 - share) / share
        if self.steps_since_publish >= self.settings["steps_per_publish"] and self.trainer.buffer.added > self.added_at_publish \
                and now - self.last_publish >= self.settings["publish_interval_s"]:
            self.publish_candidate()

    def train_step(self) -> float:
        """One training step; returns the seconds it took."""
        started = time.perf_counter()
        try:
            self.trainer.train_step()
        except PluginFailure as failure:
            self.counters["errors.PLUGIN_FAILED"] += 1
            self.log_plugin_failure(failure)
        else:
            self.steps_since_publish += 1
            self.counters["train_steps"] += 1
        return time.perf_counter() - started

    # --- versions --------------------------------------------------------------------------------
    def publish_candidate(self) -> None:
        elapsed = time.monotonic() - self.last_publish
        state = self.trainer.state()
        verdict = self.trainer.judge(state, self.serving_state)
        self.version += 1
        path = self.store.save(self.version, state, {"loss": str(self.trainer.loss), "agreement": str(self.trainer.agreement),
                                                     "parent": str(self.serving_version)})
        self.registry.record(self.version, self.trained_from, self.trainer.buffer.added, self.counters["train_steps"],
                             verdict.heldout_agreement, verdict.heldout_loss, verdict.serving_agreement,
                             PROMOTED if verdict.promoted else REJECTED, str(path))
        self.gauges.update(version=self.version, loss=self.trainer.loss, train_steps_per_s=round(self.steps_since_publish / elapsed, 1))
        self.steps_since_publish = 0
        self.last_publish = time.monotonic()
        self.added_at_publish = self.trainer.buffer.added
        self.trained_from = self.version  # training goes on from these weights, promoted or not
        if not verdict.promoted:
            self.counters["candidates_rejected"] += 1
            self.log.warning("candidate_rejected", version=self.version, heldout_agreement=verdict.heldout_agreement,
                             serving_version=self.serving_version, serving_agreement=verdict.serving_agreement)
            self.prune_checkpoints()
            return
        self.serve_version(self.version, str(path), state)
        metrics = {"loss": self.trainer.loss, "agreement": self.trainer.agreement, "heldout_agreement": verdict.heldout_agreement,
                   "samples": self.trainer.buffer.added}
        self.log.info("weights_published", version=self.version, loss=round(self.trainer.loss, 5),
                      heldout_agreement=verdict.heldout_agreement, serving_agreement=verdict.serving_agreement)
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
        try:
            if request is None:
                raise ValueError("malformed request")
            if request["command"] != "rollback":
                raise ValueError(f"unknown command {request['command']!r}")
            result = self.rollback(request.get("args", {}).get("to"))
        except (ValueError, OSError, RuntimeError) as exc:  # the CLI waits for an answer, whatever happens
            sock.send(protocol.encode("control_reply", ok=False, message=str(exc)))
            return
        sock.send(protocol.encode("control_reply", ok=True, result=result))

    def rollback(self, to: int | None) -> dict[str, int]:
        if to is not None and not isinstance(to, int):
            raise ValueError(f"rollback: version must be an integer, not {to!r}")
        target = self.registry.rollback_target(to)
        state = load_safetensors(target.path)[0]
        previous = self.serving_version
        self.registry.set_status(previous, ROLLED_BACK)
        self.registry.serve(target.version, f"rollback from {previous}")
        # Train on from the restored weights: the newer ones were judged worse by a person.
        self.trainer.load(state)
        self.trained_from = target.version
        self.serve_version(target.version, target.path, state)
        self.log.warning("student_rolled_back", version=target.version, previous=previous)
        return {"serving": target.version, "previous": previous}
