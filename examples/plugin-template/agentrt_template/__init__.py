"""agentrt-plugin-template: an example agentrt plugin.

This module is the plugin: the entry point ``template = "agentrt_template"`` makes agentrt register
the ``@hookimpl`` functions below in every role process. Nothing here imports torch; the
perception, execution and gateway processes load this module too and must stay light. Torch is
imported inside the factories, which run only in the processes that build the component.
"""

from __future__ import annotations

from typing import Any

import structlog

from agentrt_template.strategies import SoftTargetSmoothed, usage
from agentrt_template.students import build_residual_mlp
from runtime import hookimpl

__version__ = "0.1.0"

log = structlog.get_logger()


@hookimpl
def agentrt_register_students() -> dict[str, Any]:
    # name -> factory(params, observation_space, action_space); select with [student] plugin = "residual_mlp"
    return {"residual_mlp": build_residual_mlp}


@hookimpl
def agentrt_register_distillation_strategies() -> dict[str, Any]:
    # name -> factory(params, action_space); select with [distillation] strategy = "soft_target_smoothed"
    return {"soft_target_smoothed": SoftTargetSmoothed}


@hookimpl
def agentrt_weights_published(version: int, metrics: dict[str, float]) -> None:
    """Runs in the distillation process after each publication. A hook implementation may take
    any subset of the hook's arguments (here not ``path``)."""
    if usage.loss_calls == 0:  # another strategy is training the student: nothing to report
        return
    # structlog is configured by agentrt in every role process: this line lands in the daemon's
    # log as JSON, with the role and pid attached.
    log.info(
        "template_weights_published",
        version=version,
        loss=metrics.get("loss"),
        strategy_calls=usage.loss_calls,
        strategy_last_loss=usage.last_loss,
    )
