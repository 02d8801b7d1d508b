"""Every error agentrt raises, in one tree, and the exit codes of its commands and processes.

::

    AgentrtError                    base of all; ``exit_code`` says how a command ends on it
    ├── ConfigError                 a configuration key or value is wrong; the message names it (2)
    │   └── ParamError              a configuration key's or a component's parameter does not fit
    ├── PluginError                 a plugin cannot load, or a component cannot be built (78)
    │   └── PluginFailure           a component raised, or returned something wrong, while serving
    ├── ProtocolError               a message breaks the wire protocol; carries its ErrorCode and seq
    ├── PeerError                   the runtime answered a peer's request with an error (the SDK's)
    ├── PeerTimeout                 no runtime answered a peer in time (the SDK's; a TimeoutError too) (124)
    ├── DaemonError                 the daemon cannot start here, or refused a control command
    │   ├── DaemonUnreachable       no daemon answers for this run directory
    │   └── RunDirError             the run directory cannot be written: a full disk, say (73)
    ├── DistillError                offline distillation cannot run with these inputs
    ├── CheckpointError             a student checkpoint (or the learner's data) cannot be read
    ├── ExportError                 a student version cannot be exported in the format asked for
    └── RegistryDamaged             the student registry (students.sqlite) is not a readable database

A command that fails on one of these prints ``agentrt <command>: <message>`` and exits with the
error's ``exit_code``; anything else is a bug and shows its traceback. Exit codes follow the
conventions operators know: sysexits(3) for configuration errors (a supervisor such as systemd
should not restart on 78) and files that cannot be created (73), and coreutils' ``timeout`` for 124.
"""

from __future__ import annotations

import enum
from typing import Protocol


class ExitCode(enum.IntEnum):
    OK = 0
    #: The command or process failed; its message says why.
    FAILURE = 1
    #: Bad command-line usage or an invalid configuration file or variable.
    USAGE = 2
    #: A file in the run directory cannot be created or written (sysexits EX_CANTCREAT): a full
    #: disk, a read-only file system, no permission.
    CANT_CREATE = 73
    #: A plugin or configuration that cannot work (sysexits EX_CONFIG): restarting cannot help.
    CONFIG = 78
    #: The work did not finish within the command's ``--wait``; it may still finish.
    TIMEOUT = 124
    #: Interrupted by Ctrl-C.
    INTERRUPTED = 130


class AgentrtError(Exception):
    """Base of every error agentrt raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE


class ConfigError(AgentrtError):
    """A configuration problem; the message names the offending key."""

    exit_code = ExitCode.USAGE


class ParamError(ConfigError, ValueError):
    """A value that does not fit a declared parameter (``runtime.plugin.params``), of a
    configuration section or of a component, in one form: ``<component>: parameter 'x' must be
    ... (got ...)``. Also a ValueError, which plugin code written against the earlier checks catches."""


class PluginError(AgentrtError):
    """A plugin could not be loaded or a component built; the message names the plugin and the hook."""

    exit_code = ExitCode.CONFIG


class NamedComponent(Protocol):
    """What an error needs to name a component (``runtime.plugin.pluginmanager.Component`` has it)."""

    @property
    def point(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def plugin(self) -> str: ...
    @property
    def hook(self) -> str: ...


class PluginFailure(PluginError):
    """A component raised, or returned something the runtime cannot use, while serving a request."""

    def __init__(self, component: NamedComponent, error: Exception) -> None:
        super().__init__(
            f"plugin {component.plugin!r} ({component.hook}): {component.point} {component.name!r} "
            f"failed: {type(error).__name__}: {error}"  # not "raised": a wrong return is one too
        )
        self.component = component
        self.error = error


class ProtocolError(AgentrtError):
    """A message that breaks the protocol; carries the ``ErrorCode`` and, when known, the offending
    ``seq`` and the message's ``kind`` (a refused ``bye`` or peer ``error`` is not answered)."""

    def __init__(self, code: int, message: str, seq: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.seq = seq
        self.kind = kind


class PeerError(AgentrtError):
    """The runtime refused a peer's request: ``code`` is a protocol ErrorCode, ``seq`` the request's."""

    def __init__(self, code: int, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.seq = seq


class PeerTimeout(AgentrtError, TimeoutError):
    """No runtime answered a peer within its wait: none runs at the endpoint, or one with CURVE
    refused the peer's key, which to the peer looks the same. Also a TimeoutError, as the SDK's
    waits raised before."""

    exit_code = ExitCode.TIMEOUT


class DaemonError(AgentrtError):
    """The daemon cannot start with this run directory, or it refused a control command."""


class DaemonUnreachable(DaemonError):
    """No daemon answers on the control socket of this run directory."""


class RunDirError(DaemonError):
    """A file in the run directory cannot be created or written (a full disk, a read-only file
    system, no permission); the message names the file and the operating system's reason."""

    exit_code = ExitCode.CANT_CREATE


class DistillError(AgentrtError):
    """Offline distillation cannot run with these inputs (a missing dataset, a teacher that does not fit)."""


class CheckpointError(AgentrtError):
    """A checkpoint file cannot be read: truncated, overwritten, not safetensors. A file that reads
    but does not fit the configured student is not this: that is a configuration problem."""


class ExportError(AgentrtError):
    """A student version cannot be exported: no such version, or a format its network cannot be
    written in (``runtime.learn.export``); the message names the formats it can."""


class RegistryDamaged(AgentrtError):
    """``students.sqlite`` is not a readable database (header overwritten, truncated); the
    distiller moves it aside and rebuilds it from the checkpoints' own metadata when it starts."""
