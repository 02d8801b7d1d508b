"""structlog set-up shared by every process: one event per line, each carrying role and pid."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class DroppingStderr:
    """Writes to the current ``sys.stderr``, and drops (and counts) a line it cannot write: a full
    disk or a closed pipe must cost log lines, never the process that logs."""

    def __init__(self) -> None:
        self.dropped = 0

    def write(self, text: str) -> None:
        try:
            sys.stderr.write(text)
        except OSError:
            self.dropped += 1

    def flush(self) -> None:
        with contextlib.suppress(OSError):  # the line it held was counted when its write failed
            sys.stderr.flush()


#: The stream every log line of this process goes through; ``dropped`` is reported in status.
output = DroppingStderr()


def configure(role: str, log_format: str = "auto", level: str = "info") -> structlog.stdlib.BoundLogger:
    """Configure structlog for this process and return a logger bound to ``role`` and ``pid``.

    ``auto`` writes JSON unless stderr is a terminal. Lines go to stderr, flushed per event, so a
    process that is killed loses nothing it already logged.
    """
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write per line (message and newline together) so lines of several processes never interleave.
        logger_factory=structlog.WriteLoggerFactory(file=output),  # type: ignore[arg-type]  # write/flush suffice
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role, pid=os.getpid())
    return structlog.get_logger()
