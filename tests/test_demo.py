"""`make demo`'s command as a user runs it: the installed console script, the built-in configuration,
from a directory with no agentrt.toml. It must succeed, print the documented summary and leave
no process and no run directory behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from runtime.processes import process_alive
from runtime.supervisor.launch import RUN_DIR_PREFIX

README = Path(__file__).resolve().parent.parent / "README.md"
CONSOLE_SCRIPT = Path(sys.executable).with_name("agentrt")
EVAL_EPISODES = 5


def documented_summary_keys() -> set[str]:
    """The keys of the README's table of `agentrt demo --json`."""
    section = README.read_text().split("## The demo", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))


def descendants(pid: int) -> set[int]:
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.timeout(900)
def test_demo_json_through_the_console_script(tmp_path):
    assert CONSOLE_SCRIPT.exists(), "the project is not installed with its console script"
    workdir, tmpdir = tmp_path / "work", tmp_path / "tmp"
    workdir.mkdir()
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRT_")}
    env["TMPDIR"] = str(tmpdir)  # where the demo's private run directory goes: it must be gone afterwards
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        demo = subprocess.Popen(
            # Five evaluation episodes, not twenty: `make demo` itself runs the default in CI.
            # Training time is capped well above the default 180 s: the test judges what the demo
            # learns, and a busy machine trains slower.
            [str(CONSOLE_SCRIPT), "demo", "--json", "--eval-episodes", str(EVAL_EPISODES), "--max-train-s", "600"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    seen: set[int] = set()  # every process the demo started (daemon, roles, fork servers), by pid
    try:
        deadline = time.monotonic() + 840
        while demo.poll() is None and time.monotonic() < deadline:
            seen |= descendants(demo.pid)
            time.sleep(0.2)
        assert demo.poll() is not None, "the demo did not finish"
        left = sorted(pid for pid in seen if process_alive(pid))
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for pid in seen:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)

    assert demo.returncode == 0, stderr.read_text()[-5000:]
    summary = json.loads(stdout.read_text())
    assert set(summary) == documented_summary_keys()
    assert summary["env"] == "CartPole-v1"
    assert summary["student_mean_return"] >= 475, summary
    assert summary["teacher_query_fraction"] <= 0.2, summary
    assert len(summary["student_returns"]) == EVAL_EPISODES and summary["student_version"] >= 1
    assert summary["student_params"] < summary["teacher_params"]
    assert (workdir / summary["plot"]).stat().st_size > 0
    assert len(seen) >= 9, seen  # the daemon, six roles and both fork servers were there to be checked
    assert left == [], f"processes left behind: {left}"
    assert [p.name for p in tmpdir.glob(f"{RUN_DIR_PREFIX}*")] == [], "the demo's run directory was left behind"
