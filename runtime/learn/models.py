"""Building the student (and its feature space) the same way in every process that needs it."""

from __future__ import annotations

from gymnasium import spaces

from runtime.config import Settings
from runtime.errors import ConfigError
from runtime.learn.device import placement
from runtime.plugin.chains import Chain
from runtime.plugin.interfaces import Calibrated, OnDevice
from runtime.plugin.pluginmanager import Plugins


def perception_chain(plugins: Plugins, settings: Settings, observation_space: spaces.Space) -> Chain:
    """The configured perception transforms, in order."""
    return Chain(plugins, "perception", settings.perception.transforms, settings.perception.params, observation_space)


def execution_chain(plugins: Plugins, settings: Settings, action_space: spaces.Space) -> Chain:
    """The configured execution filters, in order."""
    return Chain(plugins, "execution", settings.execution.filters, settings.execution.params, action_space)


def feature_space(plugins: Plugins, settings: Settings, observation_space: spaces.Space) -> spaces.Space:
    """The space of the features perception hands to the student, after the configured transforms."""
    return perception_chain(plugins, settings, observation_space).output_space


def build_student(plugins: Plugins, settings: Settings, observation_space: spaces.Space, action_space: spaces.Space):
    """The configured student, seeded so decision and distillation start from identical weights."""
    import torch

    torch.manual_seed(settings.distillation.seed)
    return plugins.build(
        "student",
        settings.student.plugin,
        dict(settings.student.params),
        feature_space(plugins, settings, observation_space),
        action_space,
    )


def build_teacher(plugins: Plugins, settings: Settings, observation_space: spaces.Space, action_space: spaces.Space):
    """The configured teacher, on ``teacher.device`` in ``teacher.dtype``; it labels raw
    observations, not perception's features. A teacher that cannot be placed (no ``place``: a
    scripted or remote teacher) stays on the CPU in float32 when ``device = "auto"`` and dtype is
    float32; asked for more explicitly, it is a ConfigError naming the keys."""
    teacher = plugins.build(
        "teacher", settings.teacher.plugin, dict(settings.teacher.params), observation_space, action_space
    )
    where = placement(settings, "teacher")
    if where.default:
        return teacher
    if isinstance(teacher, OnDevice):
        teacher.place(where.device, where.dtype)
        return teacher
    if settings.teacher.device == "auto" and settings.teacher.dtype == "float32":
        return teacher
    raise ConfigError(
        f"teacher.device = {settings.teacher.device!r}, teacher.dtype = {settings.teacher.dtype!r}: "
        f"teacher {settings.teacher.plugin!r} cannot be placed on a device (it has no place()); "
        "use device = 'cpu' (a remote teacher is placed by teacher.device on the host serving it)"
    )


def teacher_temperature(teacher: object) -> float | None:
    """The teacher's calibrated temperature (the ``Calibrated`` capability), None if it has none.
    Asked once, where the teacher is built; strategies get it as ``StrategyInputs.teacher_temperature``."""
    return teacher.temperature if isinstance(teacher, Calibrated) else None
