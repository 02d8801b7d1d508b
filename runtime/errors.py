"""Exit codes of every agentrt command and process, defined once.

The values follow the conventions operators already know: sysexits(3) for configuration errors
(a supervisor such as systemd should not restart on 78) and coreutils' ``timeout`` for 124.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: The command or process failed; its message says why.
    FAILURE = 1
    #: Bad command-line usage or an invalid configuration file or variable.
    USAGE = 2
    #: A plugin or configuration that cannot work (sysexits EX_CONFIG): restarting cannot help.
    CONFIG = 78
    #: The work did not finish within the command's ``--wait``; it may still finish.
    TIMEOUT = 124
    #: Interrupted by Ctrl-C.
    INTERRUPTED = 130
