"""Entry point of a role process: ``python -m runtime.roles ROLE --run-dir DIR``."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import structlog

from runtime import rundir
from runtime.errors import ConfigError, ExitCode, PluginError
from runtime.roles import ROLE_MODULES
from runtime.roles.base import report_exit


def run(role_name: str, run_dir: str) -> int:
    """Run one role until it is told to stop; the exit status tells the daemon what happened."""
    # The daemon writes the effective configuration once, so every role runs with exactly the same one.
    config = json.loads((Path(run_dir) / rundir.CONFIG_SNAPSHOT).read_text())
    module_name, _, class_name = ROLE_MODULES[role_name].partition(":")
    role_class = getattr(importlib.import_module(module_name), class_name)
    try:
        role = role_class(config)
    except (PluginError, ConfigError) as exc:
        # Role.__init__ configured logging before loading plugins, so this line is structured too.
        structlog.get_logger().error("role_setup_failed", error=str(exc))
        report_exit(run_dir, role_name, ExitCode.CONFIG, str(exc))
        return ExitCode.CONFIG
    return role.run()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.roles")
    parser.add_argument("role", choices=sorted(ROLE_MODULES))
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    return run(args.role, args.run_dir)


if __name__ == "__main__":
    raise SystemExit(main())
