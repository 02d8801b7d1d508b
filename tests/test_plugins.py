"""The plugin surface: loading from entry points, listing, disabling, and every error path."""

from __future__ import annotations

import json
import os
import re

import gymnasium
import numpy as np
import pytest
import structlog.testing

from runtime import config, hookimpl, hookspecs
from runtime.peer import Peer, PeerError
from runtime.plugin import pluginmanager
from runtime.testing import agentrt, make_distribution, start_daemon
from runtime.wire.protocol import ErrorCode

EXTRA_STUDENT = """
    from runtime import hookimpl

    @hookimpl
    def agentrt_register_students():
        return {"extra_linear": lambda params, observation_space, action_space: None}
"""


def env_with(site) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def plugins_json(site, *args: str, env: dict | None = None) -> dict:
    result = agentrt("plugins", "--json", *args, env={**env_with(site), **(env or {})})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_fresh_install_lists_builtins_for_every_extension_point():
    result = agentrt("plugins", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    points = listing["extension_points"]
    assert set(points) == set(pluginmanager.EXTENSION_POINTS)
    for point, entry in points.items():
        assert entry["available"], f"no built-in {point}"
        assert all(plugin in {p["name"] for p in listing["plugins"]} for plugin in entry["available"].values())
        assert set(entry["selected"]) <= set(entry["available"])
    builtins = {p["name"]: p for p in listing["plugins"] if p["builtin"]}
    assert set(builtins) >= {"students", "teachers", "strategies", "query_policies", "perception", "execution"}
    assert all(p["distribution"] == "agentrt" for p in builtins.values())
    assert {"mlp"} <= set(points["student"]["available"]) and "soft_target" in points["strategy"]["available"]


def test_third_party_plugin_is_listed_and_can_be_disabled_or_kept_out(tmp_path):
    site = make_distribution(tmp_path, "extra-plugin", {"extra_plugin": EXTRA_STUDENT}, {"extra": "extra_plugin"})
    listed = plugins_json(site)
    extra = next(p for p in listed["plugins"] if p["name"] == "extra")
    assert extra["distribution"] == "extra-plugin" and extra["version"] == "1.0" and not extra["builtin"]
    assert extra["hooks"] == ["agentrt_register_students"]
    assert listed["extension_points"]["student"]["available"]["extra_linear"] == "extra"

    by_env = plugins_json(site, env={"AGENTRT_PLUGINS_DISABLE": "extra"})
    assert "extra" not in {p["name"] for p in by_env["plugins"]}
    typo = agentrt("plugins", env={**env_with(site), "AGENTRT_PLUGINS_DISABLE": "extar"})
    assert typo.returncode == 78 and "plugins.disable names extar, but no such entry point" in typo.stderr
    no_autoload = plugins_json(site, env={"AGENTRT_PLUGINS_AUTOLOAD": "false"})
    assert "extra" not in {p["name"] for p in no_autoload["plugins"]}
    assert "students" in {p["name"] for p in no_autoload["plugins"]}
    named = plugins_json(site, env={"AGENTRT_PLUGINS_AUTOLOAD": "false", "AGENTRT_PLUGINS_LOAD": "extra"})
    assert "extra" in {p["name"] for p in named["plugins"]}


def test_plugin_that_fails_to_import_fails_start_up_with_its_name(tmp_path, run_dir):
    site = make_distribution(
        tmp_path, "broken-plugin", {"broken_plugin": "import does_not_exist_anywhere\n"}, {"broken": "broken_plugin"}
    )
    result = agentrt("up", "--run-dir", str(run_dir), env=env_with(site), timeout=60)
    assert result.returncode == 78
    assert "plugin 'broken'" in result.stderr and "failed to import" in result.stderr
    assert "does_not_exist_anywhere" in result.stderr


def test_hook_implementation_with_an_unknown_argument_is_rejected_at_load(tmp_path):
    source = """
        from runtime import hookimpl

        @hookimpl
        def agentrt_peer_attached(peer_id, favourite_colour):
            pass
    """
    site = make_distribution(tmp_path, "typo-plugin", {"typo_plugin": source}, {"typo": "typo_plugin"})
    result = agentrt("plugins", env=env_with(site))
    assert result.returncode == 78
    assert "plugin 'typo'" in result.stderr and "agentrt_peer_attached" in result.stderr
    assert "favourite_colour" in result.stderr


def test_a_plugin_whose_functions_lack_hookimpl_is_pointed_out(tmp_path):
    source = """
        def agentrt_register_students():  # no @hookimpl: pluggy sees no hook here
            return {}
    """
    site = make_distribution(tmp_path, "unmarked", {"unmarked_plugin": source}, {"unmarked": "unmarked_plugin"})
    listed = agentrt("plugins", env={**env_with(site), "COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "unmarked" in line]
    assert "are its functions marked @hookimpl?" in row


def test_hook_with_no_matching_spec_is_rejected(tmp_path):
    source = """
        from runtime import hookimpl

        @hookimpl
        def agentrt_register_studnets():
            return {}
    """
    site = make_distribution(tmp_path, "misspelt", {"misspelt_plugin": source}, {"misspelt": "misspelt_plugin"})
    result = agentrt("plugins", env=env_with(site))
    assert result.returncode == 78
    assert "plugin 'misspelt'" in result.stderr and "agentrt_register_studnets" in result.stderr


def test_component_registered_twice_names_both_plugins(tmp_path):
    site = make_distribution(
        tmp_path, "twins", {"twin_a": EXTRA_STUDENT, "twin_b": EXTRA_STUDENT}, {"twin_a": "twin_a", "twin_b": "twin_b"}
    )
    result = agentrt("plugins", env=env_with(site))
    assert result.returncode == 78
    assert re.search(r"'extra_linear' is registered by both plugin 'twin_a' and plugin 'twin_b'", result.stderr)


def test_unknown_component_in_configuration_is_named_at_start_up(run_dir):
    result = agentrt("up", "--run-dir", str(run_dir), env={"AGENTRT_STUDENT_PLUGIN": "transformer9000"})
    assert result.returncode == 78
    assert "no student named 'transformer9000'" in result.stderr and "available: " in result.stderr


def test_role_that_cannot_build_its_component_stops_the_daemon(tmp_path):
    running = start_daemon(env={"AGENTRT_STUDENT_PARAMS": "{hiddden = [8]}"}, wait=False)
    try:
        assert running.process.wait(timeout=60) == 78
        log = running.log()
        assert "role_setup_failed" in log and "hiddden" in log and "role_misconfigured" in log
    finally:
        running.stop()


FLAKY_TRANSFORM = """
    import numpy as np
    from runtime import hookimpl
    from runtime.plugin.interfaces import StreamStep

    class Fragile(StreamStep):
        def __init__(self, space):
            self.output_space = space

        def __call__(self, features, stream):
            if features[0] > 1.0:
                raise RuntimeError("cart too far right for this transform")
            return features

    @hookimpl
    def agentrt_register_perception_transforms():
        return {"fragile": lambda params, space: Fragile(space)}
"""


def test_plugin_raising_while_serving_is_named_and_the_role_keeps_running(tmp_path):
    site = make_distribution(
        tmp_path, "fragile-plugin", {"fragile_plugin": FLAKY_TRANSFORM}, {"fragile": "fragile_plugin"}
    )
    running = start_daemon('[perception]\ntransforms = ["fragile"]\n', env=env_with(site))
    try:
        perception_pid = running.status()["roles"]["perception"]["pid"]
        env = gymnasium.make("CartPole-v1")
        with Peer(running.endpoint, env.observation_space, env.action_space, timeout_s=10) as peer:
            with pytest.raises(PeerError) as failure:
                peer.act(np.array([2.0, 0, 0, 0], dtype=np.float32))
            assert failure.value.code == ErrorCode.PLUGIN_FAILED and failure.value.seq == peer.seq
            assert "fragile" in str(failure.value) and "agentrt_register_perception_transforms" in str(failure.value)
            assert peer.act(np.zeros(4, dtype=np.float32)).action.shape == ()
        # One failing observation, counted once for each copy the runtime got (a busy machine resends).
        status = running.wait_until(
            lambda s: s["errors"]["by_code"].get("PLUGIN_FAILED", 0) >= 1, what="the failure counted"
        )
        assert status["errors"]["by_code"]["PLUGIN_FAILED"] <= 1 + peer.resends
        assert status["roles"]["perception"]["pid"] == perception_pid and status["roles"]["perception"]["restarts"] == 0
        failed = running.events("plugin_failed")
        assert (
            failed
            and failed[0]["plugin"] == "fragile"
            and failed[0]["hook"] == "agentrt_register_perception_transforms"
        )
        assert failed[0]["role"] == "perception"
    finally:
        running.stop()


def test_lifecycle_hook_that_raises_is_logged_and_others_still_run():
    calls = []

    class Noisy:
        @hookimpl
        def agentrt_weights_swapped(self, version):
            raise RuntimeError("boom")

    class Quiet:
        @hookimpl
        def agentrt_weights_swapped(self, version):
            calls.append(version)

    plugins = pluginmanager.load(config.defaults()["plugins"], extra={"noisy": Noisy(), "quiet": Quiet()})
    with structlog.testing.capture_logs() as logged:
        plugins.notify("agentrt_weights_swapped", version=3)
    assert calls == [3]
    failures = [entry for entry in logged if entry["event"] == "plugin_hook_failed"]
    assert [(f["plugin"], f["hook"], f["error"], f["log_level"]) for f in failures] == [
        ("noisy", "agentrt_weights_swapped", "RuntimeError: boom", "error")
    ]


def test_every_hookspec_is_documented_in_plugins_md():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    specs = [name for name in dir(hookspecs) if name.startswith("agentrt_")]
    assert len(specs) >= 12
    missing = [name for name in specs if f"`{name}" not in text]
    assert not missing, f"undocumented hooks in docs/plugins.md: {missing}"


# --- the kernel: extension points, build context, hook callers, capabilities ----------------------


def test_extension_points_match_the_hookspecs_and_the_configuration():
    from runtime.plugin.points import EXTENSION_POINTS

    registering = {name for name in dir(hookspecs) if name.startswith("agentrt_register_")}
    assert {point.hook for point in EXTENSION_POINTS.values()} == registering
    defaults = config.defaults()
    for point in EXTENSION_POINTS.values():
        assert config.SCHEMA[point.section][point.key].default == point.default
        assert "params" in config.SCHEMA[point.section]
        assert point.selected(defaults) == (list(point.default) if point.chain else [point.default])
    assert pluginmanager.selected(defaults)["execution"] == ["clip"]


CONTEXT_PLUGIN = """
    from runtime import hookimpl

    class Pair:
        def __init__(self, teachers, spaces):
            self.teachers, self.spaces = teachers, spaces

        def label(self, observations):
            return self.teachers[0].label(observations)

    def build_pair(params, observation_space, action_space, *, context):
        teachers = [context.plugins.build("teacher", "checkpoint", {}, *context.spaces) for _ in range(2)]
        return Pair(teachers, context.spaces)

    def build_plain(params, observation_space, action_space):
        return Pair([], None)

    def build_wrong(params, observation_space, action_space):
        return 42

    @hookimpl
    def agentrt_register_teachers():
        return {"pair": build_pair, "plain": build_plain, "wrong": build_wrong}
"""


def test_factories_that_ask_for_a_context_get_one_and_others_are_called_as_before():
    import textwrap
    import types

    module = types.ModuleType("context_plugin")
    exec(textwrap.dedent(CONTEXT_PLUGIN), module.__dict__)
    plugins = pluginmanager.load(config.defaults()["plugins"], extra={"context_plugin": module})
    env = gymnasium.make("CartPole-v1")
    pair = plugins.build("teacher", "pair", {}, env.observation_space, env.action_space)
    assert len(pair.teachers) == 2 and pair.spaces == (env.observation_space, env.action_space)
    assert plugins.build("teacher", "plain", {}, env.observation_space, env.action_space).teachers == []
    with pytest.raises(
        pluginmanager.PluginError,
        match=r"plugin 'context_plugin' \(agentrt_register_teachers\): "
        r"building teacher 'wrong' failed: it returned int, "
        r"which is not a Teacher",
    ):
        plugins.build("teacher", "wrong", {}, env.observation_space, env.action_space)


def test_hooks_go_through_pluggy_so_tracing_and_hookwrappers_see_them(monkeypatch):
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def agentrt_register_students(self):
            result = yield
            seen.append(result)
            return result

        @hookimpl
        def agentrt_weights_swapped(self, version):
            seen.append(version)

    monkeypatch.setenv(pluginmanager.TRACE_ENV, "1")
    with structlog.testing.capture_logs() as logged:
        plugins = pluginmanager.load(config.defaults()["plugins"], extra={"wrapper": Wrapper()})
        plugins.notify("agentrt_weights_swapped", version=5)
    assert any(isinstance(result, list) and "mlp" in result[0] for result in seen)  # the built-ins' call was wrapped
    assert seen[-1] == 5
    traced = " ".join(entry["line"] for entry in logged if entry["event"] == "plugin_trace")
    assert "agentrt_register_students" in traced and "agentrt_weights_swapped" in traced


def test_registration_hook_that_raises_names_the_plugin_and_hook():
    class Broken:
        @hookimpl
        def agentrt_register_query_policies(self):
            raise RuntimeError("no policies today")

    with pytest.raises(
        pluginmanager.PluginError,
        match=r"^plugin 'broken' raised in agentrt_register_query_policies: "
        r"RuntimeError: no policies today$",
    ):
        pluginmanager.load(config.defaults()["plugins"], extra={"broken": Broken()})


def test_optional_capabilities_are_protocols_checked_on_the_built_components():
    from runtime.plugin.interfaces import ForwardFeatures, ForwardMembers, LabelWithFeatures

    plugins = pluginmanager.load(config.defaults()["plugins"])
    env = gymnasium.make("CartPole-v1")
    spaces_ = (env.observation_space, env.action_space)
    mlp = plugins.build("student", "mlp", {}, *spaces_)
    ensemble = plugins.build("student", "ensemble", {"members": 2}, *spaces_)
    assert isinstance(mlp, ForwardFeatures) and not isinstance(mlp, ForwardMembers)
    assert isinstance(ensemble, ForwardMembers) and isinstance(ensemble, ForwardFeatures)
    checkpoint = plugins.build("teacher", "checkpoint", {}, *spaces_)
    scripted = plugins.build("teacher", "scripted", {"callable": "plugins.teachers:cartpole_controller"}, *spaces_)
    assert isinstance(checkpoint, LabelWithFeatures) and not isinstance(scripted, LabelWithFeatures)


WRONG_OUTPUTS = """
    import numpy as np
    import torch
    from runtime import hookimpl
    from runtime.plugin.interfaces import StreamStep

    class Wide(torch.nn.Module):  # one logit too many
        def __init__(self, observation_space, action_space):
            super().__init__()
            self.linear = torch.nn.Linear(observation_space.shape[0], action_space.n + 1)

        def forward(self, x):
            return self.linear(x)

    class TuplePolicy:
        def decide(self, context):
            return (np.zeros(len(context.features), bool), np.zeros(len(context.features), bool))

    class Floaty(StreamStep):
        def __init__(self, space):
            self.output_space = space

        def __call__(self, action, stream):
            return np.float64(0.7)  # not an action of a discrete space

    @hookimpl
    def agentrt_register_students():
        return {"wide": lambda params, observation_space, action_space: Wide(observation_space, action_space)}

    @hookimpl
    def agentrt_register_query_policies():
        return {"tuple_policy": lambda params: TuplePolicy()}

    @hookimpl
    def agentrt_register_execution_filters():
        return {"floaty": lambda params, space: Floaty(space)}
"""


@pytest.mark.parametrize(
    "config_text, role, hook, needle",
    [
        ('[student]\nplugin = "wide"\n', "decision", "agentrt_register_students", "forward returned float32 [1, 3]"),
        ('[query]\npolicy = "tuple_policy"\n', "decision", "agentrt_register_query_policies", "not a QueryDecision"),
        ('[execution]\nfilters = ["floaty"]\n', "execution", "agentrt_register_execution_filters", "float64 []"),
    ],
    ids=["student-shape", "query-decision-type", "filter-dtype"],
)
def test_a_wrong_plugin_output_is_the_plugins_failure_and_the_role_keeps_serving(
    tmp_path, config_text, role, hook, needle
):
    site = make_distribution(tmp_path, "wrong-outputs", {"wrong_outputs": WRONG_OUTPUTS}, {"wrong": "wrong_outputs"})
    running = start_daemon(config_text, env=env_with(site))
    try:
        before = running.status()["roles"][role]
        env = gymnasium.make("CartPole-v1")
        with Peer(running.endpoint, env.observation_space, env.action_space, timeout_s=30) as peer:
            for _ in range(3):  # every request is answered, the same way, by the same process
                with pytest.raises(PeerError) as failure:
                    peer.act(np.zeros(4, dtype=np.float32), policy="student")
                assert failure.value.code == ErrorCode.PLUGIN_FAILED
                assert (
                    "plugin 'wrong'" in str(failure.value)
                    and hook in str(failure.value)
                    and needle in str(failure.value)
                )
        status = running.wait_until(
            lambda s: s["errors"]["by_code"].get("PLUGIN_FAILED", 0) >= 3, what="failures counted"
        )
        assert (status["roles"][role]["pid"], status["roles"][role]["restarts"]) == (before["pid"], 0)
    finally:
        running.stop()


def test_one_plugin_name_in_two_distributions_is_an_error_naming_both(tmp_path):
    first = make_distribution(tmp_path / "a", "first-dist", {"first_mod": EXTRA_STUDENT}, {"same": "first_mod"})
    second = make_distribution(tmp_path / "b", "second-dist", {"second_mod": EXTRA_STUDENT}, {"same": "second_mod"})
    result = agentrt("plugins", env={"PYTHONPATH": os.pathsep.join([str(first), str(second)])})
    assert result.returncode == 78
    assert "plugin name 'same' is registered by two distributions" in result.stderr
    assert "first-dist (first_mod)" in result.stderr and "second-dist (second_mod)" in result.stderr


def test_a_registration_that_is_not_a_factory_fails_at_load_naming_the_plugin(tmp_path):
    source = """
        from runtime import hookimpl

        @hookimpl
        def agentrt_register_students():
            return {"oops": "str"}
    """
    site = make_distribution(tmp_path, "not-a-factory", {"not_a_factory": source}, {"nofactory": "not_a_factory"})
    result = agentrt("plugins", env=env_with(site))
    assert result.returncode == 78
    assert "plugin 'nofactory': hook agentrt_register_students must map names to factories" in result.stderr


BROKEN_AT_RUN_TIME = """
    import numpy as np
    from runtime import hookimpl
    from runtime.plugin.interfaces import StreamStep

    class Shrinking(StreamStep):  # builds fine, returns the wrong shape on its first observation
        def __init__(self, space):
            self.output_space = space

        def __call__(self, features, stream):
            return features[:-1]

    class Raising:
        def loss(self, inputs):
            raise TypeError("loss() got an unexpected keyword argument 'temprature'")

    class NoSpace(StreamStep):  # forgot self.output_space
        def __call__(self, features, stream):
            return features

    class OneColumn:  # CartPole has two actions
        def label(self, observations):
            return np.zeros((len(observations), 1), np.float32)

    @hookimpl
    def agentrt_register_teachers():
        return {"onecolumn": lambda params, observation_space, action_space: OneColumn()}

    @hookimpl
    def agentrt_register_students():
        import torch

        return {"threewide": lambda params, observation_space, action_space: torch.nn.Linear(4, 3)}

    @hookimpl
    def agentrt_register_perception_transforms():
        return {"shrinking": lambda params, space: Shrinking(space), "nospace": lambda params, space: NoSpace()}

    @hookimpl
    def agentrt_register_distillation_strategies():
        return {"raising": lambda params: Raising()}
"""


def test_plugins_check_runs_one_step_of_every_selected_component(tmp_path):
    site = make_distribution(tmp_path, "run-time", {"run_time": BROKEN_AT_RUN_TIME}, {"runtime_broken": "run_time"})
    fine = agentrt("plugins", "--check", "--json", env=env_with(site))
    assert fine.returncode == 0, fine.stderr
    checked = json.loads(fine.stdout)
    assert [c["points"] for c in checked] == [
        ["perception"],
        ["teacher"],
        ["student", "query_policy"],
        ["strategy"],
        ["execution"],
    ]
    assert all(c["ok"] for c in checked)

    strategy = {"AGENTRT_DISTILLATION_STRATEGY": "raising"}
    broken = agentrt("plugins", "--check", "--json", env={**env_with(site), **strategy})
    assert broken.returncode == 78
    failed = {tuple(c["points"]): c["error"] for c in json.loads(broken.stdout) if not c["ok"]}
    assert list(failed) == [("strategy",)]
    assert "plugin 'runtime_broken'" in failed[("strategy",)] and "temprature" in failed[("strategy",)]

    transform = {"AGENTRT_PERCEPTION_TRANSFORMS": "shrinking"}
    broken = agentrt("plugins", "--check", "--json", env={**env_with(site), **transform})
    failed = {tuple(c["points"]): c["error"] for c in json.loads(broken.stdout) if not c["ok"]}
    assert "agentrt_register_perception_transforms" in failed[("perception",)]
    assert failed[("strategy",)].startswith("not run")  # nothing to train on without features

    # A step without an output_space: named, 78, no traceback (it was an AttributeError, exit 1).
    nospace = agentrt(
        "plugins", "--check", "--json", env={**env_with(site), "AGENTRT_PERCEPTION_TRANSFORMS": "nospace"}
    )
    assert nospace.returncode == 78 and "Traceback" not in nospace.stderr, nospace.stderr
    failed = {tuple(c["points"]): c["error"] for c in json.loads(nospace.stdout) if not c["ok"]}
    assert "building perception 'nospace' failed: its output_space is NoneType" in failed[("perception",)]

    # A teacher whose answers have one column for two actions (it passed the check before).
    one = agentrt("plugins", "--check", "--json", env={**env_with(site), "AGENTRT_TEACHER_PLUGIN": "onecolumn"})
    assert one.returncode == 78
    failed = {tuple(c["points"]): c["error"] for c in json.loads(one.stdout) if not c["ok"]}
    assert "teacher 'onecolumn' label returned 1 columns; expected 2" in failed[("teacher",)]

    # A student of the wrong width fails as itself, once: the strategy is not blamed for it.
    three = agentrt("plugins", "--check", "--json", env={**env_with(site), "AGENTRT_STUDENT_PLUGIN": "threewide"})
    failed = {tuple(c["points"]): c["error"] for c in json.loads(three.stdout) if not c["ok"]}
    assert "threewide" in failed.pop(("student", "query_policy"))
    assert all(error.startswith("not run") for error in failed.values()), failed  # the strategy's too


def test_up_refuses_to_start_with_a_component_that_fails_its_first_step(tmp_path, run_dir):
    site = make_distribution(tmp_path, "run-time", {"run_time": BROKEN_AT_RUN_TIME}, {"runtime_broken": "run_time"})
    env = {**env_with(site), "AGENTRT_DISTILLATION_STRATEGY": "raising"}
    result = agentrt("up", "--detach", "--run-dir", str(run_dir), env=env)
    assert result.returncode == 78
    assert "plugin 'runtime_broken'" in result.stderr and "temprature" in result.stderr
    assert not (run_dir / "daemon.pid").exists()


LEGACY_STRATEGY = """
    from runtime import hookimpl

    class Constant:
        def __init__(self, action_space=None):
            self.action_space = action_space

        def loss(self, inputs):
            return (inputs.student_outputs * 0.0).sum()

    @hookimpl
    def agentrt_register_distillation_strategies():
        # Written before strategies got the action space, and written after.
        return {"legacy": lambda params: Constant(), "current": lambda params, action_space: Constant(action_space)}
"""


def test_strategy_factories_get_the_action_space_and_params_only_ones_keep_working():
    import textwrap
    import types

    module = types.ModuleType("legacy_plugin")
    exec(textwrap.dedent(LEGACY_STRATEGY), module.__dict__)
    plugins = pluginmanager.load(config.defaults()["plugins"], extra={"legacy_plugin": module})
    action_space = gymnasium.spaces.Discrete(2)
    assert plugins.build("strategy", "current", {}, action_space).action_space is action_space
    assert plugins.build("strategy", "legacy", {}, action_space).action_space is None


def test_a_discrete_only_strategy_on_a_box_action_space_fails_the_check_and_up(run_dir):
    # The default strategy, soft_target, learns distributions over discrete actions: Pendulum's
    # torque is a box, on which it would train nothing (a softmax over one output is constant).
    box = {"AGENTRT_AGENT_ENV": "Pendulum-v1", "AGENTRT_TEACHER_PARAMS": '{path = "builtin:pendulum"}'}
    checked = agentrt("plugins", "--check", "--json", env=box)
    assert checked.returncode == 78, checked.stderr
    failed = {tuple(c["points"]): c["error"] for c in json.loads(checked.stdout) if not c["ok"]}
    assert list(failed) == [("strategy",)]
    assert failed[("strategy",)] == (
        "plugin 'strategies' (agentrt_register_distillation_strategies): building strategy 'soft_target' failed: "
        "strategy soft_target: needs a discrete action space (it learns a distribution over actions; "
        "use regression for a box), got box(shape=[1], dtype=float32)"
    )
    up = agentrt("up", "--detach", "--run-dir", str(run_dir), env=box)
    assert up.returncode == 78
    assert "building strategy 'soft_target' failed" in up.stderr and "needs a discrete action space" in up.stderr
    assert not (run_dir / "daemon.pid").exists()

    # And the other way round: regression refuses CartPole's discrete actions.
    regression = agentrt("plugins", "--check", "--json", env={"AGENTRT_DISTILLATION_STRATEGY": "regression"})
    assert regression.returncode == 78
    (error,) = [c["error"] for c in json.loads(regression.stdout) if not c["ok"]]
    assert "strategy regression: needs a box action space" in error and "got discrete(n=2)" in error
