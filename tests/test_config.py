"""Configuration: defaults, file, environment, validation that names the key, and the CLI around it."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from runtime import config
from runtime.errors import DaemonError
from runtime.peer import Peer
from runtime.processes import process_alive as alive
from runtime.supervisor import control
from runtime.testing import agentrt, make_distribution, start_daemon


def test_every_key_has_a_default_and_defaults_validate():
    defaults = config.defaults()
    assert set(defaults) == set(config.SCHEMA)
    assert all(set(defaults[section]) == set(keys) for section, keys in config.SCHEMA.items())
    assert config.merge(config.defaults(), defaults, "defaults") == defaults


def test_settings_type_every_section_and_round_trip(tmp_path):
    path = tmp_path / "agentrt.toml"
    path.write_text("[decision]\nbatch_max = 8\n[execution]\nfilters = []\n[student.params]\nhidden = [16]\n")
    loaded = config.load(path, environ={"AGENTRT_DISTILLATION_SEED": "7"})
    settings = config.Settings.of(loaded)
    assert isinstance(settings.decision, config.DecisionSettings) and settings.decision.batch_max == 8
    assert settings.distillation.seed == 7 and settings.execution.filters == []
    assert settings.student.params == {"hidden": [16]}
    assert settings.as_config() == loaded
    # The schema is the dataclasses' fields: one declaration gives the key, its type, default and doc.
    for name, section in config.SECTIONS.items():
        assert [key.name for key in dataclasses.fields(section)] == list(config.SCHEMA[name])
    assert config.Settings.of(config.defaults()) == config.Settings(
        **{name: section() for name, section in config.SECTIONS.items()}
    )


def test_run_dir_is_absolute_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.load(environ={"AGENTRT_RUN_DIR": "relative/run"})["daemon"]["run_dir"] == str(
        tmp_path / "relative" / "run"
    )


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[daemon]\nbogus = 1\n", "unknown key daemon.bogus"),
        ("[nonsense]\nx = 1\n", "unknown section [nonsense]"),
        ("[daemon]\nlog_format = 'xml'\n", "daemon.log_format"),
        ("[distillation]\nbatch_size = 'big'\n", "distillation.batch_size"),
        ("[distillation]\nbatch_size = 0\n", "distillation.batch_size"),
        ("[plugins]\nautoload = 'yes'\n", "plugins.autoload"),
        # Timeouts become milliseconds in a C int: 1e20 s would overflow where the runtime uses it.
        ("[protocol]\npeer_timeout_s = 1e20\n", "protocol.peer_timeout_s"),
        ("[protocol]\nstall_timeout_s = 0\n", "protocol.stall_timeout_s"),
        ("[teacher]\ntimeout_ms = 4294967296\n", "teacher.timeout_ms"),
        # Liveness deadlines a healthy role could not meet between two of its reports.
        ("[daemon]\nunresponsive_after_s = 0.2\n", "daemon.unresponsive_after_s must be more than daemon.stats"),
        ("[daemon]\nkill_unresponsive_after_s = 1\n", "daemon.kill_unresponsive_after_s must be at least"),
        ("[daemon\n", "not valid TOML"),
        # libzmq would bind port 99999 - 65536 = 34463 and say nothing.
        ("[daemon]\npeer_endpoint = 'tcp://127.0.0.1:99999'\n", "PORT at most 65535"),
        ("[daemon]\npeer_endpoint = 'foo'\n", "tcp://HOST:PORT"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path, toml, message):
    path = tmp_path / "agentrt.toml"
    path.write_text(toml)
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        config.load(path, environ={})


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:7411", "tcp://*:7411", "tcp://127.0.0.1:*", "tcp://[::1]:0", "ipc:///tmp/a.sock"]
)
def test_bindable_peer_endpoints_are_accepted(endpoint):
    assert config.load(environ={"AGENTRT_DAEMON_PEER_ENDPOINT": endpoint})["daemon"]["peer_endpoint"] == endpoint


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            "AGENTRT_DAEMON_LOG_FORMATT",
            "environment variable AGENTRT_DAEMON_LOG_FORMATT: unknown key daemon.log_formatt",
        ),
        ("AGENTRT_PEER", "environment variable AGENTRT_PEER: no configuration section matches"),
    ],
)
def test_a_bad_environment_variable_is_named(variable, message):
    with pytest.raises(config.ConfigError, match=f"^{message}"):
        config.load(environ={variable: "x"})


def test_environment_overrides_file_and_parses_values(tmp_path):
    path = tmp_path / "agentrt.toml"
    path.write_text("[distillation]\nlearning_rate = 0.1\nbatch_size = 16\n")
    loaded = config.load(
        path,
        environ={
            "AGENTRT_DISTILLATION_LEARNING_RATE": "0.01",
            "AGENTRT_STUDENT_PARAMS": "{hidden = [64, 64]}",
            "AGENTRT_PLUGINS_DISABLE": "foo,bar",
            "AGENTRT_RUN_DIR": "/tmp/somewhere",
        },
    )
    assert loaded["distillation"]["learning_rate"] == 0.01
    assert loaded["distillation"]["batch_size"] == 16
    assert loaded["student"]["params"] == {"hidden": [64, 64]}
    assert loaded["plugins"]["disable"] == ["foo", "bar"]
    assert loaded["daemon"]["run_dir"] == "/tmp/somewhere"


def test_environment_variable_with_unknown_key_is_named():
    with pytest.raises(config.ConfigError, match="daemon.nope"):
        config.load(environ={"AGENTRT_DAEMON_NOPE": "1"})


def test_config_show_prints_the_effective_configuration(tmp_path):
    path = tmp_path / "agentrt.toml"
    path.write_text("[decision]\nbatch_max = 7\n")
    result = agentrt("config", "show", "--config", str(path), "--json", env={"AGENTRT_TEACHER_TIMEOUT_MS": "99"})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["decision"]["batch_max"] == 7 and shown["teacher"]["timeout_ms"] == 99
    as_toml = agentrt("config", "show", "--config", str(path))
    assert "batch_max = 7" in as_toml.stdout
    assert (
        config.merge(config.defaults(), __import__("tomllib").loads(as_toml.stdout), "shown")["decision"]["batch_max"]
        == 7
    )


def test_up_with_a_bad_key_fails_at_start_up_naming_it(tmp_path, run_dir):
    path = tmp_path / "agentrt.toml"
    path.write_text("[decision]\nbatch_maxx = 7\n")
    result = agentrt("up", "--config", str(path), "--run-dir", str(run_dir), timeout=30)
    assert result.returncode == 2
    assert "decision.batch_maxx" in result.stderr


def test_two_daemons_side_by_side_and_cli_finds_each_by_run_dir():
    first, second = start_daemon(), start_daemon()
    try:
        for running in (first, second):
            result = running.cli("status", "--json")
            assert result.returncode == 0, result.stderr
            status = json.loads(result.stdout)
            assert status["daemon"]["pid"] == running.process.pid
            assert status["daemon"]["peer_endpoint"] == running.endpoint
        same_dir = agentrt("up", "--run-dir", str(first.run_dir), timeout=30)
        assert same_dir.returncode == 1 and "already runs" in same_dir.stderr
        assert f"pid {first.process.pid}" in same_dir.stderr
        # Said before the components are checked (seconds of imports): with one that does not exist,
        # the answer is still that a daemon runs there, for up and up --detach alike.
        for detach in ([], ["--detach"]):
            refused = agentrt(
                "up", *detach, "--run-dir", str(second.run_dir), env={"AGENTRT_STUDENT_PLUGIN": "transformer9000"}
            )
            assert refused.returncode == 1 and "already runs" in refused.stderr, refused.stderr
    finally:
        first.stop()
        second.stop()


def test_detach_returns_when_roles_run_and_down_when_every_process_is_gone(run_dir):
    started = agentrt("up", "--detach", "--run-dir", str(run_dir), "--peer-endpoint", "tcp://127.0.0.1:*", timeout=120)
    assert started.returncode == 0, started.stderr
    reply = json.loads(started.stdout)
    pid = reply["pid"]
    pids = [pid]
    try:
        assert reply["peer_endpoint"].startswith("tcp://127.0.0.1:") and not reply["peer_endpoint"].endswith("*")
        # Bound before `up` said ready: a connection is accepted at once.
        socket.create_connection(("127.0.0.1", int(reply["peer_endpoint"].rsplit(":", 1)[1])), timeout=10).close()
        assert int((run_dir / "daemon.pid").read_text()) == pid
        assert run_dir.stat().st_mode & 0o777 == 0o700
        # Every role is running when `up --detach` returns, not merely starting.
        status = json.loads(agentrt("status", "--json", "--run-dir", str(run_dir)).stdout)
        assert {name: role["state"] for name, role in status["roles"].items()} == dict.fromkeys(
            status["roles"], "running"
        )
        pids += [*status["daemon"]["fork_servers"].values(), *(role["pid"] for role in status["roles"].values())]
        stopped = agentrt("down", "--run-dir", str(run_dir), timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout)["stopped"] == pid
        # Checked at once: `down` returned, so nothing it stopped may still run.
        assert [p for p in pids if alive(p)] == []
        not_running = agentrt("status", "--run-dir", str(run_dir))
        assert not_running.returncode == 1 and "exit code 0: stopped on request" in not_running.stderr
        as_json = json.loads(agentrt("status", "--json", "--run-dir", str(run_dir)).stdout)
        assert as_json["running"] is False and as_json["last_exit"] == {"code": 0, "reason": "stopped on request"}
    finally:
        for leftover in pids:
            if alive(leftover):
                os.kill(leftover, signal.SIGKILL)


FAILING_FACTORY = """
    from runtime import hookimpl

    def build_doomed(params, observation_space, action_space):
        raise RuntimeError("this student needs a GPU cluster")

    @hookimpl
    def agentrt_register_students():
        return {"doomed": build_doomed}
"""


def test_detach_with_a_broken_plugin_exits_78_with_its_error(tmp_path, run_dir):
    site = make_distribution(
        tmp_path / "site", "doomed-plugin", {"doomed_plugin": FAILING_FACTORY}, {"doomed": "doomed_plugin"}
    )
    env = {"PYTHONPATH": str(site), "AGENTRT_STUDENT_PLUGIN": "doomed"}
    result = agentrt(
        "up", "--detach", "--run-dir", str(run_dir), "--peer-endpoint", "tcp://127.0.0.1:*", env=env, timeout=120
    )
    assert result.returncode == 78, result.stderr
    expected = (
        "plugin 'doomed' (agentrt_register_students): building student 'doomed' failed: "
        "RuntimeError: this student needs a GPU cluster"
    )
    assert expected in result.stderr  # found by the check up runs before it starts anything
    assert not (run_dir / "daemon.pid").exists()


def test_shipped_example_configuration_is_valid_and_current():
    from pathlib import Path

    shipped = Path(__file__).parent.parent / "deploy" / "agentrt.toml"
    loaded = config.load(shipped, environ={})
    assert loaded == config.load(environ={"AGENTRT_RUN_DIR": "/run/agentrt"}), "regenerate deploy/agentrt.toml"


@pytest.mark.parametrize(
    "toml, message",
    [
        ('[agent]\nenv = "NoSuchEnv-v0"\n', "agent.env"),
        ('[agent]\nobservation_space = { type = "box", shape = [0] }\n', "agent.observation_space"),
    ],
)
def test_bad_agent_spaces_fail_at_start_up_naming_the_key(tmp_path, run_dir, toml, message):
    path = tmp_path / "agentrt.toml"
    path.write_text(toml)
    result = agentrt("up", "--config", str(path), "--run-dir", str(run_dir), timeout=60)
    assert result.returncode == 78
    assert message in result.stderr


def test_one_explicit_space_overrides_only_that_space():
    from runtime.wire.spaces import agent_spaces

    observation, action = agent_spaces(
        {"env": "CartPole-v1", "action_space": {"type": "discrete", "n": 3}, "observation_space": {}}
    )
    assert action.n == 3 and observation.shape == (4,)


POISONED_MODULE = """
import os, pathlib
pathlib.Path(os.environ["POISON_MARKER"], f"imported-by-{os.getpid()}").touch()
raise ImportError("a msgpack.py from the working directory was imported")
"""


@pytest.mark.parametrize("detach", [True, False], ids=["detached", "foreground"])
def test_no_code_from_the_working_directory_runs_in_the_runtime(tmp_path, run_dir, detach):
    # A user starts the daemon in a directory that happens to hold a msgpack.py: no process of the
    # runtime (daemon, fork server, any role) may import it.
    workdir, markers = tmp_path / "work", tmp_path / "markers"
    workdir.mkdir()
    markers.mkdir()
    (workdir / "msgpack.py").write_text(POISONED_MODULE)
    console_script = str(Path(sys.executable).with_name("agentrt"))
    env = {**os.environ, "POISON_MARKER": str(markers)}
    command = [console_script, "up", "--run-dir", str(run_dir), "--peer-endpoint", "tcp://127.0.0.1:*"]
    if detach:
        started = subprocess.run(
            [*command, "--detach"], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stderr
    else:
        foreground = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    try:
        status = (
            json.loads(agentrt("status", "--json", "--run-dir", str(run_dir)).stdout or "{}")
            if detach
            else wait_until_running(run_dir, foreground)
        )
        assert all(role["state"] == "running" for role in status["roles"].values())
        assert list(markers.iterdir()) == []
    finally:
        stopped = subprocess.run(
            [console_script, "down", "--run-dir", str(run_dir)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if not detach and foreground.poll() is None:
            foreground.kill()
    assert stopped.returncode == 0, stopped.stderr


def wait_until_running(run_dir: Path, process: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            status = control.request(run_dir, "status", timeout_s=1.0)
            if all(role["state"] == "running" for role in status["roles"].values()):
                return status
        except DaemonError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the daemon did not run all roles (exit code {process.poll()})")


def test_a_log_that_cannot_be_written_costs_log_lines_not_the_service(run_dir):
    # The detached daemon logs into run_dir/daemon.log: here /dev/full, where every write fails (ENOSPC).
    (run_dir / "daemon.log").symlink_to("/dev/full")
    started = agentrt("up", "--detach", "--no-check", "--run-dir", str(run_dir), "--peer-endpoint", "tcp://127.0.0.1:*")
    assert started.returncode == 0, started.stderr
    try:
        endpoint = json.loads(started.stdout)["peer_endpoint"]
        env = gymnasium.make("CartPole-v1")
        with Peer(endpoint, env.observation_space, env.action_space, timeout_s=60) as peer:
            assert env.action_space.contains(int(peer.act(np.zeros(4, dtype=np.float32)).action))
        status = json.loads(agentrt("status", "--json", "--run-dir", str(run_dir)).stdout)
        assert all(role["restarts"] == 0 for role in status["roles"].values())
        assert status["roles"]["gateway"]["gauges"]["log_lines_dropped"] > 0  # it did log, and lost the lines
    finally:
        stopped = agentrt("down", "--run-dir", str(run_dir))
    assert stopped.returncode == 0, stopped.stderr
