"""benchmarks/label_efficiency.py: the core function in quick mode on CartPole (one seed, small caps)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("label_efficiency", ROOT / "benchmarks" / "label_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()

BUDGETED = ("share", "uncertainty")
CAP = 600  # teacher answers; DAgger needs about 100-150 on CartPole with the default schedule


@pytest.fixture(scope="module")
def summary():
    return bench.run_benchmark(
        envs=["cartpole"],
        seeds=1,
        quick=True,
        methods=["dagger", *BUDGETED],
        max_labels=CAP,
        max_env_steps=10_000,
        show_progress=False,
    )


def _is_count(value) -> bool:
    return type(value) is int and value > 0  # bool and numpy integers are not JSON ints


def test_summary_structure(summary):
    assert json.loads(json.dumps(summary)) == summary  # plain JSON, no numpy scalars or NaN
    assert summary["quick"] is True and summary["seeds"] == [0]
    assert list(summary["envs"]) == ["CartPole-v1"]
    env = summary["envs"]["CartPole-v1"]
    for key in (
        "teacher_return",
        "random_return",
        "threshold_return",
        "methods",
        "best_budgeted_policy",
        "best_budgeted_labels",
        "dagger_labels",
        "ratio_to_dagger",
        "goal_met",
    ):
        assert key in env, key
    assert env["random_return"] < env["threshold_return"] < env["teacher_return"]
    assert env["ratio_to_dagger_ci90"] is None  # no interval from fewer than 3 seeds
    assert env["teacher_return"] >= 475  # the built-in teacher balances the pole
    assert set(env["methods"]) == {"dagger", *BUDGETED}
    for name, result in env["methods"].items():
        assert result["seeds"] == 1, name
        assert len(result["labels_to_target"]) == len(result["answers"]) == len(result["curves"]) == 1, name
        assert 0.0 <= result["student_share"] <= 1.0, name
        assert result["teacher_latency_us"] > 0 and result["student_latency_us"] > 0, name
        answers = [point[0] for point in result["curves"][0]]
        assert answers == sorted(answers) and answers[-1] <= result["answers"][0], name


def test_dagger_and_a_budgeted_policy_reach_the_target(summary):
    env = summary["envs"]["CartPole-v1"]
    dagger = env["methods"]["dagger"]
    assert dagger["reached"] == 1
    assert dagger["policy"] == "always" and dagger["student_share"] == 1.0  # DAgger: the student always acts
    assert env["best_budgeted_policy"] in BUDGETED
    assert env["methods"][env["best_budgeted_policy"]]["reached"] == 1
    # The last evaluation of a run that reached the target is the one that reached it.
    for name in ("dagger", env["best_budgeted_policy"]):
        result = env["methods"][name]
        assert result["curves"][0][-1][1] >= bench.TARGET, name
        assert result["curves"][0][-1][0] == result["labels_to_target"][0], name
    assert env["dagger_labels"] == dagger["labels_mean"]
    assert env["ratio_to_dagger"] == pytest.approx(env["best_budgeted_labels"] / env["dagger_labels"], abs=1e-3)


def test_label_counts_are_positive_integers(summary):
    env = summary["envs"]["CartPole-v1"]
    reached = 0
    for name, result in env["methods"].items():
        for value in result["labels_to_target"]:
            if value is not None:
                reached += 1
                assert _is_count(value) and value <= CAP, (name, value)
        assert all(_is_count(value) for value in result["answers"]), name
        assert all(_is_count(value) for value in result["env_steps"]), name
    assert reached >= 2


def test_a_cap_below_the_need_is_reported_as_not_reached():
    summary = bench.run_benchmark(
        envs=["cartpole"], seeds=1, quick=True, methods=["dagger", "share"], max_labels=20, show_progress=False
    )
    env = summary["envs"]["CartPole-v1"]
    for name in ("dagger", "share"):
        result = env["methods"][name]
        assert result["reached"] == 0 and result["labels_mean"] is None, name
        assert result["labels_to_target"] == [None], name
        assert result["final_score"][0] < bench.TARGET, name
    assert env["best_budgeted_policy"] is None and env["ratio_to_dagger"] is None and env["goal_met"] is False


def test_command_line_prints_json_last(capsys):
    assert bench.main(["--quick", "--env", "cartpole", "--methods", "dagger", "--max-labels", "40"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["envs"]["CartPole-v1"]["methods"]["dagger"]["answers"] == [40]


def test_evaluation_grid_and_curves():
    grid = bench.evaluation_grid(100)
    assert grid[0] == bench.GRID_START and grid[-1] == 100
    assert all(b > a for a, b in itertools.pairwise(grid))
    assert all(b / a <= 1.2 for a, b in itertools.pairwise(grid[2:]))  # about +10% each
    values = bench.step_curve([[10, 0.1], [20, 0.5]], np.array([5, 10, 15, 25]))
    assert np.isnan(values[0]) and list(values[1:]) == [0.1, 0.1, 0.5]


def test_ratio_interval():
    assert bench.ratio_interval([10, 10, 10], [20, 20, 20]) == [0.5, 0.5]
    low, high = bench.ratio_interval([10, 20, 30], [40, 40, 40])
    assert 0.25 <= low < 0.5 < high <= 0.75
    assert bench.ratio_interval([10, None, 30], [40, 40, 40]) is None  # a seed that did not reach
    assert bench.ratio_interval([10, 20], [40, 40]) is None


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="unknown method"):
        bench.run_benchmark(envs=["cartpole"], seeds=1, quick=True, methods=["nope"], show_progress=False)


def test_daemon_mode_runs_the_same_method_against_a_real_daemon():
    summary = bench.run_benchmark(
        envs=["cartpole"], seeds=1, quick=True, methods=["share"], max_labels=24, show_progress=False, daemon=True
    )
    assert summary["mode"] == "daemon"
    result = summary["envs"]["CartPole-v1"]["methods"]["share"]
    answers, steps = result["answers"][0], result["env_steps"][0]
    assert answers > 0 and steps > answers  # share labels a few percent of the steps the peer played
    assert answers >= 24 or result["labels_to_target"] == [answers]  # the cap, or the target, ended it
    assert result["curves"][0] and result["curves"][0][-1][0] == answers
    assert result["train_steps"][0] > 0  # the daemon's distiller trained on those labels
