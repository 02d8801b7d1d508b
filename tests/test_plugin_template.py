"""examples/plugin-template as a plugin author would use it: pip-installed into a virtualenv, listed
by ``agentrt plugins``, selected in agentrt.toml, and training a student in the real daemon.

The template is installed (editable) once for this module into a throwaway virtualenv that sees
this environment's packages; the environment running the suite is left exactly as it was.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import site
import subprocess
import sys
from pathlib import Path

import gymnasium
import pytest

from runtime.learn.checkpoints import CheckpointStore
from runtime.peer import Peer
from runtime.peer.gym import run_gym_peers
from runtime.testing import agentrt, start_daemon

TEMPLATE = Path(__file__).resolve().parent.parent / "examples" / "plugin-template"
# Every test needs the template installed into a fresh environment (the module's venv fixture), and
# pip alone is given up to 300 s there: more than the suite's 180 s default.
pytestmark = pytest.mark.timeout(600)
DISTRIBUTION = "agentrt-plugin-template"
HOOKS = ["agentrt_register_distillation_strategies", "agentrt_register_students", "agentrt_weights_published"]
STEPS_PER_PUBLISH = 25
CONFIG = f"""
[student]
plugin = "residual_mlp"
params = {{ width = 24, blocks = 2, expansion = 2 }}

[distillation]
strategy = "soft_target_smoothed"
params = {{ temperature = 2.0, alpha = 0.5, smoothing = 0.1 }}
min_samples = 32
steps_per_publish = {STEPS_PER_PUBLISH}
publish_interval_s = 0.25
"""
STUDENT_PARAMS = {"width": 24, "blocks": 2, "expansion": 2}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> str:
    """The python of a new virtualenv with the template installed; it sees this environment's packages
    (agentrt, torch) through a .pth file, so nothing is downloaded and nothing is installed here."""
    root = tmp_path_factory.mktemp("template-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=300)
    python = str(root / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    # addsitedir, unlike a plain path line, also runs this environment's own .pth files (the editable agentrt).
    parents = "; ".join(f"site.addsitedir({path!r})" for path in site.getsitepackages())
    (Path(purelib) / "_suite_environment.pth").write_text(f"import site; {parents}\n")
    # Offline: with setuptools at hand the build needs nothing from an index. Without it, pip
    # must fetch setuptools into an isolated build environment.
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    result = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", *offline, "-e", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def test_the_suite_environment_does_not_have_the_template(venv):
    # A fresh interpreter of this environment, from a neutral directory: this process may have imported
    # the template's source for an assertion.
    probe = "import importlib.metadata as m; print(sorted(d.metadata['Name'] or '' for d in m.distributions()))"
    names = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120, cwd=Path(venv).parent
    ).stdout
    assert "agentrt-plugin-template" not in names.replace("_", "-").lower()
    found = subprocess.run(
        [sys.executable, "-c", "import agentrt_template"], capture_output=True, timeout=120, cwd=Path(venv).parent
    )
    assert found.returncode != 0
    listed = subprocess.run([venv, "-c", probe], capture_output=True, text=True, check=True, timeout=120).stdout
    assert "agentrt-plugin-template" in listed.replace("_", "-").lower()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "agentrt.toml"
    path.write_text(CONFIG)
    return path


def template_events(daemon) -> list[dict]:
    return daemon.events("template_weights_published")


def normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_agentrt_plugins_lists_the_template_and_its_components(venv, config_file):
    result = agentrt("plugins", "--json", "--config", str(config_file), python=venv)
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    template = next((p for p in listing["plugins"] if p["name"] == "template"), None)
    assert template is not None, listing["plugins"]
    assert normalized(template["distribution"]) == DISTRIBUTION and template["version"] == "0.1.0"
    assert not template["builtin"] and template["origin"] == "agentrt_template"
    assert template["hooks"] == HOOKS
    points = listing["extension_points"]
    assert points["student"]["available"]["residual_mlp"] == "template"
    assert points["strategy"]["available"]["soft_target_smoothed"] == "template"
    assert points["student"]["selected"] == ["residual_mlp"]
    assert points["strategy"]["selected"] == ["soft_target_smoothed"]


def test_template_student_and_strategy_train_in_the_daemon(venv, monkeypatch):
    from safetensors.torch import load_file

    daemon = start_daemon(CONFIG, python=venv)
    try:
        summary = run_gym_peers(daemon.endpoint, "CartPole-v1", episodes=2, peers=2)
        # Every observation got an action back (run_gym_peers raises on an error), all counted.
        assert len(summary.episodes) == 2 and summary.steps >= sum(e.steps for e in summary.episodes)
        status = daemon.wait_until(lambda s: s["actions"] >= summary.steps, what="actions counted")
        assert status["errors"]["total"] == 0, status["errors"]

        # The distiller trained with a finite loss and published; decision swapped the weights in.
        # (The distiller reports its counters on its own schedule: wait for them, not just for decision.)
        status = daemon.wait_until(
            lambda s: s["student_version"] >= 2 and s["distillation"]["train_steps"] >= 2 * STEPS_PER_PUBLISH,
            timeout=120,
            what="student v2 serving and its training steps counted",
        )
        assert status["distillation"]["train_steps"] >= 2 * STEPS_PER_PUBLISH
        assert math.isfinite(status["distillation"]["loss"])
        assert status["roles"]["decision"]["counters"].get("weights_rejected", 0) == 0
        # Steps forced to the student: it answers, and it is a published version.
        env = gymnasium.make("CartPole-v1")
        with Peer(daemon.endpoint, env.observation_space, env.action_space, timeout_s=10) as peer:
            obs, _ = env.reset(seed=100)
            answers = [peer.act(obs, policy="student") for _ in range(10)]
        assert [(a.decided_by, a.student_version >= 2) for a in answers] == [("student", True)] * 10

        # The checkpoints hold the template's network: decision loads them strictly, so it serves it.
        monkeypatch.syspath_prepend(str(TEMPLATE))
        from agentrt_template.students import build_residual_mlp

        expected = build_residual_mlp(STUDENT_PARAMS, env.observation_space, env.action_space).state_dict()
        store = CheckpointStore(daemon.run_dir / "checkpoints")
        assert store.latest() >= 2
        weights = load_file(store.path(store.latest()))
        assert {name: list(t.shape) for name, t in weights.items()} == {
            name: list(t.shape) for name, t in expected.items()
        }
        assert any(name.startswith("blocks.1.norm") for name in weights)  # not the built-in mlp's body.*/head.*

        # The template's strategy computed every training loss: its agentrt_weights_published hook
        # logs its call count and last loss, which must be the loss the distiller reported.
        # The hook runs just after the weights are announced: wait for its second line to be written.
        # It runs for each promoted version only: a candidate the promotion gate rejects is not published.
        daemon.wait_until(lambda _: len(template_events(daemon)) >= 2, what="the template's hook logged twice")
        events = template_events(daemon)
        published = [e["version"] for e in daemon.events("weights_published")]
        assert [e["version"] for e in events] == published[: len(events)] and published[0] == 1, (events, published)
        rejected = {e["version"] for e in daemon.events("candidate_rejected")}
        assert not rejected & {e["version"] for e in events}, (events, rejected)
        for event in events:
            assert event["role"] == "distillation"
            assert event["strategy_calls"] >= STEPS_PER_PUBLISH * event["version"]
            assert event["strategy_last_loss"] == pytest.approx(event["loss"], rel=1e-6)

        # The template keeps torch out of the light processes.
        roles = status["roles"]
        assert [roles[r]["gauges"].get("torch_loaded") for r in ("gateway", "perception", "execution")] == [False] * 3
    finally:
        daemon.stop()


def test_the_templates_own_unit_tests_pass(venv):
    result = subprocess.run(
        [venv, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=TEMPLATE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
