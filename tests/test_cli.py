"""The CLI around a running daemon, as users get it wrong: each mistake is one line naming what to
do, with the exit code of runtime/errors.py, and no traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import gymnasium
import pytest

from runtime.errors import ExitCode
from runtime.peer.gym import EpisodeResult
from runtime.processes import process_alive, wait_for_exit
from runtime.supervisor.launch import private_run_dir
from runtime.testing import agentrt, free_port_range, run_gym_peers, start_daemon


def test_a_typo_made_in_the_file_while_the_daemon_runs_does_not_lock_status_and_down_out(tmp_path):
    daemon = start_daemon()
    try:
        path = tmp_path / "agentrt.toml"
        path.write_text(f'[daemon]\nrun_dir = "{daemon.run_dir}"\n\n[distillation]\nlearning_rte = 0.1\n')
        status = agentrt("status", "--json", "--config", str(path))
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["daemon"]["pid"] == daemon.process.pid
        assert "distillation.learning_rte" in status.stderr and str(daemon.run_dir) in status.stderr
        pids = [daemon.process.pid, *(role["pid"] for role in daemon.status()["roles"].values())]
        down = agentrt("down", "--config", str(path))
        assert down.returncode == 0, down.stderr
        assert [pid for pid in pids if process_alive(pid)] == []
        # Anything else still refuses the file.
        show = agentrt("config", "show", "--config", str(path))
        assert show.returncode == ExitCode.USAGE and "distillation.learning_rte" in show.stderr
    finally:
        daemon.stop()


def test_attach_finds_where_the_daemon_of_its_run_directory_serves():
    run_dir = private_run_dir()
    daemon = start_daemon(endpoint=f"ipc://{run_dir}/peers.sock", run_dir=run_dir)  # not daemon.peer_endpoint
    try:
        attached = daemon.cli("attach", "gym", "CartPole-v1", "--episodes", "1", "--json")
        assert attached.returncode == 0, attached.stderr
        assert json.loads(attached.stdout)["episodes"] == 1
    finally:
        daemon.stop()


FIVE_STEPS = "agentrt-test/CartPoleFiveSteps-v0"  # CartPole's spaces: the runtime serves it


def test_peers_side_by_side_report_the_episodes_asked_for_when_several_end_in_one_step(daemon):
    """Two peers whose episodes all last five steps end two at a time: three are asked for, three
    are reported (``on_episode``, the summary), not four."""
    if FIVE_STEPS not in gymnasium.registry:
        gymnasium.register(FIVE_STEPS, "gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=5)
    reported: list[EpisodeResult] = []
    summary = run_gym_peers(daemon.endpoint, FIVE_STEPS, episodes=3, peers=2, on_episode=reported.append)
    assert [episode.steps for episode in reported] == [5, 5, 5]
    assert summary.as_dict()["episodes"] == 3 and summary.steps == 20  # both peers' second episodes were played


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["CartPole-v1", "--peers", "0"], ExitCode.USAGE, "--peers: must be at least 1, not 0"),
        (["CartPole-v1", "--episodes", "-1"], ExitCode.USAGE, "--episodes: must be at least 1, not -1"),
        (["NoSuchEnv-v9"], ExitCode.USAGE, "NoSuchEnv-v9: Environment `NoSuchEnv` doesn't exist"),
        (["CartPole-v1", "--step-hz", "50"], ExitCode.USAGE, "--step-hz applies to the edge mode only"),
        (["CartPole-v1", "--edge", "--policy", "teacher"], ExitCode.USAGE, "--policy auto asks the teacher"),
        (["CartPole-v1", "--wait", "1"], ExitCode.TIMEOUT, "no runtime answered at tcp://127.0.0.1:"),
    ],
)
def test_attach_mistakes_are_one_line_with_an_exit_code(run_dir, arguments, code, message):
    nobody = f"tcp://127.0.0.1:{free_port_range(1)}"
    result = agentrt("attach", "gym", *arguments, "--run-dir", str(run_dir), "--endpoint", nobody)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_run_directory_that_is_a_file_is_refused_by_every_command(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine\n")
    for command in (["up", "--detach"], ["status"], ["down"], ["attach", "gym", "CartPole-v1", "--wait", "1"]):
        result = agentrt(*command, "--run-dir", str(afile))
        assert result.returncode == ExitCode.USAGE, (command, result.stderr)
        assert f"run directory {afile} is a file" in result.stderr, result.stderr
    assert afile.read_text() == "mine\n"
    assert Path(afile).is_file()


def test_down_on_a_daemon_that_does_not_answer_sends_sigterm_and_says_what_still_runs():
    daemon = start_daemon()
    try:
        daemon.status()  # records the role pids, for daemon.stop
        os.kill(daemon.process.pid, signal.SIGSTOP)  # alive, but answers nothing
        try:
            down = daemon.cli("down", "--wait", "1")
            assert down.returncode == ExitCode.TIMEOUT, down.stderr
            assert f"still running after 1 s: pids {daemon.process.pid}" in down.stderr
        finally:
            os.kill(daemon.process.pid, signal.SIGCONT)
        # The SIGTERM that down sent takes effect once it runs again: a graceful stop.
        assert daemon.process.wait(timeout=60) == ExitCode.OK
    finally:
        daemon.stop()


def test_a_daemon_whose_run_directory_is_removed_stops_instead_of_living_on_unreachable():
    daemon = start_daemon()
    try:
        daemon.status()
        shutil.rmtree(daemon.run_dir, ignore_errors=True)  # the roles may be writing into it meanwhile
        assert daemon.process.wait(timeout=60) == ExitCode.FAILURE
        assert not wait_for_exit(daemon.role_pids, 60)
    finally:
        daemon.stop()
