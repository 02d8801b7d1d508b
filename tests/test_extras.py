"""Optional dependencies: a missing one stops a command at its start with one line naming the
extra to install, before any work that it would otherwise lose at the end."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from runtime import extras

ROOT = Path(__file__).resolve().parent.parent

# Runs a command with some modules made unimportable (``sys.modules[name] = None`` makes their
# import raise ImportError), as if their extra were not installed.
BLOCKING = (
    "import runpy, sys\n"
    "for name in sys.argv[1].split(','): sys.modules[name] = None\n"
    "target, sys.argv = sys.argv[2], sys.argv[2:]\n"
    "if target.endswith('.py'): runpy.run_path(target, run_name='__main__')\n"
    "else: from runtime.cli import main; sys.exit(main(sys.argv[1:]))\n"
)


def run_without(modules: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKING, modules, *command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def pyproject_extra(name: str) -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][name]


@pytest.mark.parametrize(
    "modules, command, extra, package",
    [
        ("matplotlib", ("benchmarks/label_efficiency.py", "--quick", "--plot", "curves.png"), "bench", "matplotlib"),
        (
            "mujoco",
            ("benchmarks/label_efficiency.py", "--quick", "--env", "inverted_double_pendulum"),
            "mujoco",
            "mujoco",
        ),
        ("psutil", ("benchmarks/latency.py",), "bench", "psutil"),
        ("matplotlib", ("benchmarks/latency.py", "--plot", "latency.png"), "bench", "matplotlib"),
        ("sklearn", ("agentrt", "distill", "--seeds", "1"), "offline", "scikit-learn"),
        ("matplotlib", ("agentrt", "distill", "--seeds", "1", "--plot", "bars.png"), "offline", "matplotlib"),
        ("matplotlib", ("agentrt", "demo"), "bench", "matplotlib"),
    ],
)
def test_a_missing_extra_stops_the_command_at_its_start(modules, command, extra, package, tmp_path):
    result = run_without(modules, *command)
    assert result.returncode == 2, result.stderr
    message = [line for line in result.stderr.splitlines() if "pip install" in line]
    assert len(message) == 1 and f"needs {package}" in message[0], result.stderr
    assert f"pip install 'agentrt[{extra}]'" in message[0]
    assert any(requirement.startswith(package) for requirement in pyproject_extra(extra))
    assert result.stdout == "" and "Traceback" not in result.stderr  # nothing ran: no table, no JSON


def test_require_names_the_package_and_the_extra():
    extras.require("json", "bench", "anything")  # present: nothing happens
    with pytest.raises(
        extras.MissingExtra, match=r"^--x needs no_such_module_xyz, .*pip install 'agentrt\[offline\]'$"
    ):
        extras.require("no_such_module_xyz", "offline", "--x")
