"""agentrt: a plugin-based agent runtime where a small student decides and a large teacher keeps teaching it."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``runtime.hookimpl`` is made on first use so that the peer SDK (runtime.peer) needs no pluggy.
    if name == "hookimpl":
        import pluggy

        globals()["hookimpl"] = pluggy.HookimplMarker("agentrt")
        return globals()["hookimpl"]
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
