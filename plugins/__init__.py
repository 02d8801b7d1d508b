"""The built-in plugins of agentrt, registered through the ``agentrt`` entry-point group like any third-party plugin."""
