"""The ``agentrt`` command line: commands (``commands``), terminal views (``display``), the demo."""

from runtime.cli.commands import main

__all__ = ["main"]
