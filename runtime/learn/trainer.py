"""Training the student, independent of any socket: replay buffer, held-out set, strategy,
optimizer, online agreement and held-out scoring. ``runtime.learn.loop.Learner`` drives it (the
distillation role, the benchmark); ``agentrt distill`` uses its optimiser, step and agreement."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from gymnasium import spaces

from runtime.config import Settings
from runtime.errors import PluginFailure
from runtime.learn.device import placement
from runtime.learn.evaluation import agreement_and_loss, per_sample_disagreement, teacher_policy_outputs
from runtime.learn.models import build_student
from runtime.learn.replay import ReplayBuffer
from runtime.plugin.interfaces import ForwardFeatures, StrategyInputs
from runtime.plugin.pluginmanager import Component, Plugins, serve
from runtime.wire.spaces import output_size

if TYPE_CHECKING:
    import torch

#: A student's weights: a state dict of the configured student, or a built student of another
#: shape (a compressed version, see ``runtime.learn.compress``).
Weights: TypeAlias = "dict[str, Any] | torch.nn.Module"

#: What the strategy is told about the labels (``StrategyInputs``), saved with them by ``data``.
LABEL_CONTEXT = ("teacher_temperature", "agreement")

#: How fast the running agreement forgets: each new sample weighs as if 0.95 of the past remained.
AGREEMENT_DECAY = 0.95


def running_agreement(previous: float | None, agreement: float, samples: int) -> float:
    """The running agreement after ``agreement`` was measured on ``samples`` fresh samples.

    Weighted by samples, so that one teacher-acted sample does not count as much as a batch."""
    if previous is None:
        return agreement
    return previous + (1 - AGREEMENT_DECAY**samples) * (agreement - previous)


def forward_with_features(module: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(outputs, hidden features or None): features where the network exposes ``forward_features``."""
    if isinstance(module, ForwardFeatures):
        return module.forward_features(inputs)
    return module(inputs), None


class Optimiser:
    """Adam over a module and a strategy's own parameters, including those a strategy creates on
    its first loss call (a feature projection sized from the data); ``weight_decay`` is Adam's L2
    penalty (the offline baseline's regulariser)."""

    def __init__(
        self, module: torch.nn.Module, learning_rate: float, strategy: Any = None, weight_decay: float = 0.0
    ) -> None:
        import torch

        self.torch = torch
        self.module = module
        self.strategy = strategy if isinstance(strategy, torch.nn.Module) else None
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.reset()

    def reset(self) -> None:
        """Forget the moment estimates (after loading other weights)."""
        parameters = list(self.module.parameters())
        if self.strategy is not None:
            parameters += list(self.strategy.parameters())
        self.adam = self.torch.optim.Adam(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)

    def step(self, loss: torch.Tensor) -> float:
        """One gradient step on ``loss``; returns its value."""
        if self.strategy is not None:
            known = {id(p) for group in self.adam.param_groups for p in group["params"]}
            fresh = [p for p in self.strategy.parameters() if id(p) not in known]
            if fresh:
                self.adam.add_param_group({"params": fresh})
        self.adam.zero_grad()
        loss.backward()
        self.adam.step()
        return loss.item()


def strategy_loss(component: Component, strategy: Any, inputs: StrategyInputs) -> torch.Tensor:
    """The strategy's loss for one minibatch; a failure, or a loss that cannot be minimised, is a
    PluginFailure naming the strategy (NaN must never reach the optimizer)."""
    import torch

    loss = serve(component, strategy.loss, inputs)
    if not (isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)):
        raise PluginFailure(
            component, ValueError(f"loss() must return a finite scalar tensor with a gradient, got {loss!r:.80}")
        )
    return loss


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    heldout_agreement: float | None
    heldout_loss: float | None
    serving_agreement: float | None


class Trainer:
    def __init__(
        self, plugins: Plugins, settings: Settings, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        import torch

        self.torch = torch
        self.settings = distillation = settings.distillation
        self.discrete = isinstance(action_space, spaces.Discrete)
        # Float32 weights on the device; distillation.dtype is the forward pass's (autocast).
        self.where = placement(settings, "distillation")
        self.student = build_student(plugins, settings, observation_space, action_space).to(self.where.device)
        self.student_component = plugins.get("student", settings.student.plugin)
        self.width = output_size(action_space)
        self.scratch = copy.deepcopy(self.student).eval()  # for scoring other weights
        self.strategy_component = plugins.get("strategy", distillation.strategy)
        self.strategy = plugins.build("strategy", distillation.strategy, dict(distillation.params), action_space)
        if isinstance(self.strategy, torch.nn.Module):  # its own parameters (a projection) train beside
            self.strategy.to(self.where.device)
        self.optimiser = Optimiser(self.student, distillation.learning_rate, self.strategy)
        self.buffer = ReplayBuffer(
            distillation.buffer_samples,
            distillation.buffer_bytes,
            distillation.eviction,
            distillation.prioritized,
            distillation.priority_alpha,
            distillation.seed,
        )
        self.heldout = ReplayBuffer(distillation.heldout_samples, distillation.buffer_bytes, seed=distillation.seed)
        self.random = np.random.default_rng(distillation.seed)
        self.agreement: float | None = None
        self.loss: float | None = None
        #: The teacher's calibrated temperature, told by whoever built or asked the teacher.
        self.teacher_temperature: float | None = None

    def ready(self) -> bool:
        return len(self.buffer) >= self.settings.min_samples

    def predict(self, features: np.ndarray) -> np.ndarray:
        with self.torch.no_grad(), self.where.autocast():
            return self.where.host(self.student(self.where.tensor(np.asarray(features, dtype=np.float32))))

    def add_labelled(
        self, features: np.ndarray, outputs: np.ndarray, teacher_features: np.ndarray | None = None
    ) -> None:
        """Add teacher-labelled samples; a ``heldout_share`` of them go to the held-out set instead."""
        features = np.asarray(features, dtype=np.float32)
        outputs = np.asarray(outputs, dtype=np.float32)
        student = self.predict(features)
        # Agreement on fresh labels, before training on them: an honest online estimate.
        agree, _ = agreement_and_loss(student, outputs, self.discrete)
        self.agreement = running_agreement(self.agreement, agree, len(features))
        columns = {"features": features, "outputs": outputs}
        if teacher_features is not None:
            columns["teacher_features"] = np.asarray(teacher_features, dtype=np.float32).reshape(len(features), -1)
        held = self.random.random(len(features)) < self.settings.heldout_share
        if held.any():
            self.heldout.add(**{name: column[held] for name, column in columns.items()})
        if (~held).any():
            priorities = per_sample_disagreement(student[~held], outputs[~held], self.discrete)
            self.buffer.add(priority=priorities, **{name: column[~held] for name, column in columns.items()})

    def train_step(self) -> float:
        """One minibatch step; returns the loss. Student and strategy failures surface as PluginFailure."""
        index, batch = self.buffer.sample(self.settings.batch_size)
        teacher = self.where.tensor(batch["outputs"])
        with self.where.autocast():
            outputs, student_features = serve(
                self.student_component, forward_with_features, self.student, self.where.tensor(batch["features"])
            )
            # Checked before the strategy sees them: a student of the wrong width fails as itself.
            if tuple(outputs.shape) != (len(index), self.width):
                raise PluginFailure(
                    self.student_component,
                    ValueError(f"forward returned {list(outputs.shape)}; expected [{len(index)}, {self.width}]"),
                )
            teacher_features = batch.get("teacher_features")
            hard_labels = None
            if self.discrete:  # a stacked ensemble's labels are its members' joint choice
                joint = teacher_policy_outputs(batch["outputs"], outputs.shape[1], self.discrete)
                hard_labels = self.where.tensor(joint.argmax(axis=1))
            inputs = StrategyInputs(
                student_outputs=outputs,
                teacher_outputs=teacher,
                hard_labels=hard_labels,
                student_features=student_features,
                teacher_features=None if teacher_features is None else self.where.tensor(teacher_features),
                agreement=self.agreement,
                teacher_temperature=self.teacher_temperature,
            )
            loss = strategy_loss(self.strategy_component, self.strategy, inputs)
        self.loss = self.optimiser.step(loss)
        if self.buffer.prioritized or self.buffer.eviction == "lowest_priority":
            self.buffer.update_priorities(
                index, per_sample_disagreement(self.where.host(outputs), batch["outputs"], self.discrete)
            )
        return self.loss

    def state(self) -> dict[str, Any]:
        """A copy of the student's weights, on the CPU (float32: autocast leaves the weights so)."""
        return {name: tensor.detach().to("cpu", copy=True) for name, tensor in self.student.state_dict().items()}

    def data(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The replay buffer and the held-out set as arrays and metadata (``restore_data`` takes them
        back), with what the strategy was told about those labels: the teacher's temperature and
        the online agreement, so that training them again (after a restart, in ``compress``) uses
        what they were learnt with, not the strategy's defaults."""
        arrays: dict[str, np.ndarray] = {}
        metadata: dict[str, str] = {}
        for prefix, buffer in (("buffer", self.buffer), ("heldout", self.heldout)):
            arrays.update({f"{prefix}.{name}": array for name, array in buffer.snapshot().items()})
            metadata.update({f"{prefix}.added": str(buffer.added), f"{prefix}.evicted": str(buffer.evicted)})
        for name in LABEL_CONTEXT:
            value = getattr(self, name)
            if value is not None:
                metadata[name] = repr(float(value))
        return arrays, metadata

    def restore_data(self, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        """Refill the (empty) replay buffer and held-out set from ``data()``'s output; ValueError if it
        does not fit them (other feature widths, missing columns)."""
        for prefix, buffer in (("buffer", self.buffer), ("heldout", self.heldout)):
            mine = f"{prefix}."
            snapshot = {name.removeprefix(mine): array for name, array in arrays.items() if name.startswith(mine)}
            try:
                buffer.restore(snapshot, int(metadata[f"{prefix}.added"]), int(metadata[f"{prefix}.evicted"]))
            except (KeyError, IndexError) as exc:
                raise ValueError(f"{prefix}: {type(exc).__name__}: {exc}") from None
        for name in LABEL_CONTEXT:
            if name in metadata:
                setattr(self, name, float(metadata[name]))

    def load(self, state: dict[str, Any]) -> None:
        """Continue training from ``state`` with a fresh optimizer."""
        self.student.load_state_dict(state)
        self.optimiser.reset()

    def adopt(self, module: torch.nn.Module) -> None:
        """Train ``module`` from now on, with a fresh optimizer: a student of another shape than the
        configured one (a pruned copy, ``runtime.learn.compress``)."""
        self.student = module.to(self.where.device)
        self.optimiser = Optimiser(self.student, self.settings.learning_rate, self.strategy)

    def score(self, weights: Weights) -> tuple[float | None, float | None]:
        """Held-out (agreement, loss) of a set of student weights, or of a built student (a
        compressed one, whose weights do not fit the configured student); None while the set is too small."""
        if len(self.heldout) < self.settings.min_heldout:
            return None, None
        if isinstance(weights, self.torch.nn.Module):
            module = weights
        else:
            self.scratch.load_state_dict(weights)
            module = self.scratch
        size = len(self.heldout)
        with self.torch.no_grad(), self.where.autocast():
            outputs = self.where.host(module(self.where.tensor(self.heldout.columns["features"][:size])))
        return agreement_and_loss(outputs, self.heldout.columns["outputs"][:size], self.discrete)

    def judge(self, candidate: Weights, serving: Weights | None) -> Verdict:
        """The promotion gate: promote ``candidate`` unless, on the held-out set, its agreement is
        worse than the serving version's by more than ``promotion_margin`` (always promote while
        there is no serving version or too little held-out data to tell). Either may be a state
        dict or a built student (``score``)."""
        agreement, loss = self.score(candidate)
        serving_agreement = self.score(serving)[0] if serving is not None else None
        promoted = (
            agreement is None
            or serving_agreement is None
            or agreement >= serving_agreement - self.settings.promotion_margin
        )
        return Verdict(promoted, agreement, loss, serving_agreement)
