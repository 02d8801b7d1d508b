"""Optional dependencies (the extras in pyproject.toml): asked for when a command starts, so that a
missing one is a one-line message naming what to install, never a crash at the end of a long run."""

from __future__ import annotations

import importlib

from runtime.errors import ConfigError

#: What pip installs for a module whose import name differs from its package's.
PACKAGES = {"sklearn": "scikit-learn"}


class MissingExtra(ConfigError):
    """An optional package the requested work needs is not installed (exit status 2, usage)."""


def require(module: str, extra: str, needed_for: str) -> None:
    """Import ``module`` now; MissingExtra, one line naming ``extra`` (one of pyproject.toml's
    ``[project.optional-dependencies]``, which installs it) if it cannot be.

    Imported rather than looked up, so that a package present but broken counts as missing too."""
    try:
        importlib.import_module(module)
    except ImportError:
        package = PACKAGES.get(module, module)
        raise MissingExtra(
            f"{needed_for} needs {package}, which is not installed: pip install 'agentrt[{extra}]'"
        ) from None
