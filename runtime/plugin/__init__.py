"""The plugin kernel: the extension points, declared once (``points``), loading plugins and
building their components (``pluginmanager``), the interfaces and optional capabilities
components implement (``interfaces``), declared parameters (``params``), perception and
execution chains (``chains``) and per-stream state for them (``streams``).

The hook specifications themselves are ``runtime.hookspecs``, and ``runtime.hookimpl`` marks an
implementation.
"""
