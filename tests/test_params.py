"""Declared parameters (runtime.plugin.params): validators, the one message form, defaults and
documentation from one declaration, for configuration keys and every built-in component alike."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from runtime import config
from runtime.errors import ConfigError, ParamError
from runtime.plugin import pluginmanager
from runtime.plugin.params import (
    Param,
    Validator,
    and_,
    declare,
    declared,
    ge,
    gt,
    in_,
    integer,
    invalid,
    le,
    list_of,
    lt,
    not_,
    number,
    optional,
    or_,
    positive_int,
    share,
    string,
)
from runtime.testing import agentrt

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "validator, good, bad, expected",
    [
        (positive_int, [1, 7], [0, -1, 1.5, True, "2"], "an integer > 0"),
        (share, [0, 0.5, 1], [-0.1, 1.01, float("nan"), False], "a number in [0, 1]"),
        (and_(number, gt(0), lt(1)), [0.5], [0, 1], "a number in (0, 1)"),
        (and_(integer, ge(2)), [2], [1], "an integer >= 2"),
        (and_(number, le(3)), [3, -1e9], [3.5, float("inf")], "a number <= 3"),
        (in_("a", "b"), ["a"], ["c", None], "one of 'a', 'b'"),
        (and_(string, not_(in_("x"))), ["y"], ["x", 1], "a string, not one of 'x'"),
        (optional(positive_int), [None, 3], [0], "an integer > 0, or unset"),
        (
            or_(positive_int, list_of(positive_int)),
            [2, [1, 2]],
            [0, [], [0]],
            "an integer > 0, or a non-empty list, each an integer > 0",
        ),
        (list_of(string, length=2), [["a", "b"]], [["a"], "ab", ["a", 1]], "a list of 2, each a string"),
        (list_of(string, min_length=0), [[], ("a",)], [None, [1]], "a list, each a string"),
    ],
)
def test_validators_compose_and_describe_themselves(validator, good, bad, expected):
    assert validator.expected == expected
    assert all(validator(value) for value in good), good
    assert not any(validator(value) for value in bad), bad


def test_declare_checks_converts_and_fills_in_for_functions_and_classes():
    @declare(
        "student toy",
        width=Param(4, "width", positive_int),
        rate=Param(1, "rate", and_(number, gt(0))),
        mode=Param(None, "mode", optional(in_("a", "b"))),
    )
    def build(params, space, *, flag=False):
        return params, space, flag

    assert build({"rate": 2}, "space", flag=True) == ({"width": 4, "rate": 2.0, "mode": None}, "space", True)
    assert isinstance(build({"rate": 2}, None)[0]["rate"], float)  # numbers arrive as float

    @declare("strategy toy", beta=Param(0.5, "weight", share))
    class Toy:
        def __init__(self, params):
            self.params = params

    assert Toy({"beta": 1}).params == {"beta": 1.0} and Toy().params == {"beta": 0.5}
    assert [p["name"] for p in declared(Toy).describe()] == ["beta"]
    assert declared(build).describe()[0] == {
        "name": "width",
        "default": 4,
        "doc": "width",
        "constraint": "an integer > 0",
    }
    assert declared(lambda params: None) is None


def test_every_failure_has_the_one_form_and_is_a_config_error():
    @declare(
        "query toy",
        n=Param(3, "n", positive_int),
        endpoint=Param("", "required", Validator("a non-empty string", bool)),
    )
    def build(params):
        return params

    with pytest.raises(ParamError, match=r"^query toy: parameter 'n' must be an integer > 0 \(got 0\)$") as raised:
        build({"n": 0, "endpoint": "x"})
    assert isinstance(raised.value, ConfigError) and isinstance(raised.value, ValueError)
    with pytest.raises(ParamError, match=r"^query toy: parameter 'endpoint' must be a non-empty string \(not given\)$"):
        build({})
    with pytest.raises(ParamError, match=r"^query toy: unknown parameter 'm'; known: n, endpoint$"):
        build({"m": 1, "endpoint": "x"})
    assert str(invalid("query toy", "n", "odd", 2)) == "query toy: parameter 'n' must be odd (got 2)"


def test_configuration_keys_use_the_same_form_and_keep_the_dotted_key(tmp_path):
    path = tmp_path / "agentrt.toml"
    path.write_text("[distillation]\nbatch_size = 0\n")
    with pytest.raises(ConfigError) as raised:
        config.load(path, environ={})
    assert str(raised.value) == (
        f"distillation: parameter 'batch_size' must be an integer > 0 (got 0); key distillation.batch_size in {path}"
    )
    with pytest.raises(
        ConfigError,
        match=r"^daemon: parameter 'restart_backoff_s' must be a number > 0 \(got -1\); "
        r"key daemon.restart_backoff_s in environment variable AGENTRT_DAEMON_RESTART_BACKOFF_S$",
    ):
        config.load(environ={"AGENTRT_DAEMON_RESTART_BACKOFF_S": "-1"})


def _builtin_listing() -> dict:
    result = agentrt("plugins", "--json", env={"AGENTRT_PLUGINS_AUTOLOAD": "false"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_builtin_component_lists_its_parameters_with_defaults():
    listing = _builtin_listing()
    plugins = pluginmanager.load({"autoload": False})
    for point, entry in listing["extension_points"].items():
        assert set(entry["components"]) == set(plugins.components[point])
        for name, component in entry["components"].items():
            spec = declared(plugins.get(point, name).factory)
            assert spec is not None, f"{point} {name} declares no parameters"
            assert component["params"] == json.loads(json.dumps(spec.describe())), f"{point} {name}"
            assert component["doc"], f"{point} {name} has no docstring"
            assert all(p["doc"] and p["constraint"] for p in component["params"]), f"{point} {name}"
    components = {point: entry["components"] for point, entry in listing["extension_points"].items()}
    defaults = {
        (p, n): {param["name"]: param["default"] for param in c["params"]}
        for p, entries in components.items()
        for n, c in entries.items()
    }
    # Spot checks against the defaults users rely on.
    assert defaults["student", "mlp"] == {"hidden": [32], "activation": "relu"}
    assert defaults["strategy", "soft_target"] == {
        "temperature": 2.0,
        "calibrated": False,
        "alpha": 0.5,
        "t_squared": True,
        "direction": "forward",
    }
    assert defaults["query_policy", "cascade"] == {"label_share": 0.02, "act_below_confidence": 0.75, "seed": 0}
    assert (
        defaults["teacher", "remote"]["timeout_ms"] == 1000
        and defaults["teacher", "checkpoint"]["path"] == "builtin:cartpole"
    )
    assert defaults["execution", "clip"] == {}


def test_docs_list_every_builtin_parameter_as_generated():
    result = agentrt("plugins", "--markdown", env={"AGENTRT_PLUGINS_AUTOLOAD": "false"})
    assert result.returncode == 0, result.stderr
    text = (ROOT / "docs" / "plugins.md").read_text()
    documented = re.search(r"<!-- params:start -->\n(.*?)<!-- params:end -->", text, re.S).group(1)
    assert documented.strip() == result.stdout.strip(), "regenerate with: agentrt plugins --markdown"
    for point, entry in _builtin_listing()["extension_points"].items():
        for name, component in entry["components"].items():
            for param in component["params"]:
                assert f"| `{name}` | `{param['name']}` |" in documented, (point, name, param["name"])


def test_a_bad_component_param_stops_start_up_with_the_one_form(run_dir):
    result = agentrt(
        "up",
        "--detach",
        "--run-dir",
        str(run_dir),
        "--peer-endpoint",
        "tcp://127.0.0.1:*",
        env={"AGENTRT_STUDENT_PARAMS": "{hidden = [0]}"},
        timeout=120,
    )
    assert result.returncode == 78, result.stderr
    # One line: the student serves two checked stages (decide, train), and the stages after them
    # were not run for want of their output; the cause is said once.
    assert result.stderr.splitlines() == [
        "agentrt up: plugin 'students' (agentrt_register_students): building student 'mlp' failed: student mlp: "
        "parameter 'hidden' must be a list, each an integer > 0 (got [0])"
    ]


def test_builtin_declarations_agree_with_what_they_build_from():
    import plugins.strategies as strategies
    import plugins.students as students
    from runtime.learn.nets import ACTIVATIONS

    assert students.ACTIVATION.check(list(ACTIVATIONS)[0])
    assert students.ACTIVATION.check.expected == "one of " + ", ".join(map(repr, ACTIVATIONS))
    assert set(strategies._BASES) == set(strategies.STRATEGIES) - {"feature_hints"}


def test_rate_limit_param_checked_against_the_space_uses_the_one_form():
    from plugins.execution import build_rate_limit

    with pytest.raises(
        ParamError,
        match=r"^execution rate_limit: parameter 'max_delta' must be one number, or a list "
        r"broadcastable to shape \[2\] \(got \[1.0, 2.0, 3.0\]\)$",
    ):
        build_rate_limit({"max_delta": [1.0, 2.0, 3.0]}, spaces.Box(-1, 1, (2,), np.float32))
