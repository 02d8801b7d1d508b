"""How the shipped teachers (``plugins/assets``) were made: run ``python -m runtime.learn.recipes.<task>``."""
