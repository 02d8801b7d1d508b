"""The plugin kernel: loading plugins and building their components (``pluginmanager``), the
interfaces components implement (``interfaces``), parameter checks (``params``), perception and
execution chains (``chains``) and per-stream state for them (``streams``).

The hook specifications themselves are ``runtime.hookspecs``, and ``runtime.hookimpl`` marks an
implementation.
"""
