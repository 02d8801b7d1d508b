"""Teacher: labels batches of observations for decision (acting) and distillation (labels)."""

from __future__ import annotations

import math
import sys
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import zmq

from runtime.config import endpoint_security
from runtime.errors import ConfigError, PluginFailure, ProtocolError
from runtime.learn.device import placement
from runtime.learn.evaluation import teacher_columns_error
from runtime.learn.models import build_teacher, teacher_temperature
from runtime.plugin.interfaces import LabelWithFeatures, OnDevice
from runtime.plugin.pluginmanager import serve
from runtime.roles.base import DRAIN_LIMIT, Role
from runtime.wire import protocol, transport
from runtime.wire.keys import ClientKeys
from runtime.wire.protocol import ErrorCode
from runtime.wire.spaces import output_size

# What one entry costs beyond its key's and arrays' bytes and the ordered dict's table (bytes and
# array headers, the tuple, the dict's node): 197-201 measured with tracemalloc on CPython 3.11.
# The table itself (sys.getsizeof), which churn leaves up to twice the size a fresh dict needs, is
# counted as it is: so the byte bound is what the process pays (tests/test_teachers.py measures it).
ENTRY_OVERHEAD_BYTES = 200


class AnswerCache:
    """Teacher answers keyed by the observation's bytes (optionally rounded), least recently used
    out once either bound, entries or bytes (``held_bytes``), is passed."""

    def __init__(self, size: int, decimals: int, max_bytes: int) -> None:
        self.size = size
        self.decimals = decimals
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.entries: OrderedDict[bytes, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def key(self, observation: np.ndarray) -> bytes:
        if self.decimals >= 0 and observation.dtype.kind == "f":
            observation = np.round(observation, self.decimals)
        return observation.dtype.str.encode() + repr(observation.shape).encode() + observation.tobytes()

    def get(self, key: bytes, want_features: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
        entry = self.entries.get(key)
        if entry is None or (want_features and entry[1] is None):
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, key: bytes, outputs: np.ndarray, features: np.ndarray | None) -> None:
        if self.size == 0 or self._cost(key, (outputs, features)) > self.max_bytes:
            return
        if key in self.entries:
            self.nbytes -= self._cost(key, self.entries[key])
        self.entries[key] = (outputs, features)
        self.entries.move_to_end(key)
        self.nbytes += self._cost(key, (outputs, features))
        while self.entries and (len(self.entries) > self.size or self.held_bytes > self.max_bytes):
            self.nbytes -= self._cost(*self.entries.popitem(last=False))

    @property
    def held_bytes(self) -> int:
        """The entries' bytes and the table that holds them."""
        return self.nbytes + sys.getsizeof(self.entries)

    @staticmethod
    def _cost(key: bytes, entry: tuple[np.ndarray, np.ndarray | None]) -> int:
        outputs, features = entry
        return len(key) + outputs.nbytes + (0 if features is None else features.nbytes) + ENTRY_OVERHEAD_BYTES


Answer = tuple[np.ndarray, np.ndarray | None]  # the teacher's outputs for one observation, and its features


class TeacherRole(Role):
    """Serves the configured teacher on the internal ``teacher`` socket; joining from another host
    (``agentrt role teacher --connect``), it dials decision's and the distiller's instead; run on
    its own by ``agentrt teacher serve --endpoint``, it binds a TCP endpoint for the ``remote``
    teacher plugin."""

    name = "teacher"

    def __init__(
        self,
        config: dict[str, Any],
        supervised: bool = True,
        endpoint: str | None = None,
        joining: bool = False,
        keys: ClientKeys | None = None,
        heartbeat_file: str | None = None,
    ) -> None:
        super().__init__(config, supervised, joining, keys, heartbeat_file)
        self.endpoint = endpoint

    def setup(self) -> None:
        if self.endpoint is not None:
            # The endpoint the `remote` teacher plugin dials has no CURVE: beyond loopback only when
            # the user accepts it, as for the peer endpoint.
            security = endpoint_security(
                self.endpoint,
                False,
                self.settings.security.insecure,
                "the teacher endpoint",
                "anyone who reaches it can use the teacher: run it as agentrt role teacher --connect "
                "(CURVE) instead, or bind 127.0.0.1",
            )
            if security == "insecure":
                self.log.warning("teacher_endpoint_insecure", endpoint=self.endpoint)
        import torch

        torch.set_num_threads(1)
        settings = self.settings.teacher
        self.component = self.plugins.get("teacher", settings.plugin)
        self.teacher = build_teacher(self.plugins, self.settings, self.observation_space, self.action_space)
        self.cache = AnswerCache(settings.cache_size, settings.cache_decimals, settings.cache_bytes)
        self.features_wanted = self.settings.distillation.teacher_features
        self.gives_features = isinstance(self.teacher, LabelWithFeatures)
        self.temperature = teacher_temperature(self.teacher)
        if self.features_wanted and not self.gives_features:
            raise ConfigError(
                f"distillation.teacher_features is on, but teacher {settings.plugin!r} has no label_with_features"
            )
        if self.joining:  # the daemon's side binds: a teacher on a GPU host needs no port opened to it
            self.server = self.transport.connect(
                zmq.ROUTER,
                self.transport.internal(transport.TEACH_DECISION),
                also=self.transport.internal(transport.TEACH_DISTILLATION),
            )
        else:
            self.server = self.transport.bind(zmq.ROUTER, self.endpoint or self.transport.internal(transport.TEACHER))
        # Where the model runs (teacher.device, teacher.dtype), in the log and in status.
        placed = str(placement(self.settings, "teacher")) if isinstance(self.teacher, OnDevice) else "host"
        self.log.info(
            "teacher_serving",
            endpoint=self.server.getsockopt_string(zmq.LAST_ENDPOINT),
            plugin=settings.plugin,
            placement=placed,
        )
        self.on(self.server, self.on_request)
        self.batch_max = settings.batch_max
        self.batch_wait_s = settings.batch_wait_ms / 1000
        # Widths of the NaN rows that stand for observations the teacher could not label, from its
        # first answer (before any: the action space's). Every answer must keep them: rows of
        # several answers go out in one reply.
        self.output_width = output_size(self.action_space)
        self.features_width = 1
        self.answered = self.features_known = False
        self.gauges.update(latency_us=0.0, placement=placed)

    def on_request(self, sock: zmq.Socket) -> None:
        """Take the requests that arrived together (decision's and the distiller's), up to
        ``teacher.batch_max`` observations, waiting up to ``teacher.batch_wait_ms`` for more, and
        answer them with one call of the teacher: a GPU teacher is used at batch."""
        requests: list[tuple[bytes, protocol.Message]] = []
        observations = 0
        deadline: float | None = None
        while len(requests) < DRAIN_LIMIT and observations < self.batch_max:
            try:
                identity, data = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                now = time.monotonic()
                deadline = now + self.batch_wait_s if deadline is None else deadline
                if requests and now < deadline and sock.poll(math.ceil((deadline - now) * 1000)):
                    continue
                break
            except ValueError:  # not two frames: internal senders never do this
                self.counters["errors.MALFORMED_MESSAGE"] += 1
                continue
            request = self.decode(data, frozenset({"teach"}))
            if request is None:
                continue
            try:
                self.check_batch(request["obs"])
            except ProtocolError as exc:  # a malformed batch (anyone may reach `agentrt teacher serve`)
                self.count_error(exc.code, detail=exc.message)
                continue
            requests.append((identity, request))
            observations += len(request["obs"])
        if not requests:
            return
        replies = self.answer([request for _, request in requests])
        for (identity, _), reply in zip(requests, replies, strict=True):
            self.send(sock, [identity, reply], "taught")

    def check_batch(self, observations: np.ndarray) -> None:
        shape = tuple(self.observation_space.shape or ())
        if observations.ndim != 1 + len(shape) or len(observations) == 0 or observations.shape[1:] != shape:
            raise ProtocolError(
                ErrorCode.WRONG_SHAPE,
                f"teach: a batch of shape {list(observations.shape)} does not hold observations of shape {list(shape)}",
            )

    def label(self, observations: np.ndarray, want_features: bool) -> list[Answer | None]:
        """The teacher plugin's answer per observation, None where it failed. What it returns is
        checked, so a bad teacher fails as a plugin; a row whose output is not finite fails alone."""
        whole = self.label_once(observations, want_features)
        return whole if whole is not None else self.label_apart(observations, want_features)

    def label_apart(self, observations: np.ndarray, want_features: bool) -> list[Answer | None]:
        """``observations`` failed as one call: each half is asked on its own, so that one poison
        observation costs the others nothing. Where both halves fail too, the teacher is taken to
        be failing rather than the observations (a few calls, not one per observation)."""
        if len(observations) == 1:
            return [None]
        middle = len(observations) // 2
        parts = (observations[:middle], observations[middle:])
        halves = [self.label_once(part, want_features) for part in parts]
        if all(half is None for half in halves):
            return [None] * len(observations)
        answers: list[Answer | None] = []
        for half, part in zip(halves, parts, strict=True):
            answers += half if half is not None else self.label_apart(part, want_features)
        return answers

    def label_once(self, observations: np.ndarray, want_features: bool) -> list[Answer | None] | None:
        """One call of the teacher plugin; None if it raised or returned the wrong shape (logged)."""
        try:
            if want_features:
                outputs, features = serve(self.component, self.teacher.label_with_features, observations)
                features = np.asarray(features, dtype=np.float32).reshape(len(observations), -1)
            else:
                outputs, features = serve(self.component, self.teacher.label, observations), None
            outputs = np.asarray(outputs, dtype=np.float32)
            problem = self.shape_problem(outputs, features, len(observations))
            if problem is not None:
                raise PluginFailure(self.component, ValueError(f"label() returned {problem}"))
        except PluginFailure as failure:
            self.log_plugin_failure(failure)
            self.counters["errors.PLUGIN_FAILED"] += 1
            return None
        finite = np.isfinite(outputs).all(axis=1)
        if features is not None:
            finite &= np.isfinite(features).all(axis=1)
            self.features_width, self.features_known = features.shape[1], True
        self.output_width, self.answered = outputs.shape[1], True
        if not finite.all():  # those rows go back as NaN; the others are answers
            self.log_plugin_failure(
                PluginFailure(
                    self.component,
                    ValueError(f"label() returned NaN or infinity in {int((~finite).sum())} of {len(finite)} rows"),
                )
            )
            self.counters["errors.PLUGIN_FAILED"] += 1
        # Copies: a row view would keep its whole batch alive as long as the cache keeps the row.
        return [
            (outputs[row].copy(), None if features is None else features[row].copy()) if finite[row] else None
            for row in range(len(observations))
        ]

    def shape_problem(self, outputs: np.ndarray, features: np.ndarray | None, rows: int) -> str | None:
        """What is wrong with an answer's shape, or None."""
        if outputs.ndim != 2 or len(outputs) != rows:
            return f"shape {list(outputs.shape)} for {rows} observations; expected ({rows}, k)"
        columns = teacher_columns_error(outputs.shape[1], output_size(self.action_space))
        if columns is not None:
            return columns
        if self.answered and outputs.shape[1] != self.output_width:
            return f"{outputs.shape[1]} columns; its earlier answers had {self.output_width}"
        if features is not None and self.features_known and features.shape[1] != self.features_width:
            return f"{features.shape[1]} features per observation; its earlier answers had {self.features_width}"
        return None

    @property
    def failed_outputs(self) -> np.ndarray:
        return np.full(self.output_width, np.nan, dtype=np.float32)

    @property
    def failed_features(self) -> np.ndarray:
        return np.full(self.features_width, np.nan, dtype=np.float32)

    def answer(self, requests: list[protocol.Message]) -> list[bytes]:
        """Label checked ``teach`` requests together, asking the teacher only for observations it
        has not answered before; one ``taught`` reply per request."""
        # With feature hints on, features are computed for every answer, so that the distiller's
        # later request for an observation the teacher already acted on is a cache hit.
        want_features = (
            any(request.get("want_features") for request in requests) and self.gives_features or self.features_wanted
        )
        observations = np.concatenate([request["obs"] for request in requests])
        keys = [self.cache.key(obs) for obs in observations]
        known: dict[bytes, Any] = {key: self.cache.get(key, want_features) for key in keys}
        missing = {
            key: index for index, key in reversed(list(enumerate(keys))) if known[key] is None
        }  # first index per key
        if missing:
            started = time.perf_counter()
            answers = self.label(observations[list(missing.values())], want_features)
            self.gauges["latency_us"] = (time.perf_counter() - started) * 1e6 / len(missing)
            for key, answer in zip(missing, answers, strict=True):
                known[key] = answer
                if answer is not None:
                    self.cache.put(key, *answer)
            failed = answers.count(None)
            if failed:
                self.counters["labels_failed"] += failed
                self.log_repeated("labels_failed", "warning", "labels_failed", observations=failed)
            self.counters["labels"] += len(missing) - failed
        self.counters["cache_hits"] += len(keys) - len(missing)
        self.counters["requests"] += len(requests)
        self.counters["batches"] += 1
        replies = []
        start = 0
        for request in requests:
            answers = [known[key] for key in keys[start : start + len(request["obs"])]]
            start += len(request["obs"])
            # A row the teacher could not label is NaN: the requester keeps what it had for it.
            fields: dict[str, Any] = {
                "outputs": np.stack([self.failed_outputs if a is None else a[0] for a in answers]),
                "temperature": self.temperature,
            }
            if request.get("want_features") and want_features:
                fields["features"] = np.stack(
                    [self.failed_features if a is None or a[1] is None else a[1] for a in answers]
                )
            replies.append(protocol.encode("taught", request_id=request["request_id"], **fields))
        return replies
