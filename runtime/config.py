"""Configuration: defaults for every key, ``agentrt.toml``, environment overrides, validation.

Precedence, lowest first: built-in defaults, the TOML file, ``AGENTRT_<SECTION>_<KEY>`` environment
variables (``AGENTRT_RUN_DIR`` is a shorthand for ``AGENTRT_DAEMON_RUN_DIR``), command-line flags.
An unknown section or key, or a value of the wrong type, fails with a message naming the key.
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from runtime.errors import ConfigError
from runtime.wire.protocol import DEFAULT_MAX_MESSAGE_BYTES

CONFIG_FILE_NAME = "agentrt.toml"
ENV_PREFIX = "AGENTRT_"


@dataclass(frozen=True)
class Key:
    default: Any
    type: type | tuple[type, ...]
    doc: str
    check: Callable[[Any], bool] | None = None
    expect: str = ""


def _choice(*options: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda value: value in options), "one of " + ", ".join(repr(o) for o in options)


def _positive(value: Any) -> bool:
    return value > 0


def _share(value: Any) -> bool:
    return 0.0 <= value <= 1.0


NUMBER = (int, float)

# section -> key -> Key. Tables named ``params`` hold a plugin's own parameters; the plugin validates them.
SCHEMA: dict[str, dict[str, Key]] = {
    "daemon": {
        "run_dir": Key("", str, "run directory for sockets, pid file, logs and checkpoints; empty: $XDG_RUNTIME_DIR/agentrt or /tmp/agentrt-<uid>"),
        "peer_endpoint": Key("tcp://127.0.0.1:7411", str, "where peers connect (ZeroMQ endpoint the gateway binds)"),
        "log_format": Key("auto", str, "auto (json unless stderr is a terminal), json or console", *_choice("auto", "json", "console")),
        "log_level": Key("info", str, "debug, info, warning or error", *_choice("debug", "info", "warning", "error")),
        "restart_backoff_s": Key(0.1, NUMBER, "first delay before restarting a crashed role; doubles per crash", _positive, "> 0"),
        "restart_backoff_max_s": Key(10.0, NUMBER, "largest restart delay", _positive, "> 0"),
        "restart_reset_s": Key(30.0, NUMBER, "a role up this long has its backoff reset", _positive, "> 0"),
        "stop_timeout_s": Key(4.0, NUMBER, "grace period for roles to exit on shutdown before SIGKILL", _positive, "> 0"),
        "stats_interval_s": Key(0.25, NUMBER, "how often roles report counters to the daemon", _positive, "> 0"),
        "socket_linger_ms": Key(200, int, "how long a closing socket may flush pending messages", lambda v: v >= 0, ">= 0"),
    },
    "protocol": {
        "max_message_bytes": Key(DEFAULT_MAX_MESSAGE_BYTES, int, "largest message accepted; larger ones get MESSAGE_TOO_LARGE", _positive, "> 0"),
        "peer_timeout_s": Key(30.0, NUMBER, "a peer silent this long is detached", _positive, "> 0"),
    },
    "agent": {
        "env": Key("CartPole-v1", str, "Gymnasium environment id whose spaces the agent uses, unless the spaces are given below"),
        "observation_space": Key({}, dict, "explicit observation space (docs/protocol.md, Spaces); overrides env"),
        "action_space": Key({}, dict, "explicit action space; overrides env"),
    },
    "student": {
        "plugin": Key("mlp", str, "student model factory, by name (agentrt plugins)"),
        "params": Key({}, dict, "parameters for the student factory (each component has its own defaults)"),
    },
    "teacher": {
        "plugin": Key("checkpoint", str, "teacher factory, by name"),
        "params": Key({}, dict, "parameters for the teacher factory (the checkpoint teacher defaults to builtin:cartpole)"),
        "timeout_ms": Key(200, int, "how long decision waits for the teacher to act before keeping the student's action", _positive, "> 0"),
        "cache_size": Key(100_000, int, "teacher answers remembered by observation, so no question is paid twice (0: off)", lambda v: v >= 0, ">= 0"),
        "cache_decimals": Key(-1, int, "round observations to this many decimals for the cache key (-1: exact)"),
    },
    "query": {
        "policy": Key("cascade", str, "teacher query policy, by name"),
        "params": Key({}, dict, "parameters for the query policy (each policy has its own defaults)"),
    },
    "distillation": {
        "strategy": Key("soft_target", str, "distillation strategy (loss), by name"),
        "params": Key({}, dict, "parameters for the strategy (soft_target defaults to temperature 2, alpha 0.5)"),
        "learning_rate": Key(3e-3, NUMBER, "Adam learning rate", _positive, "> 0"),
        "batch_size": Key(128, int, "training minibatch size", _positive, "> 0"),
        "min_samples": Key(64, int, "labelled samples needed before training starts", _positive, "> 0"),
        "buffer_samples": Key(50_000, int, "replay buffer capacity in samples", _positive, "> 0"),
        "buffer_bytes": Key(64 << 20, int, "replay buffer capacity in bytes (whichever bound is smaller wins)", _positive, "> 0"),
        "eviction": Key("oldest", str, "which sample a full buffer drops", *_choice("oldest", "lowest_priority")),
        "prioritized": Key(False, bool, "sample minibatches in proportion to the student's per-sample loss"),
        "priority_alpha": Key(0.6, NUMBER, "how strongly priorities skew sampling (0: uniform)", lambda v: v >= 0, ">= 0"),
        "heldout_share": Key(0.1, NUMBER, "share of labelled samples kept out of training for the promotion gate", _share, "in [0, 1]"),
        "heldout_samples": Key(2000, int, "size of the held-out set (newest kept)", _positive, "> 0"),
        "min_heldout": Key(32, int, "held-out samples needed before the gate can refuse a candidate", _positive, "> 0"),
        "promotion_margin": Key(0.02, NUMBER, "a candidate may be this much worse in held-out agreement than the serving version and still be promoted", lambda v: v >= 0, ">= 0"),
        "keep_checkpoints": Key(100, int, "newest checkpoint files kept on disk (the serving one always is)", _positive, "> 0"),
        "teacher_features": Key(False, bool, "ask the teacher for its hidden features too (for feature-hint strategies)"),
        "label_batch": Key(32, int, "samples sent to the teacher per request", _positive, "> 0"),
        "label_wait_ms": Key(20, int, "longest a sample waits for its teacher batch to fill", _positive, "> 0"),
        "publish_interval_s": Key(1.0, NUMBER, "how often new student weights are published", _positive, "> 0"),
        "steps_per_publish": Key(200, int, "training steps between publications (whichever comes later with the interval)", _positive, "> 0"),
        "torch_threads": Key(1, int, "torch threads for training, so serving is not starved", _positive, "> 0"),
        "cpu_share": Key(0.5, NUMBER, "largest share of one core the training loop may use", lambda v: 0 < v <= 1, "in (0, 1]"),
        "seed": Key(0, int, "seed for the student's initial weights and minibatch sampling"),
    },
    "decision": {
        "batch_max": Key(64, int, "largest batch of observations decided at once", _positive, "> 0"),
        "torch_threads": Key(1, int, "torch threads for the student's forward pass", _positive, "> 0"),
    },
    "perception": {
        "transforms": Key([], list, "perception transforms, applied in this order"),
        "params": Key({}, dict, "parameters per transform: [perception.params.<name>]"),
    },
    "execution": {
        "filters": Key(["clip"], list, "execution filters, applied in this order"),
        "params": Key({}, dict, "parameters per filter: [execution.params.<name>]"),
    },
    "plugins": {
        "disable": Key([], list, "plugin names (entry-point names) not to load"),
        "autoload": Key(True, bool, "load third-party plugins from the 'agentrt' entry-point group"),
        "load": Key([], list, "third-party plugins loaded even when autoload is off"),
    },
}


Config = dict[str, dict[str, Any]]


def defaults() -> Config:
    return {section: {key: copy.deepcopy(spec.default) for key, spec in keys.items()} for section, keys in SCHEMA.items()}


def _check_value(section: str, key: str, value: Any) -> Any:
    spec = SCHEMA[section][key]
    allowed = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{section}.{key}: expected {_type_names(allowed)}, got {value!r}")
    if not isinstance(value, allowed):
        raise ConfigError(f"{section}.{key}: expected {_type_names(allowed)}, got {type(value).__name__} {value!r}")
    if spec.check is not None and not spec.check(value):
        raise ConfigError(f"{section}.{key}: {value!r} is not allowed; expected {spec.expect}")
    if float in allowed and isinstance(value, int):
        value = float(value)
    return value


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def merge(config: Config, overrides: Mapping[str, Any], origin: str) -> Config:
    """Return ``config`` updated with a TOML-shaped mapping; unknown sections and keys are errors."""
    result = copy.deepcopy(config)
    for section, table in overrides.items():
        if section not in SCHEMA:
            raise ConfigError(f"{origin}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in table.items():
            if key not in SCHEMA[section]:
                raise ConfigError(f"{origin}: unknown key {section}.{key}; known: {', '.join(SCHEMA[section])}")
            result[section][key] = _check_value(section, key, value)
    return result


def _env_value(raw: str, spec: Key | None) -> Any:
    """Environment values are TOML values (``0.5``, ``true``, ``[32, 32]``); a string key takes the raw
    text, and a list key also takes comma-separated words (``AGENTRT_PLUGINS_DISABLE=a,b``)."""
    if spec is not None and spec.type is str:
        return raw
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        if spec is not None and spec.type is list:
            return [word.strip() for word in raw.split(",") if word.strip()]
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NON_CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if rest == "run_dir":
            overrides.setdefault("daemon", {})["run_dir"] = raw
            continue
        for section in SCHEMA:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                value = _env_value(raw, SCHEMA[section].get(key))
                overrides.setdefault(section, {})[key] = value
                break
        else:
            raise ConfigError(f"environment variable {name}: no configuration section matches; sections: {', '.join(SCHEMA)}")
    return overrides


# Variables with the prefix that are not configuration keys.
_NON_CONFIG_ENV = frozenset({"AGENTRT_CONFIG", "AGENTRT_DAEMON_PID"})


def load(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """The effective configuration. ``path`` defaults to ``$AGENTRT_CONFIG`` or ./agentrt.toml if present."""
    environ = os.environ if environ is None else environ
    config = defaults()
    if path is None:
        path = environ.get("AGENTRT_CONFIG") or (CONFIG_FILE_NAME if Path(CONFIG_FILE_NAME).exists() else None)
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        config = merge(config, data, str(path))
    config = merge(config, env_overrides(environ), "environment")
    if overrides:
        config = merge(config, overrides, "command line")
    if not config["daemon"]["run_dir"]:
        config["daemon"]["run_dir"] = default_run_dir(environ)
    return config


def default_run_dir(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_RUNTIME_DIR")
    return str(Path(base) / "agentrt") if base else f"/tmp/agentrt-{os.getuid()}"


def to_toml(config: Config, annotate: bool = False) -> str:
    """Render a configuration as TOML (``agentrt config show``); ``annotate`` adds each key's doc."""
    lines: list[str] = []
    for section, table in config.items():
        plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
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
