"""The objects that plugins hand to the runtime. Hook specifications (runtime/hookspecs.py) return these.

Arrays crossing these interfaces are numpy arrays: batched along the first axis for teachers and
query policies, one observation or action at a time for perception transforms and execution
filters. Students and distillation strategies work on torch tensors inside the torch processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from runtime.wire.spaces import Space

if TYPE_CHECKING:  # torch is imported only by the processes that run models
    import torch


@runtime_checkable
class Student(Protocol):
    """A ``torch.nn.Module``: ``forward(x)`` maps a float32 batch (B, *features) to
    (B, output_size); its weights travel as ``state_dict()`` between distillation and decision."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> Any: ...


@runtime_checkable
class Teacher(Protocol):
    """Labels observations. Runs in the teacher process (and inside the distiller for offline work)."""

    def label(self, observations: np.ndarray) -> np.ndarray:
        """Return outputs (B, output_size): logits for a discrete action space, actions for a box.

        A box teacher may return (B, 2 * output_size): means followed by variances.
        """
        ...


# --- optional capabilities: checked once, with isinstance, where the component is built ---------


@runtime_checkable
class ForwardFeatures(Protocol):
    """A student that exposes hidden features, for feature-hint strategies."""

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs (B, output_size), features (B, ...))."""
        ...


@runtime_checkable
class ForwardMembers(Protocol):
    """An ensemble student: its members' outputs, whose spread query policies see as
    ``QueryContext.member_outputs``; decision acts on their mean."""

    def forward_members(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, output_size)."""
        ...


@runtime_checkable
class LabelWithFeatures(Protocol):
    """A teacher that also gives its hidden activations, for feature-hint strategies
    (``distillation.teacher_features = true``)."""

    def label_with_features(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(outputs (B, output_size), features (B, ...))."""
        ...


@runtime_checkable
class Calibrated(Protocol):
    """A discrete teacher that knows the temperature at which its probabilities are calibrated:
    ``softmax(outputs / temperature)``. Checked once where the teacher is built; the value reaches
    the strategy as ``StrategyInputs.teacher_temperature`` (over the wire in the daemon)."""

    @property
    def temperature(self) -> float | None:
        """The calibrated temperature; None when this teacher has none (an uncalibrated file)."""
        ...


@runtime_checkable
class OnDevice(Protocol):
    """A teacher that can run on an accelerator (``teacher.device``, ``teacher.dtype``). Checked once
    where the teacher is built; ``label`` still takes and returns host (numpy) arrays."""

    def place(self, device: torch.device, dtype: torch.dtype) -> None:
        """Move the model to ``device`` in ``dtype``; inputs move there per call, outputs come back."""
        ...


@dataclass
class StrategyInputs:
    """What a distillation strategy sees for one minibatch (torch tensors, first axis = batch)."""

    student_outputs: torch.Tensor
    teacher_outputs: torch.Tensor
    hard_labels: torch.Tensor | None = None
    student_features: torch.Tensor | None = None
    teacher_features: torch.Tensor | None = None
    agreement: float | None = None  # the student's recent agreement with the teacher, 0..1
    teacher_temperature: float | None = None  # the teacher's calibrated temperature (Calibrated), if any


@runtime_checkable
class DistillationStrategy(Protocol):
    """Turns student and teacher outputs into a scalar loss to minimise."""

    def loss(self, inputs: StrategyInputs) -> torch.Tensor: ...


@dataclass
class QueryContext:
    """What a query policy knows about one batch of observations in the decision process."""

    features: np.ndarray  # (B, ...) features the student saw
    student_outputs: np.ndarray  # (B, output_size)
    student_version: int  # 0 while no trained student has been published
    action_space: Space
    # Per observation: "auto", "student" or "teacher", as the peer asked; "student" also where the
    # peer already took its share of labels (runtime.learn.loop.LabelShare).
    forced: list[str] = field(default_factory=list)
    # (K, B, output_size) when the student is a ForwardMembers (an ensemble), else None
    member_outputs: np.ndarray | None = None
    observations: np.ndarray | None = None  # (B, ...) raw observations, as the teacher would see them
    # Seconds on the runtime's clock at this batch: monotonic time in the daemon, simulated time in
    # a benchmark. Policies that ration answers over time read it instead of keeping a clock.
    now: float = field(default_factory=time.monotonic)


@dataclass
class QueryDecision:
    """Per observation: ask the teacher for a label, and let the teacher act instead of the student."""

    label: np.ndarray  # bool (B,)
    teacher_acts: np.ndarray  # bool (B,); an acting teacher's output is also used as the label


@runtime_checkable
class QueryPolicy(Protocol):
    def decide(self, context: QueryContext) -> QueryDecision: ...


class StreamStep:
    """Base for perception transforms and execution filters: a step applied to one stream's items.

    A stream is one peer's sequence of observations (or actions), keyed by ``stream`` (bytes); a
    step that keeps per-stream state (frame stacks, the previous action) drops it in ``reset``,
    which the runtime calls when that stream starts a new episode. Streams that vanish are never
    announced, so keep per-stream state bounded (least recently used out). ``output_space`` is
    the space of what the step returns, so the student can be built for the features it will see.
    """

    output_space: Space

    def __call__(self, item: np.ndarray, stream: bytes) -> np.ndarray:
        raise NotImplementedError

    def reset(self, stream: bytes) -> None:
        """Forget ``stream``; stateless steps need not override this."""


# Factories registered by plugins. ``params`` is the plugin's own table from agentrt.toml. A factory
# that also takes a keyword ``context`` gets a ``runtime.plugin.pluginmanager.BuildContext``.
StudentFactory = Callable[[dict[str, Any], Space, Space], "torch.nn.Module"]
TeacherFactory = Callable[[dict[str, Any], Space, Space], Teacher]
# A strategy gets the action space, to refuse one it cannot learn (``runtime.plugin.params.discrete_space``).
StrategyFactory = Callable[[dict[str, Any], Space], DistillationStrategy]
QueryPolicyFactory = Callable[[dict[str, Any]], QueryPolicy]
# Perception transforms get the space of their input; execution filters get the action space.
StepFactory = Callable[[dict[str, Any], Space], StreamStep]
