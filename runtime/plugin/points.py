"""The extension points, declared once: the hook that registers each point's components, the
configuration keys that select them and hold their params, whether they chain, and what their
factories return. Plugin loading, selection, chains, the configuration schema and
``agentrt plugins`` read this table; ``runtime.hookspecs`` specifies each ``hook``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.plugin.interfaces import DistillationStrategy, QueryPolicy, StreamStep, Student, Teacher


@dataclass(frozen=True)
class ExtensionPoint:
    name: str
    #: The registration hook (``runtime.hookspecs``) whose ``{name: factory}`` dicts fill this point.
    hook: str
    #: ``[section] key`` selects components by name; ``[section] params`` holds their params.
    section: str
    key: str
    #: A chain selects a list of components, applied in order, each with ``[section.params.<name>]``;
    #: otherwise one component is selected and ``[section] params`` is its table.
    chain: bool
    #: What a factory must return, checked when the component is built.
    interface: type
    #: The factory's positional arguments, after ``params``.
    arguments: tuple[str, ...]
    #: The configuration's default selection, and the docs of the two keys.
    default: Any
    key_doc: str
    params_doc: str
    #: Factories of this point once took ``params`` alone; one whose signature still cannot take
    #: ``arguments`` is called that way, so that plugins written before them keep working.
    params_only_before: bool = False

    def selected(self, config: dict[str, Any]) -> list[str]:
        """The names ``config`` selects for this point."""
        value = config[self.section][self.key]
        return list(value) if self.chain else [value]


_SPACES = ("observation_space", "action_space")

EXTENSION_POINTS: dict[str, ExtensionPoint] = {
    point.name: point
    for point in (
        ExtensionPoint(
            "student",
            "agentrt_register_students",
            "student",
            "plugin",
            False,
            Student,
            _SPACES,
            "mlp",
            "student model factory, by name (agentrt plugins)",
            "parameters for the student factory (each component has its own defaults)",
        ),
        ExtensionPoint(
            "teacher",
            "agentrt_register_teachers",
            "teacher",
            "plugin",
            False,
            Teacher,
            _SPACES,
            "checkpoint",
            "teacher factory, by name",
            "parameters for the teacher factory (the checkpoint teacher defaults to builtin:cartpole)",
        ),
        ExtensionPoint(
            "strategy",
            "agentrt_register_distillation_strategies",
            "distillation",
            "strategy",
            False,
            DistillationStrategy,
            ("action_space",),
            "soft_target",
            "distillation strategy (loss), by name",
            "parameters for the strategy (soft_target defaults to temperature 2, alpha 0.5)",
            params_only_before=True,
        ),
        ExtensionPoint(
            "query_policy",
            "agentrt_register_query_policies",
            "query",
            "policy",
            False,
            QueryPolicy,
            (),
            "cascade",
            "teacher query policy, by name",
            "parameters for the query policy (each policy has its own defaults)",
        ),
        ExtensionPoint(
            "perception",
            "agentrt_register_perception_transforms",
            "perception",
            "transforms",
            True,
            StreamStep,
            ("input_space",),
            [],
            "perception transforms, applied in this order",
            "parameters per transform: [perception.params.<name>]",
        ),
        ExtensionPoint(
            "execution",
            "agentrt_register_execution_filters",
            "execution",
            "filters",
            True,
            StreamStep,
            ("action_space",),
            ["clip"],
            "execution filters, applied in this order",
            "parameters per filter: [execution.params.<name>]",
        ),
    )
}


def in_section(section: str) -> ExtensionPoint | None:
    """The extension point whose components ``[section]`` selects, if any."""
    return next((point for point in EXTENSION_POINTS.values() if point.section == section), None)
