"""Make throwaway plugin distributions that importlib.metadata finds on a path, as pip would."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_distribution(site: Path, name: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """Write ``modules`` (name -> source) and a ``<name>-1.0.dist-info`` registering ``entry_points``
    (entry-point name -> module) in the ``agentrt`` group; return ``site`` for PYTHONPATH."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[agentrt]\n" + "".join(f"{ep} = {module}\n" for ep, module in entry_points.items()))
    return site
