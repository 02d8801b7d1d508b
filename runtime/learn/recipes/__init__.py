"""How the shipped teachers (``plugins/assets``) were made: run ``python -m runtime.learn.recipes.<task>``."""

from pathlib import Path

# The shipped checkpoints live with the built-in plugins (plugins/teachers.py BUILTIN_CHECKPOINTS):
# every recipe writes there by default, so running one refreshes the teacher the plugins load.
ASSETS = Path(__file__).resolve().parents[3] / "plugins" / "assets"
