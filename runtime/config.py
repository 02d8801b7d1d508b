"""Configuration: defaults for every key, ``agentrt.toml``, environment overrides, validation.

Precedence, lowest first: built-in defaults, the TOML file, ``AGENTRT_<SECTION>_<KEY>`` environment
variables (``AGENTRT_RUN_DIR`` is a shorthand for ``AGENTRT_DAEMON_RUN_DIR``), command-line flags.
An unknown section or key, or a value of the wrong type, fails with a message naming the key.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from runtime.errors import ConfigError
from runtime.plugin.params import (
    Param,
    Params,
    Validator,
    and_,
    boolean,
    ge,
    gt,
    in_,
    integer,
    le,
    list_of,
    number,
    or_,
    positive_int,
    share,
    string,
    table,
)
from runtime.plugin.pluginmanager import TRACE_ENV
from runtime.plugin.points import EXTENSION_POINTS, in_section
from runtime.wire.keys import ClientKeys, KeyStore, RoleKeys, default_keys_dir, is_loopback
from runtime.wire.protocol import DEFAULT_MAX_MESSAGE_BYTES
from runtime.wire.transport import NETWORK_ENDPOINTS, Network

CONFIG_FILE_NAME = "agentrt.toml"
ENV_PREFIX = "AGENTRT_"
#: The origin of the values set by ``AGENTRT_<SECTION>_<KEY>`` variables, as ``merge`` is told it.
ENVIRONMENT = "environment"


Config = dict[str, dict[str, Any]]

_POSITIVE_NUMBER = and_(number, gt(0))
# Timeouts travel as milliseconds in a C int (ZeroMQ options, the welcome's peer_timeout_ms).
_MAX_TIMEOUT_MS = 2**31 - 1
_TIMEOUT_S = and_(number, gt(0), le(_MAX_TIMEOUT_MS / 1000))
_TIMEOUT_MS = and_(integer, gt(0), le(_MAX_TIMEOUT_MS))
_NAMES = list_of(string, min_length=0)
_DEVICE = Validator(
    "'auto', 'cpu', 'cuda' or 'cuda:N'",
    lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", v) is not None,
)
_DTYPE = in_("float32", "bfloat16", "float16")


_PARAM = "agentrt_param"


def setting(default: Any, doc: str, check: Validator) -> Any:
    """A configuration key, declared once as a field of its section's dataclass: its default, its
    one-line doc (``agentrt config show --annotate``) and its check."""
    param = Param(default, doc, check)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={_PARAM: param})
    return field(default=default, metadata={_PARAM: param})


def device_setting(default: str, what: str) -> Any:
    """A section's ``device`` key (resolved where the model is built: runtime.learn.device)."""
    return setting(
        default,
        f"where {what}: auto (CUDA when torch.cuda.is_available(), else the CPU), cpu, cuda or cuda:N "
        "(an absent GPU is a configuration error)",
        _DEVICE,
    )


def dtype_setting(what: str, note: str) -> Any:
    """A section's ``dtype`` key, beside its ``device``."""
    return setting(
        "float32",
        f"precision of {what}: float32, bfloat16 or float16 (float16: CUDA only); {note}; checkpoints stay float32",
        _DTYPE,
    )


def selection(section: str) -> Any:
    """The key by which ``[section]`` selects its extension point's component(s) (runtime.plugin.points)."""
    point = in_section(section)
    assert point is not None, f"no extension point selects in [{section}]"
    return setting(point.default, point.key_doc, _NAMES if point.chain else string)


def component_params(section: str) -> Any:
    """``[section] params``: the selected component's own parameters, which the component checks."""
    point = in_section(section)
    assert point is not None, f"no extension point selects in [{section}]"
    return setting({}, point.params_doc, table)


class Section:
    """A configuration section: typed attributes, one per key."""

    def table(self) -> dict[str, Any]:
        """The section as a TOML-shaped table (for code below the configuration layer, which takes plain tables)."""
        return asdict(self)  # type: ignore[call-overload]


def _bindable(endpoint: str) -> bool:
    # libzmq takes a port over 65535 modulo 65536: tcp://127.0.0.1:99999 would bind 34463.
    if endpoint.startswith("ipc://"):
        return len(endpoint) > len("ipc://")
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    return endpoint.startswith("tcp://") and bool(host) and (port == "*" or (port.isdigit() and int(port) <= 65535))


@dataclass(frozen=True)
class DaemonSettings(Section):
    run_dir: str = setting(
        "",
        "run directory for sockets, pid file, logs and checkpoints; "
        "empty: $XDG_RUNTIME_DIR/agentrt or /tmp/agentrt-<uid>",
        string,
    )
    peer_endpoint: str = setting(
        "tcp://127.0.0.1:7411",
        "where peers connect (ZeroMQ endpoint the gateway binds)",
        Validator(
            "tcp://HOST:PORT (PORT at most 65535, or * for any free one) or ipc://PATH",
            lambda v: isinstance(v, str) and _bindable(v),
        ),
    )
    log_format: str = setting(
        "auto", "auto (json unless stderr is a terminal), json or console", in_("auto", "json", "console")
    )
    log_level: str = setting("info", "debug, info, warning or error", in_("debug", "info", "warning", "error"))
    restart_backoff_s: float = setting(
        0.1, "first delay before restarting a crashed role; doubles per crash", _POSITIVE_NUMBER
    )
    restart_backoff_max_s: float = setting(10.0, "largest restart delay", _POSITIVE_NUMBER)
    restart_reset_s: float = setting(30.0, "a role up this long has its backoff reset", _POSITIVE_NUMBER)
    stop_timeout_s: float = setting(4.0, "grace period for roles to exit on shutdown before SIGKILL", _POSITIVE_NUMBER)
    stats_interval_s: float = setting(
        0.25, "how often roles report counters to the daemon (their heartbeat)", _POSITIVE_NUMBER
    )
    unresponsive_after_s: float = setting(
        3.0,
        "a running role that has not reported for this long is unresponsive in status (more than stats_interval_s)",
        _POSITIVE_NUMBER,
    )
    kill_unresponsive_after_s: float = setting(
        15.0,
        "a running role that has not reported for this long is killed (SIGKILL) and restarted "
        "(at least unresponsive_after_s)",
        _POSITIVE_NUMBER,
    )
    socket_linger_ms: int = setting(200, "how long a closing socket may flush pending messages", and_(integer, ge(0)))


@dataclass(frozen=True)
class ProtocolSettings(Section):
    max_message_bytes: int = setting(
        DEFAULT_MAX_MESSAGE_BYTES, "largest message accepted; larger ones get MESSAGE_TOO_LARGE", positive_int
    )
    peer_timeout_s: float = setting(30.0, "a peer silent this long is detached", _TIMEOUT_S)
    stall_timeout_s: float = setting(
        10.0,
        "a peer connection that does not finish its ZeroMQ handshake, or stops answering ZeroMQ heartbeats, "
        "this long is closed",
        _TIMEOUT_S,
    )
    max_sessions: int = setting(
        1024,
        "peer sessions at once; a hello beyond them gets UNAVAILABLE. Also the bound of every per-peer "
        "table (decision's label shares; the gateway's sessions)",
        positive_int,
    )
    space_cache_entries: int = setting(
        64,
        "distinct mismatching spaces from hellos whose difference from the agent's is remembered, "
        "so a repeated hello that differs only in its bounds is compared once",
        positive_int,
    )
    forced_teacher_budget: int = setting(
        100,
        "observations per session that may force policy = teacher; beyond it the query policy decides",
        and_(integer, ge(0)),
    )
    teacher_peers: list[str] = setting([], "peer names that may force the teacher without that budget", _NAMES)
    edge_label_budget: int = setting(
        10000,
        "edge peers' label messages per session that the teacher labels for sure; beyond it the query policy decides",
        and_(integer, ge(0)),
    )
    out_of_bounds: str = setting(
        "refuse",
        "an observation outside the observation space's finite bounds: refuse (INVALID_FIELD) or clip it",
        in_("refuse", "clip"),
    )


@dataclass(frozen=True)
class AgentSettings(Section):
    env: str = setting(
        "CartPole-v1",
        "Gymnasium environment id whose spaces the agent uses, unless the spaces are given below",
        string,
    )
    observation_space: dict[str, Any] = setting(
        {}, "explicit observation space (docs/protocol.md, Spaces); overrides env", table
    )
    action_space: dict[str, Any] = setting({}, "explicit action space; overrides env", table)


@dataclass(frozen=True)
class StudentSettings(Section):
    plugin: str = selection("student")
    params: dict[str, Any] = component_params("student")


@dataclass(frozen=True)
class TeacherSettings(Section):
    plugin: str = selection("teacher")
    params: dict[str, Any] = component_params("teacher")
    timeout_ms: int = setting(
        200, "how long decision waits for the teacher to act before keeping the student's action", _TIMEOUT_MS
    )
    cache_size: int = setting(
        100_000,
        "teacher answers remembered by observation, so no question is paid twice (0: off)",
        and_(integer, ge(0)),
    )
    batch_max: int = setting(
        1024, "observations the teacher labels in one call, from requests that arrived together", positive_int
    )
    batch_wait_ms: int = setting(
        0,
        "how long the teacher waits for more requests to fill its batch (0: takes what is queued)",
        and_(integer, ge(0), le(_MAX_TIMEOUT_MS)),
    )
    cache_bytes: int = setting(
        32 << 20,
        "memory the teacher answer cache may hold, keys and answers (whichever bound is smaller wins)",
        positive_int,
    )
    cache_decimals: int = setting(-1, "round observations to this many decimals for the cache key (-1: exact)", integer)
    # Auto: a teacher is the large model, and batched on a GPU it is an order of magnitude faster.
    device: str = device_setting("auto", "a torch teacher runs (others stay on the CPU under auto)")
    dtype: str = dtype_setting("the teacher", "its answers come back float32")


@dataclass(frozen=True)
class QuerySettings(Section):
    policy: str = selection("query")
    params: dict[str, Any] = component_params("query")
    max_peer_label_share: float = setting(
        0.8,
        "largest share of recent teacher labels (and teacher actions) one peer may take while other peers are "
        "labelled too; beyond it the student alone decides for that peer (1: no limit)",
        and_(number, gt(0), le(1)),
    )
    peer_share_window_s: float = setting(
        30.0,
        "that share is of labels decayed with this time constant, among peers that sent observations this recently",
        _POSITIVE_NUMBER,
    )


@dataclass(frozen=True)
class DistillationSettings(Section):
    strategy: str = selection("distillation")
    params: dict[str, Any] = component_params("distillation")
    learning_rate: float = setting(3e-3, "Adam learning rate", _POSITIVE_NUMBER)
    batch_size: int = setting(128, "training minibatch size", positive_int)
    min_samples: int = setting(64, "labelled samples needed before training starts", positive_int)
    buffer_samples: int = setting(50_000, "replay buffer capacity in samples", positive_int)
    buffer_bytes: int = setting(
        64 << 20, "replay buffer capacity in bytes (whichever bound is smaller wins)", positive_int
    )
    eviction: str = setting("oldest", "which sample a full buffer drops", in_("oldest", "lowest_priority"))
    prioritized: bool = setting(False, "sample minibatches in proportion to the student's per-sample loss", boolean)
    priority_alpha: float = setting(0.6, "how strongly priorities skew sampling (0: uniform)", and_(number, ge(0)))
    heldout_share: float = setting(0.1, "share of labelled samples kept out of training for the promotion gate", share)
    heldout_samples: int = setting(2000, "size of the held-out set (newest kept)", positive_int)
    min_heldout: int = setting(32, "held-out samples needed before the gate can refuse a candidate", positive_int)
    promotion_margin: float = setting(
        0.02,
        "a candidate may be this much worse in held-out agreement than the serving version and still be promoted",
        and_(number, ge(0)),
    )
    keep_versions: int = setting(
        100,
        "newest student versions kept (registry rows and checkpoint files); the serving one and its "
        "ancestors back to the last promoted one always are",
        positive_int,
    )
    teacher_features: bool = setting(
        False, "ask the teacher for its hidden features too (for feature-hint strategies)", boolean
    )
    label_batch: int = setting(32, "samples sent to the teacher per request", positive_int)
    label_wait_ms: int = setting(20, "longest a sample waits for its teacher batch to fill", positive_int)
    publish_interval_s: float = setting(1.0, "how often new student weights are published", _POSITIVE_NUMBER)
    steps_per_publish: int = setting(
        200, "training steps between publications (whichever comes later with the interval)", positive_int
    )
    torch_threads: int = setting(1, "torch threads for training, so serving is not starved", positive_int)
    cpu_share: float = setting(0.5, "largest share of one core the training loop may use", and_(number, gt(0), le(1)))
    seed: int = setting(0, "seed for the student's initial weights and minibatch sampling", integer)
    # CPU: a small student trains as fast there; a pixel student may want "auto". bfloat16 is autocast.
    device: str = device_setting("cpu", "training runs")
    dtype: str = dtype_setting("training", "bfloat16 is mixed precision with float32 weights; no float16")


@dataclass(frozen=True)
class DecisionSettings(Section):
    batch_max: int = setting(64, "largest batch of observations decided at once", positive_int)
    torch_threads: int = setting(1, "torch threads for the student's forward pass", positive_int)
    # CPU: a small student answers fastest there, in numpy (runtime/learn/fastpath.py), CPU float32 only.
    device: str = device_setting("cpu", "the serving student runs")
    dtype: str = dtype_setting("the serving student", "other than float32 on the CPU, torch serves, not numpy")


@dataclass(frozen=True)
class PerceptionSettings(Section):
    transforms: list[str] = selection("perception")
    params: dict[str, Any] = component_params("perception")


@dataclass(frozen=True)
class ExecutionSettings(Section):
    filters: list[str] = selection("execution")
    params: dict[str, Any] = component_params("execution")


@dataclass(frozen=True)
class PluginSettings(Section):
    disable: list[str] = setting([], "plugin names (entry-point names) not to load", _NAMES)
    autoload: bool = setting(True, "load third-party plugins from the 'agentrt' entry-point group", boolean)
    load: list[str] = setting([], "third-party plugins loaded even when autoload is off", _NAMES)


@dataclass(frozen=True)
class SecuritySettings(Section):
    curve: bool = setting(False, "require CURVE (authenticated, encrypted) connections on the peer endpoint", boolean)
    keys_dir: str = setting(
        "",
        "CURVE keys: server.key, server.key_secret, authorized/<peer>.key (agentrt keys); "
        "empty: $XDG_CONFIG_HOME/agentrt/keys or ~/.config/agentrt/keys",
        string,
    )
    insecure: bool = setting(
        False,
        "allow a peer endpoint (or agentrt teacher serve --endpoint) reachable from other hosts without CURVE "
        "(anyone reaching it drives the agent)",
        boolean,
    )

    def keys(self) -> KeyStore:
        return KeyStore(self.keys_dir or default_keys_dir())


def _tcp_base(value: Any) -> bool:
    host, _, port = value.removeprefix("tcp://").rpartition(":")
    return value.startswith("tcp://") and bool(host) and port.isdigit() and 0 < int(port) <= 65535 - 16


#: Roles that can run on another host: those whose sockets towards the daemon's host turn around
#: (the daemon's side binds, the remote role connects). The others bind inputs their upstream dials.
REMOTE_CAPABLE = ("teacher",)


@dataclass(frozen=True)
class InternalSettings(Section):
    endpoints: str = setting(
        "ipc",
        "the sockets between roles: ipc (files in the run directory, this host only) or tcp://HOST:PORT "
        f"(TCP on HOST, ports PORT to PORT+{len(NETWORK_ENDPOINTS) - 1}; what remote roles --connect to)",
        or_(in_("ipc"), Validator("tcp://HOST:PORT", lambda v: isinstance(v, str) and _tcp_base(v))),
    )
    curve: bool = setting(
        True,
        "CURVE on TCP internal endpoints: the runtime's key pair and keys/roles/<name>.key (agentrt keys "
        "authorize --role) are let in, nothing else",
        boolean,
    )
    heartbeat_s: float = setting(
        2.0,
        "a TCP connection between roles that stops answering ZeroMQ heartbeats this long is closed and "
        "dialled again (and so is a dial that takes this long)",
        and_(number, gt(0), le(600)),
    )
    remote_roles: list[str] = setting(
        [],
        "roles the daemon does not start: they run on other hosts (agentrt role NAME --connect "
        f"tcp://HOST:PORT) and join its supervision; can be remote: {', '.join(REMOTE_CAPABLE)}",
        list_of(in_(*REMOTE_CAPABLE), min_length=0),
    )


@dataclass(frozen=True)
class Settings:
    """The whole configuration, typed: what roles and the learning core read. ``load`` returns its
    TOML-shaped form (``Config``), which travels to the roles as JSON; ``Settings.of`` types it."""

    daemon: DaemonSettings
    protocol: ProtocolSettings
    agent: AgentSettings
    student: StudentSettings
    teacher: TeacherSettings
    query: QuerySettings
    distillation: DistillationSettings
    decision: DecisionSettings
    perception: PerceptionSettings
    execution: ExecutionSettings
    plugins: PluginSettings
    security: SecuritySettings
    internal: InternalSettings

    @classmethod
    def of(cls, config: Mapping[str, Mapping[str, Any]]) -> Settings:
        """Type a configuration ``load`` (or ``merge``) produced, so already checked."""
        sections: dict[str, Any] = {name: section(**config[name]) for name, section in SECTIONS.items()}
        return cls(**sections)

    def as_config(self) -> Config:
        return {name: getattr(self, name).table() for name in SECTIONS}


SECTIONS: dict[str, type[Section]] = {
    name: section for name, section in get_type_hints(Settings).items() if isinstance(section, type)
}

# section -> key -> Param, read from the dataclasses above.
SCHEMA: dict[str, dict[str, Param]] = {
    name: {key.name: key.metadata[_PARAM] for key in fields(section)}  # type: ignore[arg-type]
    for name, section in SECTIONS.items()
}
for _point in EXTENSION_POINTS.values():
    assert _point.key in SCHEMA[_point.section], f"[{_point.section}] lacks the key {_point.key} that selects it"


def defaults() -> Config:
    return {
        section: {key: copy.deepcopy(spec.default) for key, spec in keys.items()} for section, keys in SCHEMA.items()
    }


# One Params per section, so that a key's value is checked, and its error worded, as a component's parameter is.
_SECTIONS = {section: Params(section, keys) for section, keys in SCHEMA.items()}


def _check_value(section: str, key: str, value: Any, origin: str) -> Any:
    try:
        return _SECTIONS[section].check(key, value)
    except ConfigError as exc:
        # Users and scripts grep for the dotted key; the origin says which file or variable to fix.
        raise type(exc)(f"{exc}; key {section}.{key} in {_where(origin, section, key)}") from None


def _where(origin: str, section: str, key: str) -> str:
    """The file, or for the environment the variable, that set ``section.key``."""
    return f"environment variable {ENV_PREFIX}{section.upper()}_{key.upper()}" if origin == ENVIRONMENT else origin


def merge(config: Config, overrides: Mapping[str, Any], origin: str) -> Config:
    """Return ``config`` updated with a TOML-shaped mapping; unknown sections and keys are errors."""
    result = copy.deepcopy(config)
    for section, values in overrides.items():
        if section not in SCHEMA:
            raise ConfigError(f"{origin}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise ConfigError(
                    f"{_where(origin, section, key)}: unknown key {section}.{key}; known: {', '.join(SCHEMA[section])}"
                )
            result[section][key] = _check_value(section, key, value, origin)
    return result


def _env_value(raw: str, spec: Param | None) -> Any:
    """Environment values are TOML values (``0.5``, ``true``, ``[32, 32]``); a string key (one whose
    default is a string) takes the raw text, and a list key also takes comma-separated words
    (``AGENTRT_PLUGINS_DISABLE=a,b``)."""
    if spec is not None and isinstance(spec.default, str):
        return raw
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        if spec is not None and isinstance(spec.default, list):
            return [word.strip() for word in raw.split(",") if word.strip()]
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NON_CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest == "run_dir":
            overrides.setdefault("daemon", {})["run_dir"] = raw
            continue
        for section in SCHEMA:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                value = _env_value(raw, SCHEMA[section].get(key))
                overrides.setdefault(section, {})[key] = value
                break
        else:
            raise ConfigError(
                f"environment variable {name}: no configuration section matches; variables named "
                f"{ENV_PREFIX}<SECTION>_<KEY> configure agentrt (unset or rename it); sections: {', '.join(SCHEMA)}"
            )
    return overrides


# Variables with the prefix that are not configuration keys.
_NON_CONFIG_ENV = frozenset({"AGENTRT_CONFIG", TRACE_ENV})


def load(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """The effective configuration. ``path`` defaults to ``$AGENTRT_CONFIG`` or ./agentrt.toml if present."""
    environ = os.environ if environ is None else environ
    config = defaults()
    path = _config_path(path, environ)
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        config = merge(config, data, str(path))
    config = merge(config, env_overrides(environ), ENVIRONMENT)
    if overrides:
        config = merge(config, overrides, "command line")
    # Absolute: the roles and the daemon started with --detach do not share the caller's working directory.
    config["daemon"]["run_dir"] = str(Path(config["daemon"]["run_dir"] or default_run_dir(environ)).absolute())
    _check_deadlines(config["daemon"])
    if config["internal"]["remote_roles"] and config["internal"]["endpoints"] == "ipc":
        raise ConfigError(
            "internal.remote_roles needs internal.endpoints = tcp://HOST:PORT: "
            "roles on other hosts cannot reach ipc files"
        )
    return config


def _config_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> str | os.PathLike[str] | None:
    return path or environ.get("AGENTRT_CONFIG") or (CONFIG_FILE_NAME if Path(CONFIG_FILE_NAME).exists() else None)


def find_run_dir(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``daemon.run_dir`` alone, where ``load`` fails on another key: so that a typo made in the
    file since a daemon started does not keep its user from reaching it (``status``, ``down``).
    From the environment, else the file's ``[daemon]`` table if it parses, else the default."""
    environ = os.environ if environ is None else environ
    found = environ.get(f"{ENV_PREFIX}RUN_DIR") or environ.get(f"{ENV_PREFIX}DAEMON_RUN_DIR")
    path = _config_path(path, environ)
    if not found and path is not None:
        try:
            with open(path, "rb") as handle:
                daemon = tomllib.load(handle).get("daemon")
        except (OSError, tomllib.TOMLDecodeError):
            daemon = None
        value = daemon.get("run_dir") if isinstance(daemon, dict) else None
        found = value if isinstance(value, str) else None
    return str(Path(found or default_run_dir(environ)).absolute())


def _check_deadlines(daemon: Mapping[str, Any]) -> None:
    """Liveness deadlines that healthy roles cannot meet would have them reported, or killed, for the
    silence between two reports: refuse them, naming both keys."""
    unresponsive, kill = daemon["unresponsive_after_s"], daemon["kill_unresponsive_after_s"]
    if unresponsive <= daemon["stats_interval_s"]:
        raise ConfigError(
            f"daemon.unresponsive_after_s must be more than daemon.stats_interval_s "
            f"(got {unresponsive:g} and {daemon['stats_interval_s']:g})"
        )
    if kill < unresponsive:
        raise ConfigError(
            f"daemon.kill_unresponsive_after_s must be at least daemon.unresponsive_after_s "
            f"(got {kill:g} and {unresponsive:g})"
        )


def endpoint_security(endpoint: str, curve: bool, insecure: bool, what: str, exposed: str) -> str:
    """How ``endpoint`` (``what`` binds it) is protected: "curve", "loopback" (reachable from this
    host only) or "insecure" (reachable from others, without CURVE, as ``insecure`` allows).
    ConfigError for an endpoint reachable from other hosts without either; ``exposed`` says what
    anyone reaching it could do, and the safer choices."""
    if curve:
        return "curve"
    if is_loopback(endpoint):
        return "loopback"
    if insecure:
        return "insecure"
    raise ConfigError(
        f"{what} {endpoint} is reachable from other hosts, and without CURVE {exposed}, "
        "or accept the risk with --insecure (security.insecure = true)"
    )


def peer_security(settings: Settings) -> str:
    """How the peer endpoint is protected (endpoint_security)."""
    return endpoint_security(
        settings.daemon.peer_endpoint,
        settings.security.curve,
        settings.security.insecure,
        "the peer endpoint",
        "anyone who reaches it drives the agent: set security.curve = true (keys: agentrt keys generate), "
        "bind 127.0.0.1",
    )


def internal_network(settings: Settings, remote: ClientKeys | None = None, joining: bool = False) -> Network | None:
    """The TCP layout of the internal endpoints, None for ipc. On the daemon's host (``joining``
    False) roles bind with the runtime's secret key and present its pair; a role ``joining`` from
    another host binds nothing internal and presents ``remote``, its own pair. ConfigError for a
    plaintext layout others can reach, unless security.insecure accepts it."""
    internal = settings.internal
    if internal.endpoints == "ipc":
        return None
    host, _, port = internal.endpoints.removeprefix("tcp://").rpartition(":")
    heartbeat_ms = max(1, round(internal.heartbeat_s * 1000))
    if not internal.curve:
        endpoint_security(
            internal.endpoints,
            False,
            settings.security.insecure,
            "internal.endpoints",
            "anyone who reaches it can pose as a role: set internal.curve = true, use a loopback address",
        )
        return Network(host, int(port), heartbeat_ms)
    if joining:
        if remote is None:
            raise ConfigError(
                "internal.curve is on: a remote role needs the runtime's public key and its own key pair "
                "(--server-key server.key --client-key NAME.key_secret)"
            )
        return Network(host, int(port), heartbeat_ms, client=remote)
    store = settings.security.keys()
    return Network(
        host,
        int(port),
        heartbeat_ms,
        client=ClientKeys.own(store),
        server_secret=store.server_secret(),
        roles=RoleKeys(store),
    )


def default_run_dir(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_RUNTIME_DIR")
    return str(Path(base) / "agentrt") if base else f"/tmp/agentrt-{os.getuid()}"


def to_toml(config: Config, annotate: bool = False) -> str:
    """Render a configuration as TOML (``agentrt config show``); ``annotate`` adds each key's doc."""
    lines: list[str] = []
    for section, values in config.items():
        plain = {k: v for k, v in values.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines.append(f"[{section}]")
        for key, value in plain.items():
            if annotate:
                lines.append(f"# {SCHEMA[section][key].doc}")
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
        for key, value in tables.items():
            if annotate:
                lines.append(f"# {SCHEMA[section][key].doc}")
            lines.append(f"[{section}.{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
            lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)
