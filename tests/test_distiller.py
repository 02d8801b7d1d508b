"""The online distiller with real processes: versions, registry, promotion gate, rollback,
crash recovery, the teacher-answer cache and feature hints."""

from __future__ import annotations

import json
import os
import signal

import gymnasium
import numpy as np
import pytest

from runtime.peer import Peer
from runtime.peer.gym import run_gym_peers
from runtime.testing import make_distribution, peers_playing, start_daemon

FAST = {"AGENTRT_DISTILLATION_PUBLISH_INTERVAL_S": "0.3", "AGENTRT_DISTILLATION_STEPS_PER_PUBLISH": "50"}


def promoted(listed: dict) -> list[dict]:
    return [version for version in listed["versions"] if version["status"] == "promoted"]


def test_versions_are_registered_and_rollback_serves_an_earlier_one():
    running = start_daemon(env=FAST)
    try:
        # Version numbers count rejected candidates too: play on until three were promoted.
        with peers_playing(running.endpoint) as played:
            running.wait_until(lambda s: len(promoted(running.students())) >= 3, what="three promoted versions")
        running.wait_until_distiller_rests(played.summary.steps)  # no candidate may come after the rollback
        listed = running.students()
        promoted_versions = promoted(listed)
        assert listed["serving"] == promoted_versions[-1]["version"]
        assert [v["version"] for v in listed["versions"]] == sorted(v["version"] for v in listed["versions"])
        assert all(v["parent"] is None or v["parent"] < v["version"] for v in listed["versions"])
        assert promoted_versions[-1]["samples_seen"] >= promoted_versions[0]["samples_seen"]

        target = promoted_versions[0]["version"]
        result = running.cli("student", "rollback", "--to", str(target))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["serving"] == target
        running.wait_until(lambda s: s["student_version"] == target, what="decision serving the rolled-back version")
        assert running.students()["serving"] == target
        bad = running.cli("student", "rollback", "--to", "9999")
        assert bad.returncode == 1 and "no student version 9999" in bad.stderr
    finally:
        running.stop()


def test_distiller_killed_mid_training_resumes_and_decision_keeps_serving():
    running = start_daemon(env=FAST)
    try:
        with peers_playing(running.endpoint):
            status = running.wait_until(
                lambda s: s["roles"]["distillation"]["gauges"].get("version", 0) >= 2, what="the distiller publishing"
            )
            before_version = status["roles"]["distillation"]["gauges"]["version"]
            os.kill(status["roles"]["distillation"]["pid"], signal.SIGKILL)
            actions_at_kill = status["actions"]
            restarted = running.wait_until(
                lambda s: (
                    s["roles"]["distillation"]["restarts"] == 1 and s["roles"]["distillation"]["state"] == "running"
                ),
                what="distiller restarted",
            )
            assert restarted["actions"] > actions_at_kill  # decision kept serving
            resumed = running.wait_until(
                lambda s: s["roles"]["distillation"]["gauges"].get("version", 0) > before_version,
                timeout=60,
                what="versions continuing after the restart",
            )
        versions = [v["version"] for v in running.students()["versions"]]
        assert versions == list(range(1, len(versions) + 1)), versions  # no number reused or skipped
        assert '"distiller_resumed"' in running.log()
        assert resumed["roles"]["decision"]["restarts"] == 0
    finally:
        running.stop()


SABOTEUR = """
    import torch
    from runtime import hookimpl

    class Saboteur:
        '''Honest soft-target training for a while, then training on inverted labels.'''

        def __init__(self, honest_steps):
            self.honest_steps = honest_steps
            self.steps = 0

        def loss(self, inputs):
            self.steps += 1
            labels = inputs.teacher_outputs.argmax(dim=1)
            if self.steps > self.honest_steps:
                labels = 1 - labels
            return torch.nn.functional.cross_entropy(inputs.student_outputs, labels)

    @hookimpl
    def agentrt_register_distillation_strategies():
        return {"saboteur": lambda params: Saboteur(params.get("honest_steps", 400))}
"""


def test_promotion_gate_refuses_a_worse_candidate_and_decision_keeps_the_old_version(tmp_path):
    site = make_distribution(
        tmp_path, "saboteur-plugin", {"saboteur_plugin": SABOTEUR}, {"saboteur": "saboteur_plugin"}
    )
    running = start_daemon(
        '[distillation]\nstrategy = "saboteur"\nparams = { honest_steps = 400 }\n'
        "heldout_share = 0.3\nmin_heldout = 16\n",
        env={**FAST, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    try:
        run_gym_peers(running.endpoint, "CartPole-v1", episodes=4, peers=2)
        honest = running.wait_until(lambda s: s["student_version"] >= 1, what="an honest student")
        with peers_playing(running.endpoint):
            status = running.wait_until(
                lambda s: s["roles"]["distillation"]["counters"].get("candidates_rejected", 0) >= 2,
                timeout=90,
                what="sabotaged candidates rejected",
            )
        listed = running.students()
        rejected = [v for v in listed["versions"] if v["status"] == "rejected"]
        promoted = [v for v in listed["versions"] if v["status"] == "promoted"]
        assert rejected and promoted and honest["student_version"] >= 1
        assert all(v["heldout_agreement"] < v["serving_agreement"] - 0.02 for v in rejected)
        assert listed["serving"] == promoted[-1]["version"] < rejected[-1]["version"]
        assert status["student_version"] == listed["serving"]
        assert '"candidate_rejected"' in running.log()
    finally:
        running.stop()


def test_teacher_answer_cache_never_pays_twice_for_the_same_observation(daemon):
    env = gymnasium.make("CartPole-v1")
    observation = np.array([0.01, -0.02, 0.03, 0.04], dtype=np.float32)
    with Peer(daemon.endpoint, env.observation_space, env.action_space) as peer:
        first = peer.act(observation, policy="teacher")
        second = peer.act(observation, policy="teacher")
    assert first.decided_by == second.decided_by == "teacher"
    assert int(first.action) == int(second.action)
    status = daemon.wait_until(
        lambda s: s["roles"]["teacher"]["counters"].get("cache_hits", 0) >= 1, what="a cache hit"
    )
    teacher = status["roles"]["teacher"]["counters"]
    assert teacher["labels"] == 1, teacher


def test_feature_hints_train_on_teacher_features():
    running = start_daemon(
        '[distillation]\nstrategy = "feature_hints"\nteacher_features = true\n'
        "[distillation.params]\nstudent_dim = 32\nteacher_dim = 256\n",
        env=FAST,
    )
    try:
        run_gym_peers(running.endpoint, "CartPole-v1", episodes=4, peers=2)
        status = running.wait_until(
            lambda s: s["student_version"] >= 1 and s["distillation"]["loss"] is not None,
            what="a student trained with hints",
        )
        assert status["errors"]["total"] == 0
        assert np.isfinite(status["distillation"]["loss"])
        assert status["roles"]["teacher"]["counters"]["cache_hits"] > 0  # acting answers re-asked for features, free
    finally:
        running.stop()


def test_configured_query_policies_govern_what_the_teacher_is_asked():
    running = start_daemon('[query]\npolicy = "budget"\n[query.params]\ntotal = 150\n', env=FAST)
    try:
        summary = run_gym_peers(running.endpoint, "CartPole-v1", episodes=40, peers=2)
        status = running.wait_until(lambda s: s["observations"] == summary.steps + summary.resends, what="counters")
        assert summary.steps > 150
        assert status["labels_requested"] == 150  # the budget, exactly: no more, and all of it used
        assert status["decisions"]["by_teacher"] == 0
    finally:
        running.stop()
    running = start_daemon(
        '[query]\npolicy = "uncertainty"\n[query.params]\nmeasure = "margin"\ntarget_rate = 0.2\n', env=FAST
    )
    try:
        summary = run_gym_peers(running.endpoint, "CartPole-v1", episodes=40, peers=2)
        status = running.wait_until(lambda s: s["observations"] == summary.steps + summary.resends, what="counters")
        assert summary.steps > 200
        assert 0.1 < status["labels_requested"] / status["observations"] < 0.3
    finally:
        running.stop()


def test_disagreement_policy_sees_the_ensemble_students_members():
    running = start_daemon(
        '[student]\nplugin = "ensemble"\nparams = { members = 3 }\n'
        '[query]\npolicy = "disagreement"\n'
        'params = { measure = "variance", target_rate = 0.3, fallback_share = 0.0 }\n',
        env=FAST,
    )
    try:
        summary = run_gym_peers(running.endpoint, "CartPole-v1", episodes=30, peers=2)
        status = running.wait_until(lambda s: s["observations"] == summary.steps + summary.resends, what="counters")
        # fallback_share is 0: every label here was chosen from the members' disagreement
        assert 0.15 < status["labels_requested"] / status["observations"] < 0.45
        assert status["errors"]["total"] == 0
    finally:
        running.stop()


def test_restart_with_a_different_student_stops_with_a_clear_error_instead_of_crash_looping():
    first = start_daemon(env=FAST)
    try:
        run_gym_peers(first.endpoint, "CartPole-v1", episodes=4, peers=2)
        first.wait_until(lambda s: s["student_version"] >= 1, what="a checkpoint on disk")
        bad = first.cli("student", "rollback", "--to", "-3")
        assert bad.returncode == 1 and "no student version -3" in bad.stderr
    finally:
        first.stop(remove_run_dir=False)
    second = start_daemon("[student.params]\nhidden = [7]\n", env=FAST, run_dir=first.run_dir, wait=False)
    try:
        assert second.process.wait(timeout=60) == 78
        stopped = second.events("daemon_stopped")[-1]  # the log holds the first daemon's too
        reason = stopped["reason"]  # what 'up' and 'status' show: the advice first, one tensor, not torch's list
        assert "do not fit the configured student" in reason and "use another run directory" in reason
        assert "first difference: " in reason and "Error(s) in loading state_dict" not in reason
    finally:
        second.stop()


@pytest.mark.timeout(360)  # a 180 s wait for the agreement, after starting the daemon
def test_stacked_teacher_ensemble_trains_a_multi_teacher_student():
    running = start_daemon(
        '[teacher]\nplugin = "ensemble"\n[teacher.params]\ncombine = "stack"\n'
        'members = [{plugin = "checkpoint"}, {plugin = "scripted", '
        'params = {callable = "plugins.teachers:cartpole_controller"}}]\n'
        '[distillation]\nstrategy = "multi_teacher"\n',
        env=FAST,
    )
    try:
        with peers_playing(running.endpoint) as played:
            # The agreement is a running figure over fresh labels, measured before the student trains on
            # them: read once after the first publish, a busy machine's few training steps left it at 0.4987.
            status = running.wait_until(
                lambda s: s["student_version"] >= 1 and (s["distillation"]["agreement"] or 0) > 0.5,
                timeout=180,
                what="a student taught by two teachers agreeing with them more often than chance",
            )
        assert status["errors"]["total"] == 0 and status["roles"]["distillation"]["restarts"] == 0
        assert played.summary.by_teacher > 0
    finally:
        running.stop()


NAN_STRATEGY = """
    import torch
    from runtime import hookimpl

    class NotANumber:
        def loss(self, inputs):
            return inputs.student_outputs.sum() * torch.tensor(float("nan"))

    @hookimpl
    def agentrt_register_distillation_strategies():
        return {"nan_loss": lambda params: NotANumber()}
"""


def test_a_strategy_that_fails_every_step_shows_as_failing_training_not_a_log_flood(tmp_path):
    site = make_distribution(tmp_path, "nan-strategy", {"nan_strategy": NAN_STRATEGY}, {"nan": "nan_strategy"})
    config_text = '[distillation]\nstrategy = "nan_loss"\nmin_samples = 8\n[query]\npolicy = "always"\n'
    running = start_daemon(config_text, env={"PYTHONPATH": str(site)})
    try:
        run_gym_peers(running.endpoint, "CartPole-v1", episodes=2, peers=1)
        # Failed steps are quick (no optimizer step), so a hundred come within seconds even on a busy machine.
        status = running.wait_until(
            lambda s: (
                s["distillation"]["training"] == "failing" and s["errors"]["by_code"].get("PLUGIN_FAILED", 0) >= 100
            ),
            timeout=120,
            what="training reported failing, a hundred failed steps",
        )
        assert "plugin 'nan'" in status["distillation"]["training_error"]
        assert "finite scalar" in status["distillation"]["training_error"]
        assert status["distillation"]["train_steps"] == 0 and status["student_version"] == 0
        # Steps go on failing: the log, read first, stands for failures the counter reaches at the latest
        # with the distiller's next report, in far fewer lines.
        logged = running.events("plugin_failed")
        logged_failures = sum(entry["count"] for entry in logged)
        counted = running.wait_until(
            lambda s: s["errors"]["by_code"]["PLUGIN_FAILED"] >= logged_failures, what="the logged failures counted"
        )
        assert 0 < len(logged) < counted["errors"]["by_code"]["PLUGIN_FAILED"]
        assert status["roles"]["distillation"]["restarts"] == 0  # failing, not crashing
    finally:
        running.stop()
