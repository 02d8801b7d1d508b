"""Entry point of a role process: ``python -m runtime.roles ROLE --run-dir DIR``."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import structlog

from runtime.pluginmanager import PluginError
from runtime.roles import ROLE_MODULES
from runtime.roles.base import EX_CONFIG


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.roles")
    parser.add_argument("role", choices=sorted(ROLE_MODULES))
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    # The daemon writes the effective configuration once, so every role runs with exactly the same one.
    config = json.loads((Path(args.run_dir) / "config.json").read_text())
    module_name, _, class_name = ROLE_MODULES[args.role].partition(":")
    role_class = getattr(importlib.import_module(module_name), class_name)
    try:
        role = role_class(config)
    except PluginError as exc:
        # Role.__init__ configured logging before loading plugins, so this line is structured too.
        structlog.get_logger().error("role_setup_failed", error=str(exc))
        return EX_CONFIG
    return role.run()


if __name__ == "__main__":
    raise SystemExit(main())
