"""The layout is the architecture: imports point one way, from the command line down to the wire.

    base (errors, logs, files, processes, rundir)
      <- wire <- plugin (and hookspecs) <- config <- learn <- roles <- supervisor <- cli
    wire <- peer (the SDK: never plugins, learning or torch)
    plugin, config, learn <- plugins (the built-ins, loaded through entry points like any other)

Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = {
    "runtime",
    "runtime.errors",
    "runtime.extras",
    "runtime.logs",
    "runtime.files",
    "runtime.processes",
    "runtime.rundir",
}
ORDER = ["base", "wire", "plugin", "config", "learn", "roles", "supervisor", "cli"]
ALLOWED = {layer: set(ORDER[: index + 1]) for index, layer in enumerate(ORDER)}
ALLOWED["peer"] = {"base", "wire", "peer"}
ALLOWED["cli"] |= {"peer"}
ALLOWED["plugins"] = {"base", "wire", "plugin", "config", "learn", "plugins"}


def layer_of(module: str) -> str | None:
    if module in BASE:
        return "base"
    if module == "runtime.hookspecs":
        return "plugin"
    if module == "runtime.config":
        return "config"
    if module in ("runtime.__main__", "runtime.testing"):
        return "cli"
    parts = module.split(".")
    if parts[0] == "plugins":
        return "plugins"
    if parts[0] == "runtime" and len(parts) > 1:
        return parts[1]
    return None  # not ours


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from runtime import rundir` imports the module runtime.rundir
            found |= {f"{node.module}.{alias.name}" for alias in node.names if is_module(f"{node.module}.{alias.name}")}
    return found


SOURCES = sorted(p for package in ("runtime", "plugins") for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path):
    importer = module_name(path)
    layer = layer_of(importer)
    assert layer in ALLOWED, f"{importer} is in no layer: place it, and say where in docs/architecture.md"
    wrong = sorted(
        m
        for m in imports_of(path)
        if layer_of(m) is not None and layer_of(m) not in ALLOWED[layer] and m != "runtime.hookimpl"
    )
    assert not wrong, f"{importer} ({layer}) imports {wrong}"


def test_every_layer_has_a_home():
    layers = {layer_of(module_name(path)) for path in SOURCES}
    assert layers == set(ALLOWED)
