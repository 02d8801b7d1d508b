"""Built-in teachers: a torch checkpoint (safetensors), a scripted callable, a remote teacher
served by ``agentrt teacher serve``, an ensemble of teachers, a teacher that reads one part of
the observation (``view``), and one teacher per task (``tasks``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from plugins.perception import VIEW_PARAMS
from runtime import hookimpl
from runtime.plugin.params import (
    Param,
    Validator,
    and_,
    declare,
    ge,
    in_,
    invalid,
    list_of,
    number,
    optional,
    positive_int,
    string,
    view_space,
)
from runtime.wire.protocol import DEFAULT_MAX_MESSAGE_BYTES
from runtime.wire.spaces import output_size, shape_of

if TYPE_CHECKING:  # the transport imports zmq: only a remote teacher, once used, needs it
    from runtime.plugin.pluginmanager import BuildContext
    from runtime.wire.transport import Socket, Transport

ASSETS = Path(__file__).parent / "assets"
BUILTIN_CHECKPOINTS = {
    "cartpole": ASSETS / "cartpole_teacher.safetensors",
    "pendulum": ASSETS / "pendulum_teacher.safetensors",
    "acrobot": ASSETS / "acrobot_teacher.safetensors",
    "mountaincar": ASSETS / "mountaincar_teacher.safetensors",
    "inverted_double_pendulum": ASSETS / "inverted_double_pendulum_teacher.safetensors",
    # A CNN over pixels (agentrt/MountainCarFrames-v0): the GPU-sized example, examples/mountaincar_cnn.toml.
    "mountaincar_cnn": ASSETS / "mountaincar_cnn_teacher.safetensors",
}


def resolve_checkpoint(path: str) -> Path:
    """``builtin:<name>`` names a checkpoint shipped with agentrt; anything else is a file path."""
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        if name not in BUILTIN_CHECKPOINTS:
            raise ValueError(f"no built-in teacher checkpoint {name!r}; available: {', '.join(BUILTIN_CHECKPOINTS)}")
        return BUILTIN_CHECKPOINTS[name]
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ValueError(f"teacher checkpoint {path} does not exist")
    return resolved


class TorchTeacher:
    """A torch module used as a teacher: ``label`` runs it without gradients, on the device and in
    the dtype ``place`` moved it to (``teacher.device``, ``teacher.dtype``; the CPU in float32 until
    then), taking and returning host arrays. ``temperature`` is its calibrated temperature
    (``runtime.plugin.interfaces.Calibrated``), None if it has none."""

    def __init__(self, module, temperature: float | None = None) -> None:
        import torch

        from runtime.learn.device import on_host

        self._torch = torch
        self.module = module.eval()
        self.temperature = temperature
        self.where = on_host("teacher")

    def place(self, device, dtype) -> None:
        from runtime.learn.device import Placement

        self.where = Placement(device, dtype, "teacher")
        self.where.module(self.module)

    def label(self, observations: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            return self.where.host(self.module(self.where.inputs(observations)))

    def label_with_features(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs and the network's last hidden layer, for feature-hint distillation."""
        with self._torch.no_grad():
            outputs, features = self.module.forward_features(self.where.inputs(observations))
        return self.where.host(outputs), self.where.host(features)


@declare(
    "teacher checkpoint",
    path=Param(
        "builtin:cartpole",
        f"safetensors file, or builtin:<name> for one shipped with agentrt ({', '.join(BUILTIN_CHECKPOINTS)})",
        string,
    ),
)
def build_checkpoint_teacher(
    params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space
) -> TorchTeacher:
    """A teacher network stored as safetensors (an MLP, or a CNN over pixels); its architecture, and
    its calibrated temperature if it has one (``python -m runtime.learn.recipes.calibrate``), are
    read from the file's metadata."""
    from runtime.learn.calibration import stored_temperature
    from runtime.learn.checkpoints import load_safetensors
    from runtime.learn.nets import from_architecture

    state, metadata = load_safetensors(resolve_checkpoint(params["path"]))
    try:
        module = from_architecture(metadata)
        temperature = stored_temperature(metadata)
    except ValueError as exc:
        raise ValueError(f"teacher checkpoint {params['path']}: {exc} in the file's metadata") from None
    if module.input_shape != shape_of(observation_space):
        raise ValueError(
            f"teacher checkpoint {params['path']} expects observations of shape {list(module.input_shape)}, "
            f"the agent has {list(shape_of(observation_space))}"
        )
    if module.output_size != output_size(action_space):
        raise ValueError(
            f"teacher checkpoint {params['path']} has {module.output_size} outputs, "
            f"the action space needs {output_size(action_space)}"
        )
    module.load_state_dict(state)
    return TorchTeacher(module, temperature)


class ScriptedTeacher:
    """Any Python callable ``f(observations) -> outputs`` used as a teacher (controllers, planners, rules)."""

    def __init__(self, function: Callable[[np.ndarray], np.ndarray]) -> None:
        self.function = function

    def label(self, observations: np.ndarray) -> np.ndarray:
        return np.asarray(self.function(observations), dtype=np.float32)


def _module_and_name(value: Any) -> bool:
    module_name, _, attribute = value.partition(":")
    return bool(module_name and attribute)


@declare(
    "teacher scripted",
    callable=Param(
        "",
        "the teacher, f(observations) -> outputs (required)",
        and_(string, Validator("like 'package.module:function'", _module_and_name)),
    ),
)
def build_scripted_teacher(
    params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space
) -> ScriptedTeacher:
    """A teacher given as ``callable = "package.module:function"``, mapping a batch of observations to outputs."""
    module_name, _, attribute = params["callable"].partition(":")
    return ScriptedTeacher(getattr(importlib.import_module(module_name), attribute))


class RemoteTeacher:
    """A teacher served by ``agentrt teacher serve`` on another host (a GPU box, say), over ZeroMQ.

    Speaks the internal ``teach``/``taught`` messages on a DEALER socket; a request unanswered
    within ``timeout_ms`` raises TimeoutError (the requester then keeps the student's action, or
    asks again later for a label). The socket is made on first use, in the process that uses it.
    """

    def __init__(self, endpoint: str, timeout_ms: int, max_message_bytes: int) -> None:
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.max_message_bytes = max_message_bytes
        self.request_id = 0
        self.transport: Transport | None = None
        self.socket: Socket | None = None

    def _connected(self) -> tuple[Transport, Socket]:
        """The transport and its DEALER socket, made on first use."""
        if self.transport is None or self.socket is None:
            import zmq

            from runtime.wire.transport import Transport

            self.transport = Transport(None, self.max_message_bytes, linger_ms=0)
            self.socket = self.transport.connect(zmq.DEALER, self.endpoint)
        return self.transport, self.socket

    def label(self, observations: np.ndarray) -> np.ndarray:
        from runtime.wire import protocol

        transport, socket = self._connected()
        self.request_id += 1
        socket.send(protocol.encode("teach", request_id=self.request_id, obs=np.asarray(observations)))
        deadline = self.timeout_ms
        while socket.poll(deadline):
            reply = protocol.decode(socket.recv(), transport.socket_limit(), accept=frozenset({"taught"}))
            if reply["request_id"] == self.request_id:  # older ids are late answers to timed-out requests
                return reply["outputs"]
        raise TimeoutError(f"remote teacher at {self.endpoint} did not answer within {self.timeout_ms} ms")


@declare(
    "teacher remote",
    endpoint=Param(
        "",
        "where agentrt teacher serve listens (required)",
        and_(string, Validator("a ZeroMQ endpoint such as 'tcp://gpu-box:7412'", lambda v: "://" in v)),
    ),
    timeout_ms=Param(1000, "a request unanswered this long fails", positive_int),
    max_message_bytes=Param(DEFAULT_MAX_MESSAGE_BYTES, "largest answer accepted", positive_int),
)
def build_remote_teacher(
    params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space
) -> RemoteTeacher:
    """A teacher on another host: ``endpoint = "tcp://gpu-box:7412"`` (see ``agentrt teacher serve``)."""
    return RemoteTeacher(params["endpoint"], params["timeout_ms"], params["max_message_bytes"])


def place_members(members: list[Any], device: Any, dtype: Any) -> None:
    """Place the members of a composite teacher that can run on a device; the others (scripted,
    remote) stay where they are."""
    from runtime.plugin.interfaces import OnDevice

    for member in members:
        if isinstance(member, OnDevice):
            member.place(device, dtype)


class EnsembleTeacher:
    """Several teachers answering together.

    ``combine``: "mean_probs" (discrete: average the members' softmax distributions, weighted,
    each at its calibrated temperature if it has one, and return its log as logits: calibrated at
    ``temperature`` 1 when any member is), "mean" (weighted mean of outputs, for box actions) or
    "stack" (concatenate the members' raw outputs, (B, K * A), for the ``multi_teacher`` strategy).
    """

    def __init__(self, members: list, weights: np.ndarray, combine: str) -> None:
        from runtime.learn.models import teacher_temperature

        self.members = members
        self.weights = weights
        self.combine = combine
        calibrated = [teacher_temperature(member) for member in members]  # checked once, here
        self.member_temperatures = np.array([t or 1.0 for t in calibrated])[:, None, None]
        self.temperature = 1.0 if combine == "mean_probs" and any(calibrated) else None

    def place(self, device: Any, dtype: Any) -> None:
        place_members(self.members, device, dtype)

    def label(self, observations: np.ndarray) -> np.ndarray:
        outputs = np.stack([np.asarray(member.label(observations), dtype=np.float64) for member in self.members])
        if self.combine == "stack":
            return np.concatenate(list(outputs), axis=1).astype(np.float32)
        if self.combine == "mean":
            return np.tensordot(self.weights, outputs, axes=1).astype(np.float32)
        outputs = outputs / self.member_temperatures
        shifted = np.exp(outputs - outputs.max(axis=2, keepdims=True))
        probabilities = shifted / shifted.sum(axis=2, keepdims=True)
        mixture = np.tensordot(self.weights, probabilities, axes=1)
        return np.log(np.maximum(mixture, 1e-12)).astype(np.float32)


def _names_a_teacher(member: Any) -> bool:
    return (
        isinstance(member, dict)
        and isinstance(member.get("plugin"), str)
        and isinstance(member.get("params", {}), dict)
    )


@declare(
    "teacher ensemble",
    members=Param(
        [],
        'at least two teachers: [{plugin = "checkpoint", params = {...}}, ...]',
        list_of(Validator("a table {plugin = name, params = {...}}", _names_a_teacher), min_length=2),
    ),
    weights=Param(
        [], "one weight >= 0 per member, not all zero (empty: equal)", list_of(and_(number, ge(0)), min_length=0)
    ),
    combine=Param(
        None,
        "mean_probs (the default for a discrete action space), mean (for a box) or stack",
        optional(in_("mean_probs", "mean", "stack")),
    ),
)
def build_ensemble_teacher(
    params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space, *, context: BuildContext
) -> EnsembleTeacher:
    """Several teachers answering together, combined by weight; members are built by name through
    the loaded plugins, so third-party teachers can join too."""
    members = params["members"]
    weights = np.asarray(params["weights"] or [1.0] * len(members), dtype=np.float64)
    if len(weights) != len(members) or weights.sum() <= 0:
        raise invalid("teacher ensemble", "weights", "one number >= 0 per member, not all zero", params["weights"])
    combine = params["combine"] or ("mean_probs" if isinstance(action_space, spaces.Discrete) else "mean")
    built = [
        context.plugins.build(
            "teacher", member["plugin"], dict(member.get("params", {})), observation_space, action_space
        )
        for member in members
    ]
    return EnsembleTeacher(built, weights / weights.sum(), combine)


_TEACHER_TABLE = Param(
    None,
    "the teacher that reads the part: {plugin = name, params = {...}} (required)",
    Validator("a table {plugin = name, params = {...}}", _names_a_teacher),
)


class ViewTeacher:
    """Another teacher, shown only elements ``start:stop`` of each flattened observation."""

    def __init__(self, teacher: Any, start: int, stop: int, shape: tuple[int, ...]) -> None:
        self.teacher = teacher
        self.start, self.stop, self.shape = start, stop, shape

    def place(self, device: Any, dtype: Any) -> None:
        place_members([self.teacher], device, dtype)

    def label(self, observations: np.ndarray) -> np.ndarray:
        part = np.asarray(observations).reshape(len(observations), -1)[:, self.start : self.stop]
        return np.asarray(self.teacher.label(part.reshape(len(observations), *self.shape)), dtype=np.float32)


@declare("teacher view", teacher=_TEACHER_TABLE, **VIEW_PARAMS)
def build_view_teacher(
    params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space, *, context: BuildContext
) -> ViewTeacher:
    """A teacher that sees one part of the observation (the state, where the student sees pixels;
    one task's features): ``teacher`` is built for that part's space, as the ``view`` transform cuts it."""
    start, stop = params["start"], params["stop"]
    part = view_space("teacher view", observation_space, start, stop, params["shape"])
    inner = params["teacher"]
    teacher = context.plugins.build("teacher", inner["plugin"], dict(inner.get("params", {})), part, action_space)
    return ViewTeacher(teacher, start, stop, part.shape)


# A task's missing actions get this much less than its least likely action: at temperature T their
# probability is at most exp(-_ABSENT_MARGIN / T) of that action's, never the teacher's choice.
_ABSENT_MARGIN = 30.0


class TaskTeacher:
    """One teacher per task; the observation's first ``len(members)`` elements are a one-hot task id.

    Each row goes to its task's teacher; a task with fewer actions than the agent has its outputs
    padded with logits below its own (see ``_ABSENT_MARGIN``), so the student learns never to pick
    an action the task does not have.
    """

    def __init__(self, members: list[Any], actions: list[int], width: int) -> None:
        self.members, self.actions, self.width = members, actions, width

    def place(self, device: Any, dtype: Any) -> None:
        place_members(self.members, device, dtype)

    def label(self, observations: np.ndarray) -> np.ndarray:
        flat = np.asarray(observations).reshape(len(observations), -1)
        tasks = flat[:, : len(self.members)].argmax(axis=1)
        outputs = np.zeros((len(flat), self.width), dtype=np.float32)
        for task, (member, actions) in enumerate(zip(self.members, self.actions, strict=True)):
            rows = np.flatnonzero(tasks == task)
            if len(rows):
                logits = np.asarray(member.label(observations[rows]), dtype=np.float32)
                outputs[rows, :actions] = logits
                outputs[rows, actions:] = logits.min(axis=1, keepdims=True) - _ABSENT_MARGIN
        return outputs


def _names_a_task_teacher(member: Any) -> bool:
    return _names_a_teacher(member) and isinstance(member.get("actions"), int) and member["actions"] >= 1


@declare(
    "teacher tasks",
    members=Param(
        [],
        "one teacher per task, in task-id order: [{plugin = name, params = {...}, actions = n}, ...]",
        list_of(
            Validator("a table {plugin = name, params = {...}, actions = n >= 1}", _names_a_task_teacher), min_length=2
        ),
    ),
)
def build_task_teacher(
    params: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space, *, context: BuildContext
) -> TaskTeacher:
    """One teacher per task for a discrete agent serving several tasks; the observation starts with a
    one-hot task id (runtime/peer/envs.py makes such observations). Member k sees the whole
    observation (a ``view`` teacher picks its part) and answers for its own ``actions``."""
    members = params["members"]
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError("teacher tasks: needs a discrete action space")
    too_many = [member["actions"] for member in members if member["actions"] > action_space.n]
    if too_many:
        raise invalid("teacher tasks", "members", f"actions <= the agent's {action_space.n}", too_many)
    built = [
        context.plugins.build(
            "teacher",
            member["plugin"],
            dict(member.get("params", {})),
            observation_space,
            spaces.Discrete(member["actions"]),
        )
        for member in members
    ]
    return TaskTeacher(built, [member["actions"] for member in members], output_size(action_space))


def cartpole_controller(observations: np.ndarray) -> np.ndarray:
    """The linear state-feedback controller the built-in CartPole teacher was distilled from, as logits."""
    from runtime.learn.recipes.cartpole import expert_logits

    return expert_logits(observations)


@hookimpl
def agentrt_register_teachers() -> dict[str, Any]:
    return {
        "checkpoint": build_checkpoint_teacher,
        "scripted": build_scripted_teacher,
        "remote": build_remote_teacher,
        "ensemble": build_ensemble_teacher,
        "view": build_view_teacher,
        "tasks": build_task_teacher,
    }
