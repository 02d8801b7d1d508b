"""Hook specifications: every extension point of agentrt, in one place.

Plugins are modules (or objects) registered under the ``agentrt`` entry-point group; they implement
any of these hooks with ``@runtime.hookimpl``. The built-in plugins in ``plugins/`` are registered
the same way and use nothing a third-party plugin could not.

Two families of hooks:

* ``agentrt_register_*`` hooks are called once in every role process (and by ``agentrt plugins``),
  right after the plugins load; the factories they return are only called where the component runs.
  Each returns a dict mapping a component name to a factory; every implementation's dict is
  collected (all results), and a name registered by two plugins is a start-up error naming both.
  ``agentrt.toml`` then selects components by name, with their ``params`` table. Keep heavy
  imports (torch) inside the factories: the perception and execution processes load every plugin
  but should not pay for torch unless a configured component needs it. Which configuration keys
  select each point's components, whether they chain, and which interface the factories return
  is declared once, in ``runtime.plugin.points.EXTENSION_POINTS``.

  Every factory gets ``params`` first (declare them with ``runtime.plugin.params.declare`` to get
  them checked, with defaults filled in). A factory that also declares a keyword parameter named
  ``context`` gets a ``runtime.plugin.pluginmanager.BuildContext``: the loaded plugins (to build
  other components by name, as ensembles do), the component being built and the spaces it was
  given. Factories without it are called as before. What a factory returns is checked against its
  point's interface when it is built.

* Lifecycle hooks (``agentrt_role_*``, ``agentrt_peer_*``, ``agentrt_weights_*``) are notifications.
  Every implementation is called, in registration order; return values are ignored, and an
  implementation that raises is logged with its plugin and hook name without affecting the others.

Hooks are called through pluggy's hook callers, one plugin at a time (so results and failures are
attributed to a plugin, and hookwrappers apply); ``AGENTRT_TRACE_PLUGINS=1`` logs every call.
"""

from __future__ import annotations

from typing import Any

import pluggy

from runtime.plugin.interfaces import (
    QueryPolicyFactory,
    StepFactory,
    StrategyFactory,
    StudentFactory,
    TeacherFactory,
)
from runtime.wire.spaces import Space

PROJECT_NAME = "agentrt"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def agentrt_register_students() -> dict[str, StudentFactory]:
    """Register student model factories.

    Factories run in: decision and distillation (and ``agentrt distill``), once at start-up;
    the gateway when an edge peer first asks for the student, and ``agentrt student export``.
    Returns: ``{name: factory}``. ``factory(params, observation_space, action_space)`` builds the
    student ``torch.nn.Module``. ``observation_space`` is the space of the features the student
    receives (after perception), ``action_space`` the agent's action space. ``forward(x)`` maps a
    float32 batch ``(B, *observation_space.shape)`` to ``(B, runtime.wire.spaces.output_size(action_space))``:
    logits for a discrete action space, actions for a box (``runtime.plugin.interfaces.Student``).
    Optional capabilities (Protocols in ``runtime.plugin.interfaces``): ``ForwardFeatures``,
    ``forward_features(x) -> (outputs, features)`` for feature-hint strategies; ``ForwardMembers``,
    an ensemble's ``forward_members(x) -> (K, B, output_size)``, whose spread the query policies
    see as ``QueryContext.member_outputs`` (decision then acts on the members' mean).
    Combination: all results are merged; duplicate names are an error.
    """


@hookspec
def agentrt_register_teachers() -> dict[str, TeacherFactory]:
    """Register teacher factories.

    Factories run in: the teacher process (and ``agentrt distill`` / ``agentrt teacher serve``), at start-up.
    Returns: ``{name: factory}``; ``factory(params, observation_space, action_space)`` returns an
    object with ``label(observations: np.ndarray) -> np.ndarray`` (``runtime.plugin.interfaces.Teacher``);
    one that also has ``label_with_features`` (``LabelWithFeatures``) serves feature-hint strategies;
    a discrete teacher with a ``temperature`` attribute (``Calibrated``) says at which temperature
    its softmax is calibrated: checked once where it is built, the value travels with its answers
    and reaches strategies as ``StrategyInputs.teacher_temperature``.
    The teacher sees raw observations (before perception): it is the reference, not the student.
    Combination: all results are merged; duplicate names are an error.
    """


@hookspec
def agentrt_register_distillation_strategies() -> dict[str, StrategyFactory]:
    """Register distillation strategies (losses).

    Factories run in: the distillation process (and ``agentrt distill``), at start-up.
    Returns: ``{name: factory}``; ``factory(params, action_space)`` returns an object with
    ``loss(inputs: runtime.plugin.interfaces.StrategyInputs) -> torch.Tensor`` (a scalar to minimise);
    ``inputs.teacher_temperature`` is the teacher's calibrated temperature, None if it has none. A
    strategy with learnable parts (a feature projection) is also a ``torch.nn.Module``; its
    parameters are trained together with the student's. A factory raises for an action space
    its loss cannot learn (``runtime.plugin.params.discrete_space`` / ``box_space``), so that
    ``agentrt plugins --check`` and ``agentrt up`` refuse it naming the plugin and component. A
    factory that takes ``params`` alone (written before the action space was passed) is still
    called with ``params`` alone.
    Combination: all results are merged; duplicate names are an error.
    """


@hookspec
def agentrt_register_query_policies() -> dict[str, QueryPolicyFactory]:
    """Register teacher query policies.

    Factories run in: the decision process, at start-up.
    Returns: ``{name: factory}``; ``factory(params)`` returns an object with
    ``decide(context: QueryContext) -> QueryDecision``, called once per batch of observations:
    for each observation, whether to ask the teacher for a label and whether the teacher acts
    instead of the student (an acting teacher's output doubles as a label). The action space is
    in every ``context``; a policy that cannot serve it raises there, on the first batch that
    ``agentrt plugins --check`` decides.
    Combination: all results are merged; duplicate names are an error.
    """


@hookspec
def agentrt_register_perception_transforms() -> dict[str, StepFactory]:
    """Register perception transforms (observation -> features).

    Factories run in: perception (to run them) and decision/distillation (to learn the feature space).
    Returns: ``{name: factory}``; ``factory(params, input_space)`` returns an instance ``step`` of a
    subclass of ``runtime.plugin.interfaces.StreamStep`` with ``output_space`` set, called as
    ``step(features, stream) -> features`` on one observation at a time; ``step.reset(stream)``
    is called when that stream (peer) starts a new episode. Transforms listed in
    ``perception.transforms`` are chained in that order, each getting the previous one's output space.
    Combination: all results are merged; duplicate names are an error.
    """


@hookspec
def agentrt_register_execution_filters() -> dict[str, StepFactory]:
    """Register execution filters (action -> safe action).

    Factories run in: the execution process, at start-up.
    Returns: ``{name: factory}``; ``factory(params, action_space)`` returns an instance ``step`` of
    a subclass of ``runtime.plugin.interfaces.StreamStep``, called as ``step(action, stream) -> action`` on one
    action at a time. Filters listed in ``execution.filters`` are chained in that order. A filter
    should clamp, not raise: raising sends the peer a PLUGIN_FAILED error instead of an action.
    Combination: all results are merged; duplicate names are an error.
    """


@hookspec
def agentrt_role_started(role: str, config: dict[str, Any]) -> None:
    """Called in every role process once its sockets are up, with the role's name and the
    effective configuration (read-only). Return value ignored."""


@hookspec
def agentrt_role_stopping(role: str) -> None:
    """Called in every role process when it begins a graceful shutdown (SIGTERM/SIGINT or parent
    gone), before its sockets close. Keep it short: the daemon kills roles that take too long."""


@hookspec
def agentrt_peer_attached(peer_id: str, peer_name: str, observation_space: Space, action_space: Space) -> None:
    """Called in the gateway process after a peer's hello was accepted and its welcome sent."""


@hookspec
def agentrt_peer_detached(peer_id: str, reason: str) -> None:
    """Called in the gateway process when a peer's session ends (``reason``: "bye", "timeout",
    "rehello", or "shutdown" for every session still open when the gateway stops)."""


@hookspec
def agentrt_weights_published(version: int, path: str, metrics: dict[str, float | None]) -> None:
    """Called in the distillation process after student ``version`` was written to ``path``
    (safetensors), passed the promotion gate and was announced; ``metrics`` holds ``loss``,
    ``agreement``, ``heldout_agreement`` (None while the held-out set is small) and ``samples``."""


@hookspec
def agentrt_weights_swapped(version: int) -> None:
    """Called in the decision process right after student ``version`` started serving."""
