"""benchmarks/label_efficiency.py: the core function in quick mode on CartPole (one seed, small caps)."""

from __future__ import annotations

import copy
import dataclasses
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
# The settings a tuned task reads (the source's TUNED holds the real ones, chosen by --tune): set
# here so that these tests check the machinery whatever the sweep chose.
TUNED = {"rates": {name: 0.05 for name in bench.TUNABLE} | {"budget": 0.02}, "best": "budget"}
bench.TUNED["cartpole"] = TUNED

THINNED = ("dagger_uniform",)
CAP = 600  # labels; DAgger needs about 100-150 on CartPole with the default schedule


@pytest.fixture(scope="module")
def summary():
    return bench.run_benchmark(
        envs=["cartpole"],
        seeds=1,
        quick=True,
        methods=["dagger", *THINNED],
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
    for key in ("teacher_return", "random_return", "threshold_return", "methods", "tuned", "verdict", "failure"):
        assert key in env, key
    assert env["random_return"] < env["threshold_return"] < env["teacher_return"]
    assert env["teacher_return"] >= 475  # the built-in teacher balances the pole
    assert env["failure"] == "terminated" and env["max_labels"] == CAP
    assert set(env["methods"]) == {"dagger", *THINNED}
    for name, result in env["methods"].items():
        assert result["seeds"] == 1, name
        for column in ("labels_to_target", "labels", "answers", "env_steps", "teacher_acted", "failures", "auc"):
            assert len(result[column]) == 1, (name, column)
        for column in ("env_steps_mean_std", "teacher_acted_mean_std", "failures_mean_std", "auc_mean_std"):
            assert len(result[column]) == 2 and result[column][1] == 0.0, (name, column)  # one seed: no spread
        assert 0.0 <= result["student_share"] <= 1.0, name
        assert result["teacher_latency_us"] > 0 and result["student_latency_us"] > 0, name
        labels = [point[0] for point in result["curves"][0]]
        assert labels == sorted(labels) and labels[-1] <= result["labels"][0], name


def test_the_columns_are_consistent(summary):
    env = summary["envs"]["CartPole-v1"]
    for name, result in env["methods"].items():
        labels, answers, steps = result["labels"][0], result["answers"][0], result["env_steps"][0]
        acted, failures, episodes = result["teacher_acted"][0], result["failures"][0], result["episodes"][0]
        assert labels <= answers <= steps, name  # one label and one answer at most per step
        assert acted == 0 and labels == answers, name  # the student acts in all of these: every answer a label
        assert 0 <= failures <= episodes, name
        # Area under the curve: the score (clipped to [0, 1]) held from each evaluation to the cap.
        assert result["auc"][0] == pytest.approx(bench.auc(result["curves"][0], CAP), abs=1e-4), name
        assert 0.0 <= result["auc"][0] <= 1.0, name
        if result["labels_to_target"][0] is not None:
            assert result["labels_to_target"][0] == labels, name  # the run stopped at the target
            assert result["env_steps_to_target"][0] == steps, name
    dagger = env["methods"]["dagger"]
    assert dagger["labels"] == dagger["env_steps"]  # DAgger labels every visited state


def test_settings_come_from_the_tuned_table_and_the_verdict_from_the_choice_made_in_advance(summary):
    env = summary["envs"]["CartPole-v1"]
    tuned = TUNED
    assert env["tuned"] == tuned and tuned["best"] in bench.QUERY_POLICIES
    assert set(tuned["rates"]) == set(bench.TUNABLE) and set(tuned["rates"].values()) <= set(bench.RATES)
    setups = bench.env_setups(quick=True)
    assert env["methods"]["dagger_uniform"]["params"] == {"share": tuned["rates"]["dagger_uniform"]}
    budget = tuned["rates"]["budget"] / setups["cartpole"].control_period_s  # evenly spaced, the same rate
    assert setups["cartpole"].methods["budget"].params == {"per_second": pytest.approx(budget)}
    verdict = env["verdict"]
    assert verdict["best_in_advance"] == tuned["best"]
    assert verdict["dagger_uniform_vs_dagger"]["ratio"] == pytest.approx(
        env["methods"]["dagger_uniform"]["labels_to_target"][0] / env["methods"]["dagger"]["labels_to_target"][0],
        abs=1e-3,
    )
    assert verdict["dagger_uniform_vs_dagger"]["ci90"] is None  # no interval from fewer than 3 seeds


def test_dagger_and_uniform_thinning_reach_the_target(summary):
    env = summary["envs"]["CartPole-v1"]
    for name in ("dagger", "dagger_uniform"):
        result = env["methods"][name]
        assert result["reached"] == 1, name
        assert result["curves"][0][-1][1] >= bench.TARGET, name  # the last evaluation is the one that reached
        assert result["curves"][0][-1][0] == result["labels_to_target"][0], name
    assert env["methods"]["dagger"]["policy"] == "always" and env["methods"]["dagger"]["student_share"] == 1.0


def test_label_counts_are_positive_integers(summary):
    env = summary["envs"]["CartPole-v1"]
    for name, result in env["methods"].items():
        for value in result["labels_to_target"]:
            assert value is None or (_is_count(value) and value <= CAP), (name, value)
        assert all(_is_count(value) for value in result["labels"]), name
        assert all(_is_count(value) for value in result["env_steps"]), name


def test_behaviour_cloning_acts_on_every_step_and_labels_a_share():
    summary = bench.run_benchmark(
        envs=["cartpole"], seeds=1, quick=True, methods=["bc"], max_labels=16, show_progress=False
    )
    result = summary["envs"]["CartPole-v1"]["methods"]["bc"]
    assert result["policy"] == "share" and result["params"]["teacher_acts"] is True
    assert result["teacher_acted"] == result["env_steps"] == result["answers"]  # the teacher drives
    assert result["labels"][0] < result["env_steps"][0]  # only a share of its states labelled
    assert result["failures"] == [0]  # the teacher never drops the pole


def test_a_cap_below_the_need_is_reported_as_not_reached():
    summary = bench.run_benchmark(
        envs=["cartpole"], seeds=1, quick=True, methods=["dagger", "dagger_uniform"], max_labels=20,
        show_progress=False,
    )  # fmt: skip
    env = summary["envs"]["CartPole-v1"]
    for name in ("dagger", "dagger_uniform"):
        result = env["methods"][name]
        assert result["reached"] == 0 and result["labels_mean"] is None, name
        assert result["labels_to_target"] == [None], name
        assert result["final_score"][0] < bench.TARGET, name
    # A seed that did not reach counts at the cap in the comparison: both capped, a ratio of 1.
    assert env["verdict"]["dagger_uniform_vs_dagger"]["ratio"] == 1.0


def test_command_line_prints_json_last(capsys):
    assert bench.main(["--quick", "--env", "cartpole", "--methods", "dagger", "--max-labels", "40"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["envs"]["CartPole-v1"]["methods"]["dagger"]["labels"] == [40]


def test_evaluation_grid_and_curves():
    grid = bench.evaluation_grid(100)
    assert grid[0] == bench.GRID_START and grid[-1] == 100
    assert all(b > a for a, b in itertools.pairwise(grid))
    assert all(b / a <= 1.2 for a, b in itertools.pairwise(grid[2:]))  # about +10% each
    values = bench.step_curve([[10, 0.1], [20, 0.5]], np.array([5, 10, 15, 25]))
    assert np.isnan(values[0]) and list(values[1:]) == [0.1, 0.1, 0.5]


def test_ratio_interval_counts_an_unreached_seed_at_the_cap():
    assert bench.ratio_interval([10, 10, 10], [20, 20, 20], cap=100) == [0.5, 0.5]
    low, high = bench.ratio_interval([10, 20, 30], [40, 40, 40], cap=100)
    assert 0.25 <= low < 0.5 < high <= 0.75
    assert bench.ratio_interval([100, 100, 100], [None, None, None], cap=100) == [1.0, 1.0]
    assert bench.ratio_interval([10, 20], [40, 40], cap=100) is None  # fewer than 3 seeds


def test_area_under_the_curve_and_the_tuning_rule():
    assert bench.auc([], 100) == 0.0
    assert bench.auc([[50, 1.0]], 100) == pytest.approx(0.5)  # 0 before the first evaluation
    assert bench.auc([[20, -0.5], [60, 0.5], [80, 2.0]], 100) == pytest.approx((20 * 0.5 + 20 * 1.0) / 100)
    # More tuning seeds reached wins, then fewer labels with an unreached seed counted at the cap.
    assert bench.selection_key([30, 40, None], 100) > bench.selection_key([90, 90, 90], 100)
    assert bench.selection_key([30, 40, 50], 100) < bench.selection_key([30, 40, 60], 100)


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="unknown method"):
        bench.run_benchmark(envs=["cartpole"], seeds=1, quick=True, methods=["nope"], show_progress=False)


@pytest.mark.parametrize(
    "args",
    [["--methods", "nope"], ["--tune", "--methods", "nope"], ["--set", "nope.share=0.1"]],
    ids=["run", "tune", "set"],
)
def test_an_unknown_method_on_the_command_line_is_one_line_and_exit_2(args, capsys):
    assert bench.main(["--quick", "--env", "cartpole", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran: no table, no JSON
    [line] = captured.err.strip().splitlines()
    assert "unknown method 'nope'" in line and "dagger_uniform" in line  # names what there is


def test_daemon_mode_runs_the_same_method_against_a_real_daemon():
    summary = bench.run_benchmark(
        envs=["cartpole"],
        seeds=1,
        quick=True,
        methods=["dagger_uniform"],
        max_labels=24,
        show_progress=False,
        daemon=True,
    )
    assert summary["mode"] == "daemon"
    result = summary["envs"]["CartPole-v1"]["methods"]["dagger_uniform"]
    answers, steps = result["labels"][0], result["env_steps"][0]
    assert answers > 0 and steps > answers  # uniform thinning labels a few percent of the steps the peer played
    assert answers >= 24 or result["labels_to_target"] == [answers]  # the cap, or the target, ended it
    assert result["curves"][0] and result["curves"][0][-1][0] == answers
    assert result["train_steps"][0] > 0  # the daemon's distiller trained on those labels


def test_a_tuned_discrete_task_compares_strategies_at_the_policy_chosen_in_advance():
    methods = bench.env_setups()["cartpole"].methods
    best = methods[TUNED["best"]]
    hard, calibrated = methods["budget+hard_label"], methods["budget+soft_calibrated"]
    for variant in (hard, calibrated):
        assert (variant.policy, variant.params) == (best.policy, best.params)  # the same policy, same rate
    assert best.strategy is None  # the task's own: soft_target at T = 2
    assert hard.strategy == "hard_label" and calibrated.strategy == "soft_target"
    assert calibrated.strategy_params["calibrated"] is True
    assert not any("+" in name for name in bench.env_setups()["pendulum"].methods)  # box actions: no softmax


def test_the_pixel_task_shows_the_student_pixels_through_its_perception_chain():
    pixels = bench.Bench(bench.env_setups()["mountaincar_pixels"], eval_episodes=1)
    try:
        perceive = pixels.perception()
        obs = pixels.eval_envs[0].reset(seed=0)[0]
        first = perceive(obs, b"stream", True)
        assert obs.shape == (962,) and first.shape[0] == 2 and first.size == 2 * 960  # two stacked frames
        assert first.min() >= 0.0 and first.max() <= 1.0 and first.max() > 0.5  # scaled pixels, the car visible
        assert pixels.teacher_return > pixels.random_return  # the state teacher drives the car up the hill
    finally:
        pixels.close()


def test_the_ensemble_task_runs_disagreement_on_five_of_the_task_students():
    bench.TUNED.setdefault("pendulum_ensemble", TUNED)
    setups = bench.env_setups()
    student = setups["pendulum_ensemble"].config["student"]
    assert student["plugin"] == "ensemble" and student["params"]["members"] == 5
    assert student["params"]["member"] == setups["pendulum"].config["student"]["plugin"]
    assert student["params"]["member_params"] == setups["pendulum"].config["student"]["params"]
    summary = bench.run_benchmark(
        envs=["pendulum_ensemble"], seeds=1, quick=True, methods=["disagreement"], max_labels=24, show_progress=False
    )
    result = summary["envs"]["Pendulum-v1 (ensemble student)"]["methods"]["disagreement"]
    assert "skipped" not in result  # the mlp task skips it: no members to disagree
    assert result["labels"][0] > 0 and result["env_steps"][0] > result["labels"][0]
    mlp = bench.Bench(setups["pendulum"], eval_episodes=1)
    try:
        assert "ensemble student" in bench.skipped(mlp, setups["pendulum_ensemble"].methods["disagreement"])
    finally:
        mlp.close()


def test_the_multitask_task_plays_both_tasks_and_counts_failures_by_each_task_s_rule():
    setup = bench.env_setups()["multitask"]
    assert setup.failure == {"CartPole-v1": "terminated", "Acrobot-v1": "truncated"}
    assert bench.failed(setup, True, False, {"task": "CartPole-v1"})  # the pole fell
    assert not bench.failed(setup, True, False, {"task": "Acrobot-v1"})  # the goal reached
    assert bench.failed(setup, False, True, {"task": "Acrobot-v1"})  # out of time
    assert not bench.failed(setup, False, True, {"task": "CartPole-v1"})  # balanced to the limit
    both = bench.Bench(bench.capped(setup, None, 1500), eval_episodes=2)
    try:
        # One evaluation episode of each task: CartPole's teacher 500, Acrobot's well above -500.
        assert both.teacher_returns[0] == 500.0 and -500 < both.teacher_returns[1] < 0
        # The teachers act for 1,500 steps: CartPole to its time limit, Acrobot to its goal, in turn.
        run = bench.simulate(both, bench.Method("bc", "share", {"share": 0.02, "teacher_acts": True}), seed=0)
    finally:
        both.close()
    assert run.labels_to_target is None and run.episodes >= 3
    assert run.failures == 0  # neither a CartPole episode at its limit nor an Acrobot one at its goal


def test_the_mujoco_task_counts_a_fall_before_the_time_limit_as_a_failure():
    pytest.importorskip("mujoco", reason="the inverted_double_pendulum task needs the mujoco extra")
    setup = bench.capped(bench.env_setups()["inverted_double_pendulum"], None, 60)
    poles = bench.Bench(setup, eval_episodes=1)
    try:
        assert poles.teacher_returns[0] > 9000 > 500 > poles.random_returns[0]  # the teacher lasts 1,000 steps
        run = bench.simulate(poles, bench.Method("dagger", "always", {}), seed=0)
    finally:
        poles.close()
    # 60 steps of an untrained student: the poles fall within a few dozen, never reaching the limit.
    assert run.labels_to_target is None and run.episodes >= 1
    assert run.failures == run.episodes


def test_runs_split_by_method_merge_into_one_output_with_its_verdicts(summary, tmp_path, capsys):
    env = summary["envs"]["CartPole-v1"]
    parts = {}
    for name in ("dagger", "dagger_uniform"):
        part = copy.deepcopy(summary)
        part["envs"]["CartPole-v1"]["methods"] = {name: env["methods"][name]}
        part["envs"]["CartPole-v1"]["verdict"] = bench.verdicts(env["tuned"], env["max_labels"], {})
        parts[str(tmp_path / f"{name}.json")] = part
    merged = bench.merge(parts)
    assert merged["envs"]["CartPole-v1"]["methods"] == env["methods"]
    assert merged["envs"]["CartPole-v1"]["verdict"] == env["verdict"]  # recomputed from both parts
    assert merged["envs"]["CartPole-v1"]["verdict"]["dagger_uniform_vs_dagger"] is not None
    assert merged["parts"] == list(parts) and merged["seconds"] == 2 * summary["seconds"]
    for path, part in parts.items():
        Path(path).write_text(json.dumps(part))
    assert bench.main(["--merge", *parts]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["envs"] == merged["envs"]
    # Parts that do not fit together: the same method twice, other seeds.
    with pytest.raises(ValueError, match="dagger also in another part"):
        bench.merge({"a": parts[next(iter(parts))], "b": parts[next(iter(parts))]})
    other = copy.deepcopy(parts[next(iter(parts))]) | {"seeds": [5]}
    Path(tmp_path / "other.json").write_text(json.dumps(other))
    assert bench.main(["--merge", next(iter(parts)), str(tmp_path / "other.json")]) == 2
    assert "seeds [5] differs" in capsys.readouterr().err


def test_stored_runs_are_reused_and_a_changed_setting_runs_again(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["--quick", "--env", "cartpole", "--methods", "dagger", "--max-labels", "40", "--runs", str(runs)]
    assert bench.main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    [stored] = runs.glob("*.json")
    record = json.loads(stored.read_text())
    assert record["key"]["seed"] == 0 and record["run"]["labels"] == 40

    # A second invocation reads the run instead of running it: an edit to the file shows in its output.
    record["run"]["episodes"] = 12345
    stored.write_text(json.dumps(record))
    assert bench.main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    dagger = second["envs"]["CartPole-v1"]["methods"]["dagger"]
    assert dagger["episodes"] == [12345]
    assert dagger["labels"] == first["envs"]["CartPole-v1"]["methods"]["dagger"]["labels"]

    # Another cap is another run: it runs, and is stored beside the first.
    assert bench.main([*args[:-4], "--max-labels", "30", "--runs", str(runs)]) == 0
    third = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert third["envs"]["CartPole-v1"]["methods"]["dagger"]["labels"] == [30]
    assert len(list(runs.glob("*.json"))) == 2


def test_a_run_another_process_stored_after_this_one_started_is_read_not_run(tmp_path):
    store = bench.RunStore(tmp_path)
    setup = bench.capped(bench.env_setups(quick=True)["cartpole"], 20, None)
    job = bench.Job(setup, bench.Method("dagger", "always", {}), seed=0)
    run, found = bench._run_job(job, 2, bench.Schedule(), store)
    assert not found and run.labels == 20
    # As a sibling process sharing the store would leave it: looked up again when the job comes up.
    store.save(job, 2, bench.Schedule(), dataclasses.replace(run, episodes=12345))
    again, found = bench._run_job(job, 2, bench.Schedule(), store)
    assert found and again.episodes == 12345


def test_stored_runs_are_refused_with_a_daemon(capsys):
    with pytest.raises(SystemExit) as exited:
        bench.main(["--daemon", "--env", "cartpole", "--methods", "dagger", "--runs", "unused"])
    assert exited.value.code == 2 and "--runs" in capsys.readouterr().err
