"""Loading plugins from the ``agentrt`` entry-point group, calling their hooks through pluggy, and
building their components by name."""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy
import structlog

from runtime import hookspecs
from runtime.errors import ConfigError, PluginError, PluginFailure
from runtime.plugin.params import declared
from runtime.plugin.points import EXTENSION_POINTS, ExtensionPoint
from runtime.wire.spaces import Space

ENTRY_POINT_GROUP = "agentrt"
BUILTIN_DISTRIBUTION = "agentrt"
#: Set to 1 to log every hook call (pluggy's tracing) as ``plugin_trace`` events.
TRACE_ENV = "AGENTRT_TRACE_PLUGINS"

log = structlog.get_logger()


@dataclass(frozen=True)
class Component:
    point: str
    name: str
    plugin: str
    factory: Callable[..., Any]
    takes_context: bool = False  # the factory declares a ``context`` keyword: it gets a BuildContext
    #: False for a factory written when its point passed ``params`` alone (``params_only_before``).
    takes_arguments: bool = True

    @property
    def hook(self) -> str:
        return EXTENSION_POINTS[self.point].hook


@dataclass(frozen=True)
class BuildContext:
    """What a factory that declares a ``context`` keyword gets besides its params: the loaded
    ``plugins`` (to build other components by name, as ensembles build their members), the
    ``component`` being built and the ``spaces`` its factory was given. (Time reaches components
    per call, as ``QueryContext.now``, so that a simulation's clock is the only clock.)"""

    plugins: Plugins
    component: Component
    spaces: tuple[Space, ...] = ()


def _first_result(caller: Callable[..., list[Any]], kwargs: dict[str, Any]) -> Any:
    """Call one plugin's hook caller; its result (a list of at most one), or None."""
    return next(iter(caller(**kwargs)), None)


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


def _takes_positional(factory: Callable[..., Any], count: int) -> bool:
    """Whether ``factory`` can be called with ``count`` positional arguments (True when its
    signature cannot be read: it is then called the current way)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind_partial(*[None] * count)
    except TypeError:
        return False
    return True


def _takes_context(factory: Callable[..., Any]) -> bool:
    try:
        parameter = inspect.signature(factory).parameters.get("context")
    except (TypeError, ValueError):  # no signature to read (some builtins): it cannot ask for one
        return False
    return parameter is not None and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)


class Plugins:
    """The loaded plugins of one process and the components they registered."""

    def __init__(self, manager: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
        self.manager = manager
        self.infos = infos
        self._callers: dict[tuple[str, str], Any] = {}
        self.components: dict[str, dict[str, Component]] = {point: {} for point in EXTENSION_POINTS}
        for point in EXTENSION_POINTS.values():
            for plugin, call in self._each(point.hook):
                try:
                    registered = call()
                except Exception as exc:
                    raise PluginError(f"plugin {plugin!r} raised in {point.hook}: {type(exc).__name__}: {exc}") from exc
                self._register(point, plugin, registered)

    def _register(self, point: ExtensionPoint, plugin: str, registered: Any) -> None:
        if not isinstance(registered, dict):
            raise PluginError(
                f"plugin {plugin!r}: hook {point.hook} must return a dict of name -> factory, "
                f"got {type(registered).__name__}"
            )
        for name, factory in registered.items():
            if not isinstance(name, str) or not callable(factory):
                raise PluginError(
                    f"plugin {plugin!r}: hook {point.hook} must map names to factories, "
                    f"got {name!r}: {type(factory).__name__}"
                )
            existing = self.components[point.name].get(name)
            if existing is not None:
                raise PluginError(
                    f"{point.name} {name!r} is registered by both plugin {existing.plugin!r} "
                    f"and plugin {plugin!r} ({point.hook})"
                )
            takes_arguments = not point.params_only_before or _takes_positional(factory, 1 + len(point.arguments))
            self.components[point.name][name] = Component(
                point.name, name, plugin, factory, _takes_context(factory), takes_arguments
            )

    def _each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Callable[[], Any]]]:
        """Per implementing plugin, in registration order: its name and a call of the hook through
        pluggy's hook caller for that plugin alone (so tracing and hookwrappers apply, and a result
        or a failure belongs to one plugin)."""
        calls: list[tuple[str, Callable[[], Any]]] = []
        # Wrappers (old and new style) stay in every call; they wrap each plugin's implementation.
        impls = [
            impl
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls()
            if not (impl.hookwrapper or impl.wrapper)
        ]
        for impl in impls:
            key = (hook_name, impl.plugin_name)
            if key not in self._callers:
                others = [other.plugin for other in impls if other.plugin is not impl.plugin]
                self._callers[key] = self.manager.subset_hook_caller(hook_name, remove_plugins=others)
            caller = self._callers[key]
            calls.append((impl.plugin_name, functools.partial(_first_result, caller, kwargs)))
        return calls

    def get(self, point: str, name: str) -> Component:
        try:
            return self.components[point][name]
        except KeyError:
            available = ", ".join(sorted(self.components[point])) or "none"
            raise PluginError(
                f"no {point} named {name!r} is registered by any loaded plugin; available: {available}"
            ) from None

    def build(self, point: str, name: str, params: dict[str, Any], *args: Any) -> Any:
        """Call the factory of component ``name`` with ``params`` and the point's ``args`` (and a
        BuildContext, if it asks for one); a failure, or a result that is not the point's
        interface, names the plugin and the hook. A factory written when its point passed
        ``params`` alone gets ``params`` alone (its BuildContext still has the spaces)."""
        component = self.get(point, name)
        interface = EXTENSION_POINTS[point].interface
        where = f"plugin {component.plugin!r} ({component.hook}): building {point} {name!r} failed"
        extra = {"context": BuildContext(self, component, args)} if component.takes_context else {}
        try:
            built = component.factory(params, *(args if component.takes_arguments else ()), **extra)
        except PluginError:
            raise
        except ConfigError as exc:  # its message already names the component and the parameter
            raise PluginError(f"{where}: {exc}") from exc
        except Exception as exc:
            raise PluginError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(built, interface):
            raise PluginError(
                f"{where}: it returned {type(built).__name__}, which is not a {interface.__name__} "
                f"(runtime.plugin.interfaces)"
            )
        return built

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of a lifecycle hook; one that raises is logged, not propagated."""
        for plugin, call in self._each(hook_name, **kwargs):
            try:
                call()
            except Exception as exc:
                log.error("plugin_hook_failed", plugin=plugin, hook=hook_name, error=f"{type(exc).__name__}: {exc}")


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
    entry_points = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    unknown = disabled - {entry_point.name for entry_point in entry_points}
    if unknown:  # a typo would leave the plugin it meant loaded, silently
        raise PluginError(
            f"plugins.disable names {', '.join(sorted(unknown))}, but no such entry point is installed in group "
            f"{ENTRY_POINT_GROUP!r}; installed: {', '.join(sorted({entry_point.name for entry_point in entry_points}))}"
        )
    for entry_point in entry_points:
        distribution = entry_point.dist.name if entry_point.dist else "unknown"
        builtin = distribution == BUILTIN_DISTRIBUTION
        if entry_point.name in disabled:
            continue
        if entry_point.name in infos:
            first = infos[entry_point.name]
            if (first.distribution, first.origin) == (distribution, entry_point.value):
                continue  # one distribution found twice on sys.path
            raise PluginError(
                f"plugin name {entry_point.name!r} is registered by two distributions: {first.distribution} "
                f"({first.origin}) and {distribution} ({entry_point.value}); uninstall one, or disable the name"
            )
        if not builtin and not plugin_config.get("autoload", True) and entry_point.name not in wanted:
            continue
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {entry_point.name!r} (entry point {entry_point.value}, distribution {distribution}) "
                f"failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        info = PluginInfo(
            entry_point.name,
            distribution,
            entry_point.dist.version if entry_point.dist else "",
            entry_point.value,
            builtin,
        )
        _register(manager, plugin, info)
        infos[info.name] = info
    for name, plugin in (extra or {}).items():
        info = PluginInfo(name, "", "", "in-process", False)
        _register(manager, plugin, info)
        infos[name] = info
    missing = wanted - set(infos)
    if missing:
        raise PluginError(
            f"plugins.load names {', '.join(sorted(missing))}, "
            f"but no such entry point is installed in group {ENTRY_POINT_GROUP!r}"
        )
    if os.environ.get(TRACE_ENV, "0") not in ("", "0"):
        manager.trace.root.setwriter(lambda line: log.info("plugin_trace", line=line.rstrip()))
        manager.enable_tracing()
    return Plugins(manager, infos)


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
    return {name: point.selected(config) for name, point in EXTENSION_POINTS.items()}


def describe(config: dict[str, Any]) -> dict[str, Any]:
    """What ``agentrt plugins`` shows: every loaded plugin and, per extension point, what is
    available (with each component's declared parameters) and what the configuration selects.
    Selecting an unknown component is an error."""
    plugins = load(config["plugins"])
    choice = selected(config)
    for point, names in choice.items():
        for name in names:
            plugins.get(point, name)
    return {
        "plugins": [vars(info) for info in plugins.infos.values()],
        "extension_points": {
            name: {
                "hook": point.hook,
                "config": f"{point.section}.{point.key}",
                "chain": point.chain,
                "interface": point.interface.__name__,
                "arguments": ["params", *point.arguments],
                "available": {c.name: c.plugin for c in _sorted(plugins, name)},
                "components": {c.name: _component(c) for c in _sorted(plugins, name)},
                "selected": choice[name],
            }
            for name, point in EXTENSION_POINTS.items()
        },
    }


def _sorted(plugins: Plugins, point: str) -> list[Component]:
    return [component for _, component in sorted(plugins.components[point].items())]


def _component(component: Component) -> dict[str, Any]:
    spec = declared(component.factory)
    doc = inspect.getdoc(component.factory) or ""
    return {
        "plugin": component.plugin,
        "doc": doc.split("\n\n")[0].replace("\n", " "),  # the first paragraph
        "params": None if spec is None else spec.describe(),
    }
