"""Loading plugins from the ``agentrt`` entry-point group and looking up their components by name."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy
import structlog

from runtime import hookspecs
from runtime.errors import PluginError, PluginFailure

ENTRY_POINT_GROUP = "agentrt"
BUILTIN_DISTRIBUTION = "agentrt"

#: Extension point -> the hook that registers its components.
EXTENSION_POINTS: dict[str, str] = {
    "student": "agentrt_register_students",
    "teacher": "agentrt_register_teachers",
    "strategy": "agentrt_register_distillation_strategies",
    "query_policy": "agentrt_register_query_policies",
    "perception": "agentrt_register_perception_transforms",
    "execution": "agentrt_register_execution_filters",
}

log = structlog.get_logger()

_active: "Plugins | None" = None


@dataclass(frozen=True)
class Component:
    point: str
    name: str
    plugin: str
    factory: Callable[..., Any]

    @property
    def hook(self) -> str:
        return EXTENSION_POINTS[self.point]


def serve(component: Component, function: Callable[..., Any], *args: Any) -> Any:
    """Call a component's method while serving; any exception becomes a PluginFailure naming it."""
    try:
        return function(*args)
    except Exception as exc:
        raise PluginFailure(component, exc) from exc


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    origin: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)


class Plugins:
    """The loaded plugins of one process and the components they registered."""

    def __init__(self, manager: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
        self.manager = manager
        self.infos = infos
        self.components: dict[str, dict[str, Component]] = {point: {} for point in EXTENSION_POINTS}
        for point, hook_name in EXTENSION_POINTS.items():
            for impl in getattr(manager.hook, hook_name).get_hookimpls():
                registered = _call_impl(impl, hook_name, {})
                if not isinstance(registered, dict):
                    raise PluginError(f"plugin {impl.plugin_name!r}: hook {hook_name} must return a dict of name -> factory, got {type(registered).__name__}")
                for name, factory in registered.items():
                    existing = self.components[point].get(name)
                    if existing is not None:
                        raise PluginError(f"{point} {name!r} is registered by both plugin {existing.plugin!r} and plugin {impl.plugin_name!r} ({hook_name})")
                    self.components[point][name] = Component(point, name, impl.plugin_name, factory)

    def get(self, point: str, name: str) -> Component:
        try:
            return self.components[point][name]
        except KeyError:
            available = ", ".join(sorted(self.components[point])) or "none"
            raise PluginError(f"no {point} named {name!r} is registered by any loaded plugin; available: {available}") from None

    def build(self, point: str, name: str, *args: Any) -> Any:
        """Call the factory of component ``name``; a failure names the plugin and the hook."""
        component = self.get(point, name)
        try:
            return component.factory(*args)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {component.plugin!r} ({component.hook}): building {point} {name!r} failed: {type(exc).__name__}: {exc}") from exc

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of a lifecycle hook; one that raises is logged, not propagated."""
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            try:
                _call_impl(impl, hook_name, kwargs)
            except Exception as exc:
                log.error("plugin_hook_failed", plugin=impl.plugin_name, hook=hook_name, error=f"{type(exc).__name__}: {exc}")


def active() -> Plugins:
    """The plugins loaded in this process: for components built from other components (an
    ensemble of teachers names its members), resolved the same way the configuration is."""
    if _active is None:
        raise PluginError("no plugins are loaded in this process yet")
    return _active


def _call_impl(impl: pluggy.HookImpl, hook_name: str, kwargs: dict[str, Any]) -> Any:
    # Called one implementation at a time so that results and failures can be attributed to a plugin.
    try:
        return impl.function(*[kwargs[arg] for arg in impl.argnames])
    except PluginError:
        raise
    except Exception as exc:
        if kwargs:  # lifecycle hooks: the caller logs
            raise
        raise PluginError(f"plugin {impl.plugin_name!r} raised in {hook_name}: {type(exc).__name__}: {exc}") from exc


def load(plugin_config: dict[str, Any], extra: dict[str, object] | None = None) -> Plugins:
    """Load the entry-point plugins allowed by ``plugin_config`` (the ``[plugins]`` table).

    Built-in plugins (distribution ``agentrt``) always load unless disabled by name; third-party
    ones load when ``autoload`` is true or they are named in ``load``. ``extra`` registers
    in-process plugin objects (tests, embedding applications).
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    disabled = set(plugin_config.get("disable", []))
    wanted = set(plugin_config.get("load", []))
    infos: dict[str, PluginInfo] = {}
    for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        distribution = entry_point.dist.name if entry_point.dist else "unknown"
        builtin = distribution == BUILTIN_DISTRIBUTION
        if entry_point.name in disabled or entry_point.name in infos:
            continue
        if not builtin and not plugin_config.get("autoload", True) and entry_point.name not in wanted:
            continue
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise PluginError(f"plugin {entry_point.name!r} (entry point {entry_point.value}, distribution {distribution}) failed to import: {type(exc).__name__}: {exc}") from exc
        info = PluginInfo(entry_point.name, distribution, entry_point.dist.version if entry_point.dist else "",
                          entry_point.value, builtin)
        _register(manager, plugin, info)
        infos[info.name] = info
    for name, plugin in (extra or {}).items():
        info = PluginInfo(name, "", "", "in-process", False)
        _register(manager, plugin, info)
        infos[name] = info
    missing = wanted - set(infos)
    if missing:
        raise PluginError(f"plugins.load names {', '.join(sorted(missing))}, but no such entry point is installed in group {ENTRY_POINT_GROUP!r}")
    global _active
    _active = Plugins(manager, infos)
    return _active


def _register(manager: pluggy.PluginManager, plugin: object, info: PluginInfo) -> None:
    try:
        manager.register(plugin, name=info.name)
        # A hook implementation whose name matches no spec is almost always a typo: reject it now.
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        manager.unregister(name=info.name)
        raise PluginError(f"plugin {info.name!r} ({info.origin}) is invalid: {exc}") from exc
    info.hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])


def selected(config: dict[str, Any]) -> dict[str, list[str]]:
    """The component names the configuration selects, per extension point."""
    return {
        "student": [config["student"]["plugin"]],
        "teacher": [config["teacher"]["plugin"]],
        "strategy": [config["distillation"]["strategy"]],
        "query_policy": [config["query"]["policy"]],
        "perception": list(config["perception"]["transforms"]),
        "execution": list(config["execution"]["filters"]),
    }


def describe(config: dict[str, Any]) -> dict[str, Any]:
    """What ``agentrt plugins`` shows: every loaded plugin and, per extension point, what is
    available and what the configuration selects. Selecting an unknown component is an error."""
    plugins = load(config["plugins"])
    choice = selected(config)
    for point, names in choice.items():
        for name in names:
            plugins.get(point, name)
    return {
        "plugins": [vars(info) for info in plugins.infos.values()],
        "extension_points": {point: {"hook": EXTENSION_POINTS[point],
                                     "available": {name: c.plugin for name, c in sorted(plugins.components[point].items())},
                                     "selected": choice[point]}
                             for point in EXTENSION_POINTS},
    }
