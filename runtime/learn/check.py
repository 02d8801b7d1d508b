"""``agentrt plugins --check`` (and ``agentrt up``, before it starts anything): every selected
component built with its params on the agent's real spaces, and one step of each run on sample
inputs, the way the roles will run it. A component that cannot be built, raises, or returns what
the runtime cannot use is reported with its plugin and hook, before any peer depends on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from runtime.config import Settings
from runtime.errors import PluginError
from runtime.learn.evaluation import teacher_columns_error
from runtime.learn.loop import Decider
from runtime.learn.models import build_teacher, execution_chain, perception_chain
from runtime.learn.trainer import Trainer
from runtime.plugin.pluginmanager import Plugins, serve
from runtime.plugin.points import EXTENSION_POINTS
from runtime.wire.spaces import agent_spaces, output_size

#: Sample observations per step: enough for a batch, and for a strategy's minibatch to train on.
SAMPLES = 16


@dataclass(frozen=True)
class Check:
    """One stage of the check: the extension points it exercises, their selected components, and its outcome."""

    points: list[str]
    components: list[str]
    ok: bool
    error: str | None = None
    blocked: bool = False  # not run: an earlier stage it needs failed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def causes(checks: list[Check]) -> list[str]:
    """What failed, once each, in stage order: a component serves several stages (the student:
    decide and train), and a stage left unrun for want of an earlier one's output adds nothing."""
    return list(dict.fromkeys(check.error for check in checks if not check.ok and not check.blocked and check.error))


def check_components(plugins: Plugins, settings: Settings) -> list[Check]:
    """Run every stage in the order data flows (perception, teacher, student and query policy,
    strategy, execution); a stage whose input could not be made is reported as not run."""
    config = settings.as_config()
    observation_space, action_space = agent_spaces(settings.agent.table())
    observation_space.seed(0)
    action_space.seed(0)
    observations = np.stack([np.asarray(observation_space.sample()) for _ in range(SAMPLES)])
    checks: list[Check] = []
    state: dict[str, Any] = {}

    def stage(name: str, points: list[str], run: Callable[[], Any], needs: tuple[str, ...] = ()) -> None:
        names = [component for point in points for component in EXTENSION_POINTS[point].selected(config)]
        missing = [need for need in needs if need not in state]
        if missing:
            checks.append(Check(points, names, False, f"not run: it needs the {', '.join(missing)} step", blocked=True))
            return
        try:
            state[name] = run()
        except PluginError as exc:  # PluginFailure too: it names the plugin, hook and component
            checks.append(Check(points, names, False, str(exc)))
        else:
            checks.append(Check(points, names, True))

    def perceive() -> np.ndarray:
        chain = perception_chain(plugins, settings, observation_space)
        features = np.stack([chain(observation, b"check") for observation in observations])
        chain.reset(b"check")
        return features.astype(np.float32)

    def teach() -> np.ndarray:
        if "teacher" in settings.internal.remote_roles:
            # It runs on another host, which may alone have its files or GPU: it is built, and fails
            # with the reason, where it starts; here the student and strategy get labels of its size.
            return np.zeros((SAMPLES, output_size(action_space)), dtype=np.float32)
        component = plugins.get("teacher", settings.teacher.plugin)
        teacher = build_teacher(plugins, settings, observation_space, action_space)
        outputs = np.asarray(serve(component, teacher.label, observations))
        problem: str | None
        if outputs.ndim != 2 or len(outputs) != SAMPLES:
            problem = f"{outputs.dtype} {list(outputs.shape)}; expected [{SAMPLES}, k]"
        elif not np.isfinite(outputs).all():
            problem = f"NaN or infinity in {int((~np.isfinite(outputs).all(axis=1)).sum())} of {SAMPLES} rows"
        else:
            problem = teacher_columns_error(outputs.shape[1], output_size(action_space))
        if problem is not None:
            raise PluginError(
                f"plugin {component.plugin!r} ({component.hook}): teacher {component.name!r} label returned {problem}"
            )
        return outputs

    def decide() -> np.ndarray:
        decider = Decider(plugins, settings, observation_space, action_space)
        teacher_outputs = state["teach"]
        decisions = decider.decide(
            state["perceive"], observations, ["auto"] * SAMPLES, lambda asked: teacher_outputs[: len(asked)]
        )
        return decisions.actions

    def train() -> None:
        trainer = Trainer(plugins, settings, observation_space, action_space)
        trainer.add_labelled(state["perceive"], state["teach"])
        trainer.train_step()

    def execute() -> None:
        chain = execution_chain(plugins, settings, action_space)
        for action in state["decide"]:
            chain(action, b"check")
        chain.reset(b"check")

    stage("perceive", ["perception"], perceive)
    stage("teach", ["teacher"], teach)
    stage("decide", ["student", "query_policy"], decide, needs=("perceive", "teach"))
    # The strategy trains the student's outputs: a student that cannot decide leaves it nothing to check.
    stage("train", ["strategy"], train, needs=("perceive", "teach", "decide"))
    stage("execute", ["execution"], execute, needs=("decide",))
    return checks
