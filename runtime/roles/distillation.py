"""Distillation: collects teacher labels for sampled observations, trains the student continuously,
and publishes new versions through a promotion gate. The learning itself is
``runtime.learn.loop.Learner``; this role batches label requests to the teacher, writes candidates
to disk and the registry, and announces promoted ones.

Every candidate is written as safetensors and recorded in the registry (runtime/learn/registry.py); it is
announced to decision (``weights``) only if, on a held-out set of teacher-labelled samples that
training never sees, it is no worse than the serving version by more than
``distillation.promotion_margin``. After a crash the distiller puts the registry right
(``Registry.recover``, or a rebuild from the checkpoints if it is damaged), resumes from its latest
readable checkpoint (unreadable ones are quarantined) with the replay buffer and held-out set saved
beside it, and version numbers continue.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import zmq

from runtime import rundir
from runtime.errors import AgentrtError, CheckpointError, ConfigError
from runtime.files import disk_full
from runtime.learn import registry
from runtime.learn.checkpoints import LEARNER_DATA, read_arrays, read_checkpoint, read_metadata, save_arrays
from runtime.learn.loop import Candidate, Learner, Progress
from runtime.learn.registry import CHECKPOINTS, PROMOTED, REJECTED, ROLLED_BACK
from runtime.learn.trainer import Weights
from runtime.roles.base import Role
from runtime.wire import protocol, transport
from runtime.wire.protocol import ErrorCode

LABEL_TIMEOUT_S = 10.0
# On a full disk, how often writing the held candidates is tried again.
DISK_RETRY_S = 2.0
# Training steps failing in a row before status says "training": "failing".
TRAINING_FAILING_AFTER = 20


class Distillation(Role):
    name = "distillation"

    def setup(self) -> None:
        import torch

        torch.set_num_threads(self.settings.distillation.torch_threads)
        self.learner = Learner(self.plugins, self.settings, self.observation_space, self.action_space)
        run_dir = self.settings.daemon.run_dir
        self.learner_data = Path(run_dir) / CHECKPOINTS / LEARNER_DATA
        self.registry, damaged_moved_to = registry.open_writable(run_dir)
        self.log_recovery(replace(self.registry.recover(), damaged_moved_to=damaged_moved_to))
        # Versions whose file cannot be read are quarantined here, and the next one down is taken.
        serving_version, serving_state = self.readable(self.registry.serving)
        trained_from, state = self.readable(self.newest_trainable)
        version = self.registry.latest_version()
        try:
            # Loading fails now, not mid-training, if the student changed shape.
            self.learner.resume(version, trained_from, state, serving_version, serving_state)
        except RuntimeError as exc:
            # torch lists every tensor that differs, one per line: the first says enough.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            first = lines[1] if len(lines) > 1 else lines[0]
            raise ConfigError(
                f"the student checkpoints in {run_dir} do not fit the configured student (trained for another "
                "student or agent): use another run directory, or remove its checkpoints/ and students.sqlite "
                f"(first difference: {first})"
            ) from None
        if version:  # versions continue after a crash or restart
            self.log.info("distiller_resumed", version=version, trained_from=trained_from, serving=serving_version)
        self.restore_learner_data()
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # (obs, features) awaiting a teacher label
        self.failed_steps = 0  # training steps failed in a row
        self.pending_since = 0.0
        self.in_flight: dict[int, tuple[float, np.ndarray]] = {}  # request id -> (sent at, features)
        self.request_ids = itertools.count(1)
        # The teacher's calibrated temperature comes with its answers (``taught``): until one has
        # come, acting answers are asked again (a cache hit), so no sample trains at an unknown one.
        self.heard_teacher = False
        self.unwritten: list[Candidate] = []  # judged, not yet on disk: the disk is full
        self.retry_write_at = 0.0

        self.inbox = self.transport.bind(zmq.PULL, self.transport.internal(transport.DISTILLATION_IN))
        self.teacher = self.teacher_socket(transport.TEACH_DISTILLATION)
        self.publisher = self.transport.bind(zmq.PUB, self.transport.internal(transport.WEIGHTS))
        self.control = self.transport.bind(zmq.REP, self.transport.internal(transport.DISTILLATION_CONTROL))
        self.on(self.inbox, lambda sock: self.drain(sock, self.on_sample))
        self.on(self.teacher, lambda sock: self.drain(sock, self.on_labels))
        self.on(self.control, self.on_control)
        stats = self.learner.stats()
        self.gauges.update(
            version=version,
            serving_version=serving_version,
            buffer=stats.buffer,
            heldout=stats.heldout,
            loss=None,
            agreement=None,
            train_steps_per_s=0.0,
            disk_full=False,
        )

    def teardown(self) -> None:
        try:
            self.save_learner_data()  # the labels since the last candidate, too
        except OSError as exc:
            self.log.warning("learner_data_not_saved", error=str(exc))
        self.registry.close()

    # --- state on disk ---------------------------------------------------------------------------
    def log_recovery(self, found: registry.Recovery) -> None:
        if found.damaged_moved_to is not None:
            self.counters["registry_rebuilt"] += 1
            self.log.error("registry_rebuilt", damaged_moved_to=str(found.damaged_moved_to), adopted=found.adopted)
        elif found.adopted:
            self.log.warning("versions_recorded_from_files", versions=found.adopted)
        if found.temp_files_removed:
            self.log.info("temp_files_removed", files=found.temp_files_removed)
        if found.discarded:
            self.log.warning("unfinished_versions_discarded", versions=found.discarded)
        if found.dropped:
            self.log.warning("versions_without_file_dropped", versions=found.dropped)
        for version, reason in found.quarantined.items():
            self.note_quarantine(self.registry.store.quarantined(version), reason, version=version)
        if found.serving is not None:
            self.log.warning("serving_version_recovered", before=found.serving[0], serving=found.serving[1])

    def readable(self, choose: Callable[[], int]) -> tuple[int, Weights | None]:
        """The version ``choose`` names and its weights (a built student for a compressed version),
        quarantining versions that cannot be read until one can (0 and None when none is left)."""
        while version := choose():
            record = self.registry.get(version)
            path = self.registry.store.path(version)
            try:
                return version, self.weights(path)
            except CheckpointError as exc:
                self.note_quarantine(self.registry.quarantine(version), str(exc), version=version)
                if record is None:  # not recorded, so quarantining cannot change what ``choose`` names
                    break
        return 0, None

    @staticmethod
    def weights(path: Path) -> Weights:
        """A checkpoint's weights (``weights_of``); CheckpointError if it cannot be read or loaded."""
        from runtime.learn.nets import weights_of

        tensors, metadata = read_checkpoint(path)
        try:
            return weights_of(tensors, metadata)
        except (ValueError, RuntimeError) as exc:  # a compressed student whose metadata and weights disagree
            raise CheckpointError(f"{path} cannot be loaded: {exc}") from exc

    def newest_trainable(self) -> int:
        """The newest version training can go on from: a compressed one has another shape than the
        configured student (its float ancestors do not), so it is passed over (0: none)."""
        from runtime.learn.nets import is_compressed

        for record in reversed(self.registry.versions()):
            if record.status == registry.QUARANTINED:
                continue
            try:
                if is_compressed(read_metadata(self.registry.file(record))):
                    continue
            except CheckpointError:
                pass  # ``readable`` quarantines it
            return record.version
        return 0

    def restore_learner_data(self) -> None:
        """Refill the replay buffer and held-out set saved with the last checkpoint, so that a restart
        goes on learning from them instead of from nothing."""
        if not self.learner_data.exists():
            return
        try:
            self.learner.restore_data(*read_arrays(self.learner_data))
        except CheckpointError as exc:
            self.note_quarantine(self.registry.store.quarantine(self.learner_data), str(exc), file=LEARNER_DATA)
            return
        except ValueError as exc:  # saved under another configuration: start from no labels
            self.log.warning("learner_data_not_restored", error=str(exc))
            return
        stats = self.learner.stats()
        self.log.info("learner_data_restored", buffer=stats.buffer, heldout=stats.heldout)

    def save_learner_data(self) -> None:
        save_arrays(self.learner_data, *self.learner.data())

    # --- labels ----------------------------------------------------------------------------------
    def on_sample(self, data: bytes) -> None:
        sample = self.decode(data, frozenset({"sample"}))
        if sample is None:
            return
        self.counters["samples"] += 1
        # An acting teacher's answer is the label, unless its features are wanted too or its
        # temperature is not known yet (the teacher's answer cache makes asking again free).
        answered = sample["teacher_output"] is not None and self.heard_teacher
        if answered and not self.settings.distillation.teacher_features:
            self.add_labelled(sample["features"][None], sample["teacher_output"][None], None)
            return
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append((sample["obs"], sample["features"]))
        if len(self.pending) >= self.settings.distillation.label_batch:
            self.request_labels()

    def request_labels(self) -> None:
        observations = np.stack([obs for obs, _ in self.pending])
        request_id = next(self.request_ids)
        self.in_flight[request_id] = (time.monotonic(), np.stack([features for _, features in self.pending]))
        self.pending.clear()
        self.send(
            self.teacher,
            protocol.encode(
                "teach",
                request_id=request_id,
                obs=observations,
                want_features=self.settings.distillation.teacher_features,
            ),
            "teach",
        )

    def on_labels(self, data: bytes) -> None:
        reply = self.decode(data, frozenset({"taught"}))
        if reply is None:
            return
        request = self.in_flight.pop(reply["request_id"], None)
        if not self.heard_teacher:
            self.heard_teacher = True
            self.learner.trainer.teacher_temperature = reply.get("temperature")
            self.log.info("teacher_temperature", temperature=reply.get("temperature"))
        if request is None:
            return
        features, outputs, teacher_features = request[1], reply["outputs"], reply.get("features")
        if outputs.ndim != 2 or len(outputs) != len(features):
            self.count_error(ErrorCode.WRONG_SHAPE, detail=f"taught: outputs {list(outputs.shape)} for {len(features)}")
            return
        # NaN rows are observations the teacher could not label: learnt from, they would poison the student.
        labelled = np.isfinite(outputs).all(axis=1)
        if teacher_features is not None:
            labelled &= np.isfinite(teacher_features).all(axis=1)
            teacher_features = teacher_features[labelled]
        self.counters["labels_failed"] += int((~labelled).sum())
        if labelled.any():
            self.add_labelled(features[labelled], outputs[labelled], teacher_features)

    def add_labelled(self, features: np.ndarray, outputs: np.ndarray, teacher_features: np.ndarray | None) -> None:
        self.learner.add_labels(features, outputs, teacher_features)
        self.counters["labels"] += len(features)
        stats = self.learner.stats()
        self.gauges.update(
            agreement=None if stats.agreement is None else round(stats.agreement, 4),
            buffer=stats.buffer,
            heldout=stats.heldout,
            buffer_bytes=stats.buffer_bytes,
            buffer_evicted=stats.buffer_evicted,
        )

    # --- training --------------------------------------------------------------------------------
    def poll_timeout_ms(self) -> int:
        if self.unwritten:  # training waits for the disk
            return min(100, max(0, math.ceil((self.retry_write_at - time.monotonic()) * 1000)))
        wait_s = self.learner.next_step_in()
        if wait_s is None:
            return 20  # still wake up to send a partly filled label batch in time
        return min(100, math.ceil(wait_s * 1000))

    def tick(self) -> None:
        now = time.monotonic()
        if self.pending and now - self.pending_since > self.settings.distillation.label_wait_ms / 1000:
            self.request_labels()
        # A teacher that restarted never answers what it had in hand: forget those requests.
        for request_id in [i for i, (sent, _) in self.in_flight.items() if now - sent > LABEL_TIMEOUT_S]:
            self.counters["labels_lost"] += len(self.in_flight.pop(request_id)[1])
        if self.unwritten:
            # No training while the disk is full: the held candidates go out first, in order, so that
            # versions and their parents stay in sequence, and no more pile up in memory.
            if now >= self.retry_write_at:
                self.write_candidates(now)
            return
        progress = self.learner.tick()
        self.counters["train_steps"] += progress.steps
        for failure in progress.failures:
            self.counters["errors.PLUGIN_FAILED"] += 1
            self.log_plugin_failure(failure)
        self.note_training(progress)
        # Resting: trained a cycle on what it has, and waits for new labels (nothing new to learn).
        self.gauges["resting"] = self.learner.next_step_in() is None
        self.unwritten.extend(progress.candidates)
        self.write_candidates(now)

    def write_candidates(self, now: float) -> None:
        """Publish the judged candidates in order. A full disk (ENOSPC, EDQUOT, SQLITE_FULL) keeps
        them, shows ``disk_full`` in status and tries again every DISK_RETRY_S, until space returns;
        ``publish`` is therefore safe to call again for a candidate it failed to write."""
        while self.unwritten:
            try:
                self.publish(self.unwritten[0])
            except (OSError, sqlite3.Error) as exc:
                if not disk_full(exc):
                    raise
                if not self.gauges["disk_full"]:
                    self.counters["disk_full"] += 1
                    self.log.error("disk_full", version=self.unwritten[0].version, error=str(exc))
                self.gauges["disk_full"] = True
                self.retry_write_at = now + DISK_RETRY_S
                return
            self.unwritten.pop(0)
        if self.gauges["disk_full"]:
            self.log.warning("disk_space_returned")
            self.gauges["disk_full"] = False

    def note_training(self, progress: Progress) -> None:
        """``training`` is "failing" in status once TRAINING_FAILING_AFTER steps in a row failed (with
        the last reason), and "ok" again after a step succeeds: a broken strategy is seen, not only logged."""
        if progress.steps:
            self.failed_steps = 0
        self.failed_steps += len(progress.failures)
        if progress.failures:
            self.gauges["training_error"] = rundir.one_line(str(progress.failures[-1]))
        failing = self.failed_steps >= TRAINING_FAILING_AFTER
        self.gauges["training"] = "failing" if failing else "ok"
        if not failing:
            self.gauges.pop("training_error", None)

    # --- versions --------------------------------------------------------------------------------
    def publish(self, candidate: Candidate) -> None:
        """Record a judged candidate and write its checkpoint (one transaction), save the labels
        learnt from with it, and announce it if it was promoted."""
        version, verdict = candidate.version, candidate.verdict
        record = registry.VersionRecord(
            version,
            candidate.parent,
            time.time(),
            candidate.samples,
            candidate.train_steps,
            verdict.heldout_agreement,
            verdict.heldout_loss,
            verdict.serving_agreement,
            PROMOTED if candidate.promoted else REJECTED,
            registry.checkpoint_path(version),
        )
        path = self.registry.add(record, candidate.state)
        self.save_learner_data()
        self.gauges.update(version=version, loss=candidate.loss, train_steps_per_s=candidate.steps_per_s)
        if not candidate.promoted:
            self.counters["candidates_rejected"] += 1
            self.log.warning(
                "candidate_rejected",
                version=version,
                heldout_agreement=verdict.heldout_agreement,
                serving_version=candidate.serving_before,
                serving_agreement=verdict.serving_agreement,
            )
            self.prune()
            return
        self.announce(version, str(path))
        metrics = {
            "loss": candidate.loss,
            "agreement": candidate.agreement,
            "heldout_agreement": verdict.heldout_agreement,
            "samples": candidate.samples,
        }
        self.log.info(
            "weights_published",
            version=version,
            loss=None if candidate.loss is None else round(candidate.loss, 5),
            heldout_agreement=verdict.heldout_agreement,
            serving_agreement=verdict.serving_agreement,
        )
        self.plugins.notify("agentrt_weights_published", version=version, path=str(path), metrics=metrics)
        self.prune()

    def announce(self, version: int, path: str) -> None:
        self.gauges["serving_version"] = version
        weights = protocol.encode("weights", version=version, path=path, announced_at=time.time())
        self.send(self.publisher, weights, "weights")

    def prune(self) -> None:
        pruned = self.registry.prune(self.settings.distillation.keep_versions)
        if pruned:
            self.log.debug("versions_pruned", versions=pruned)

    # --- control ---------------------------------------------------------------------------------
    def on_control(self, sock: zmq.Socket) -> None:
        request = self.decode(sock.recv(), frozenset({"control"}))
        try:
            if request is None:
                raise ValueError("malformed request")
            if request["command"] != "rollback":
                raise ValueError(f"unknown command {request['command']!r}")
            result = self.rollback(request.get("args", {}).get("to"))
        except (ValueError, OSError, RuntimeError, AgentrtError) as exc:  # the CLI waits for an answer, always
            sock.send(protocol.encode("control_reply", ok=False, message=str(exc)))
            return
        sock.send(protocol.encode("control_reply", ok=True, result=result))

    def rollback(self, to: int | None) -> dict[str, int]:
        if to is not None and not isinstance(to, int):
            raise ValueError(f"rollback: version must be an integer, not {to!r}")
        target = self.registry.rollback_target(to)
        try:
            state = self.weights(self.registry.file(target))
        except CheckpointError as exc:
            self.note_quarantine(self.registry.quarantine(target.version), str(exc), version=target.version)
            raise
        previous = self.learner.serving_version
        self.registry.set_status(previous, ROLLED_BACK)
        self.registry.serve(target.version, f"rollback from {previous}")
        # Train on from the restored weights: the newer ones were judged worse by a person.
        self.learner.restore(target.version, state)
        self.announce(target.version, str(self.registry.file(target)))
        self.log.warning("student_rolled_back", version=target.version, previous=previous)
        return {"serving": target.version, "previous": previous}
