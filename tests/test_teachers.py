"""Teachers: the shipped CartPole checkpoint, scripted, ensemble, and a remote teacher served by
``agentrt teacher serve`` that a daemon uses over real ZeroMQ."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium
import numpy as np
import pytest

from runtime import config
from runtime.errors import ExitCode
from runtime.peer.gym import run_gym_peers
from runtime.plugin import pluginmanager
from runtime.testing import agentrt, start_daemon, stop_child

CARTPOLE = gymnasium.make("CartPole-v1")


def build(name: str, params: dict):
    plugins = pluginmanager.load(config.defaults()["plugins"])
    return plugins.build("teacher", name, params, CARTPOLE.observation_space, CARTPOLE.action_space)


def teacher_return(teacher, episodes: int = 5) -> float:
    returns = []
    for episode in range(episodes):
        obs, _ = CARTPOLE.reset(seed=500 + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = CARTPOLE.step(int(teacher.label(obs[None]).argmax()))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def test_shipped_cartpole_teacher_is_large_small_on_disk_and_good():
    from plugins.teachers import BUILTIN_CHECKPOINTS

    teacher = build("checkpoint", {"path": "builtin:cartpole"})
    assert BUILTIN_CHECKPOINTS["cartpole"].stat().st_size < 2 * 1024 * 1024
    assert sum(p.numel() for p in teacher.module.parameters()) > 50_000
    assert teacher_return(teacher) >= 490


def test_checkpoint_teacher_rejects_a_mismatched_space_by_name():
    plugins = pluginmanager.load(config.defaults()["plugins"])
    with pytest.raises(pluginmanager.PluginError, match="teachers.*checkpoint.*shape"):
        plugins.build("teacher", "checkpoint", {}, gymnasium.spaces.Box(-1, 1, (3,)), CARTPOLE.action_space)


def test_scripted_teacher_and_ensemble_of_checkpoint_and_scripted():
    scripted = build("scripted", {"callable": "plugins.teachers:cartpole_controller"})
    assert teacher_return(scripted, 2) == 500
    ensemble = build(
        "ensemble",
        {
            "members": [
                {"plugin": "checkpoint"},
                {"plugin": "scripted", "params": {"callable": "plugins.teachers:cartpole_controller"}},
            ],
            "weights": [3, 1],
        },
    )
    observations = np.random.default_rng(0).normal(0, 0.05, (16, 4)).astype(np.float32)
    checkpoint = build("checkpoint", {})
    # Each member at its calibrated temperature (the scripted controller has none): the mixture is
    # calibrated at T = 1.
    members = [checkpoint.label(observations) / checkpoint.temperature, scripted.label(observations)]
    shifted = [np.exp(m.astype(np.float64) - m.max(axis=1, keepdims=True)) for m in members]
    probabilities = [e / e.sum(axis=1, keepdims=True) for e in shifted]
    expected = np.log(0.75 * probabilities[0] + 0.25 * probabilities[1])
    np.testing.assert_allclose(ensemble.label(observations), expected, rtol=1e-4, atol=1e-5)
    assert ensemble.temperature == 1.0
    stacked = build("ensemble", {"members": [{"plugin": "checkpoint"}, {"plugin": "checkpoint"}], "combine": "stack"})
    assert stacked.label(observations).shape == (16, 4) and stacked.temperature is None
    with pytest.raises(
        pluginmanager.PluginError, match="teacher ensemble: parameter 'members' must be a list of at least 2"
    ):
        build("ensemble", {"members": [{"plugin": "checkpoint"}]})


def test_daemon_learns_from_a_remote_teacher_served_elsewhere(run_dir):
    endpoint = f"ipc://{run_dir}/teacher"  # a path of our own: no port another process could take first
    server = subprocess.Popen(
        [sys.executable, "-m", "runtime", "teacher", "serve", "--endpoint", endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = None
    try:
        remote = build("remote", {"endpoint": endpoint, "timeout_ms": 30_000})
        local = build("checkpoint", {})
        observations = np.random.default_rng(1).normal(0, 0.1, (8, 4)).astype(np.float32)
        np.testing.assert_allclose(remote.label(observations), local.label(observations), rtol=1e-5)
        running = start_daemon(f'[teacher]\nplugin = "remote"\n[teacher.params]\nendpoint = "{endpoint}"\n')
        summary = run_gym_peers(running.endpoint, "CartPole-v1", episodes=4, peers=2)
        assert summary.by_teacher > 0
        status = running.wait_until(lambda s: s["student_version"] >= 1, what="a student taught remotely")
        assert status["errors"]["total"] == 0
    finally:
        if running is not None:
            running.stop()
        server.send_signal(signal.SIGTERM)
        try:
            output = server.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            server.kill()  # by pid, and the test fails below
            output = server.communicate()[0]
    assert server.returncode == 0, output
    assert "teacher_serving" in output


def test_teacher_serve_beyond_loopback_without_curve_is_refused_unless_insecure(tmp_path):
    """`teacher serve --endpoint` has no CURVE: like the peer endpoint, a wildcard bind is refused
    unless --insecure accepts it, and then warned about in the log."""
    refused = agentrt("teacher", "serve", "--run-dir", str(tmp_path / "run"), "--endpoint", "tcp://0.0.0.0:*")
    assert refused.returncode == ExitCode.CONFIG, refused.stderr
    assert "the teacher endpoint tcp://0.0.0.0:* is reachable from other hosts" in refused.stderr
    assert "--insecure" in refused.stderr and "teacher_serving" not in refused.stderr
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "runtime", "teacher", "serve", "--run-dir", str(tmp_path / "run")]
            + ["--endpoint", "tcp://0.0.0.0:*", "--insecure"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env={**os.environ, "AGENTRT_DAEMON_LOG_FORMAT": "json"},
        )
    try:
        serving = None
        deadline = time.monotonic() + 60
        while serving is None and server.poll() is None and time.monotonic() < deadline:
            events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            serving = next((event for event in events if event["event"] == "teacher_serving"), None)
            time.sleep(0.1)
        assert serving is not None, log.read_text()
        warned = [event for event in events if event["event"] == "teacher_endpoint_insecure"]
        assert warned and warned[0]["level"] == "warning" and warned[0]["endpoint"] == "tcp://0.0.0.0:*"
        port = serving["endpoint"].rpartition(":")[2]
        remote = build("remote", {"endpoint": f"tcp://127.0.0.1:{port}", "timeout_ms": 30_000})
        observations = np.random.default_rng(2).normal(0, 0.1, (4, 4)).astype(np.float32)
        np.testing.assert_allclose(remote.label(observations), build("checkpoint", {}).label(observations), rtol=1e-5)
    finally:
        stop_child(server)
    assert server.returncode == 0, log.read_text()


@pytest.mark.parametrize("cache_size", [0, 1, 100])
def test_teacher_role_answers_every_batch_whatever_the_cache_size(cache_size):
    from runtime.testing import teacher_role
    from runtime.wire import protocol
    from runtime.wire.protocol import ErrorCode, ProtocolError

    with teacher_role(cache_size=cache_size) as role:
        batch = np.random.default_rng(3).normal(0, 0.1, (5, 4)).astype(np.float32)
        batch[3] = batch[1]  # a repeated question inside one batch
        for _ in range(2):
            reply = protocol.decode(
                role.answer([protocol.decode(protocol.encode("teach", request_id=1, obs=batch))])[0]
            )
            np.testing.assert_allclose(reply["outputs"], build("checkpoint", {}).label(batch), rtol=1e-5)
        # 4 distinct questions per batch; a cache of one remembers only the last of them
        assert role.counters["labels"] == {0: 8, 1: 7, 100: 4}[cache_size]
        for bad in (np.zeros((0, 4), np.float32), np.zeros(4, np.float32), np.zeros((2, 3), np.float32)):
            with pytest.raises(ProtocolError) as refused:
                role.check_batch(bad)
            assert refused.value.code == ErrorCode.WRONG_SHAPE


def test_answer_cache_holds_no_more_bytes_than_its_bound():

    from runtime.roles.teacher import AnswerCache

    rows = np.random.default_rng(0).normal(size=(50, 64)).astype(np.float32)
    cache = AnswerCache(size=1000, decimals=-1, max_bytes=8 << 10)
    for row in rows:
        cache.put(cache.key(row), np.zeros(2, np.float32), None)
    assert 0 < len(cache.entries) < 50 and cache.held_bytes <= 8 << 10  # the bytes bound, not the 1000 entries
    assert cache.get(cache.key(rows[-1]), False) is not None and cache.get(cache.key(rows[0]), False) is None
    held = cache.nbytes
    cache.put(cache.key(rows[-1]), np.zeros(2, np.float32), None)  # replacing an entry does not count it twice
    assert cache.nbytes == held
    too_big = AnswerCache(size=10, decimals=-1, max_bytes=100)
    too_big.put(too_big.key(rows[0]), np.zeros(2, np.float32), None)
    assert not too_big.entries and too_big.nbytes == 0


def test_answer_cache_bound_is_what_the_process_pays_after_much_churn():
    import tracemalloc

    from runtime.roles.teacher import AnswerCache

    rng = np.random.default_rng(1)
    bound = 2 << 20
    tracemalloc.start()
    try:
        cache = AnswerCache(size=10**9, decimals=-1, max_bytes=bound)
        for _ in range(100):  # CartPole-sized answers, ten times what the bound holds
            observations = rng.normal(size=(256, 4)).astype(np.float32)
            for row in observations:
                cache.put(cache.key(row), rng.normal(size=2).astype(np.float32), None)
        traced = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert cache.held_bytes <= bound
    assert bound * 0.8 <= traced <= bound * 1.05, (traced, cache.held_bytes)


def test_teacher_role_labels_requests_that_arrive_together_in_one_call():
    import zmq

    from runtime.testing import teacher_role
    from runtime.wire import protocol

    context = zmq.Context()
    # batch_wait_ms: both requests are in one batch however busy the machine.
    try:
        with teacher_role(batch_wait_ms=5000) as role:
            endpoint = role.server.getsockopt_string(zmq.LAST_ENDPOINT)
            clients = [context.socket(zmq.DEALER) for _ in range(2)]
            batches = [
                np.random.default_rng(seed).normal(0, 0.1, (n, 4)).astype(np.float32) for seed, n in ((1, 3), (2, 5))
            ]
            for request_id, (client, batch) in enumerate(zip(clients, batches, strict=True), start=1):
                client.connect(endpoint)
                client.send(protocol.encode("teach", request_id=request_id, obs=batch))
            assert role.server.poll(30_000)
            role.on_request(role.server)
            assert role.counters["batches"] == 1 and role.counters["requests"] == 2 and role.counters["labels"] == 8
            for request_id, (client, batch) in enumerate(zip(clients, batches, strict=True), start=1):
                assert client.poll(30_000)
                reply = protocol.decode(client.recv())
                assert reply["request_id"] == request_id
                np.testing.assert_allclose(reply["outputs"], build("checkpoint", {}).label(batch), rtol=1e-5)
    finally:
        context.destroy(linger=0)  # also when an assertion failed with the clients still open


POISON = np.array([0.0, 3e38, 0.0, -3e38], dtype=np.float32)  # inside CartPole's space, finite, too big


class CountingTeacher:
    """Wraps a teacher, counting calls; raises for any batch holding an observation over ``refuse_over``."""

    def __init__(self, teacher, refuse_over: float = np.inf) -> None:
        self.teacher = teacher
        self.refuse_over = refuse_over
        self.calls = 0

    def label(self, observations):
        self.calls += 1
        if np.abs(observations).max() > self.refuse_over:
            raise ValueError("an observation out of the range this teacher takes")
        return self.teacher.label(observations)


@pytest.mark.parametrize("refuse_over", [np.inf, 100.0], ids=["not-finite-output", "teacher-raises"])
def test_one_poison_observation_costs_the_rest_of_its_batch_nothing(refuse_over):
    from runtime.testing import teacher_role
    from runtime.wire import protocol

    with teacher_role() as role:
        role.teacher = counting = CountingTeacher(role.teacher, refuse_over)
        batch = np.random.default_rng(4).normal(0, 0.1, (8, 4)).astype(np.float32)
        batch[5] = POISON
        (data,) = role.answer([protocol.decode(protocol.encode("teach", request_id=7, obs=batch))])
        reply = protocol.decode(data)
        good = np.arange(8) != 5
        assert np.isnan(reply["outputs"][5]).all()
        np.testing.assert_allclose(reply["outputs"][good], build("checkpoint", {}).label(batch[good]), rtol=1e-5)
        assert role.counters["labels"] == 7 and role.counters["labels_failed"] == 1
        assert role.counters["errors.PLUGIN_FAILED"] >= 1  # named and counted, as any plugin failure
        # A failed observation is asked again next time, never answered from the cache.
        assert role.cache.get(role.cache.key(POISON), False) is None
        # Not finite: one call; raising: the whole batch, then halves down to the poison (2 per level).
        assert counting.calls == {np.inf: 1, 100.0: 1 + 2 * 3}[refuse_over]


class ReshapingTeacher:
    """Wraps a teacher; its ``n``th answer has ``keep[n]`` columns (the last entry from then on;
    None: the teacher's own), repeating the teacher's to make more."""

    def __init__(self, teacher, keep: list) -> None:
        self.teacher, self.keep, self.calls = teacher, keep, 0

    def label(self, observations):
        outputs = self.teacher.label(observations)
        keep = self.keep[min(self.calls, len(self.keep) - 1)]
        self.calls += 1
        return outputs if keep is None else np.tile(outputs, 2)[:, :keep]


@pytest.mark.parametrize("keep", [[1], [3], [None, 4]], ids=["too-few", "not-a-multiple", "width-changes"])
def test_a_teacher_answer_of_the_wrong_width_is_a_counted_plugin_failure_not_a_crash(keep):
    """CartPole has two actions: one column, or three, cannot stand for them; four (a stack of
    two) could, but not after answers of two, whose rows go out in the same replies."""
    from runtime.testing import teacher_role
    from runtime.wire import protocol

    with teacher_role(cache_size=0) as role:
        role.teacher = ReshapingTeacher(role.teacher, keep)
        batches = [np.random.default_rng(seed).normal(0, 0.1, (4, 4)).astype(np.float32) for seed in range(3)]
        replies = [
            protocol.decode(role.answer([protocol.decode(protocol.encode("teach", request_id=i, obs=batch))])[0])
            for i, batch in enumerate(batches)
        ]
        assert all(reply["outputs"].shape == (4, 2) for reply in replies)
        failed = [bool(np.isnan(reply["outputs"]).all()) for reply in replies]
        assert failed == ([True] * 3 if keep[0] is not None else [False, True, True])
        assert role.counters["errors.PLUGIN_FAILED"] > 0


def test_a_teacher_that_fails_every_call_is_asked_three_times_per_batch_not_once_per_observation():
    from runtime.testing import teacher_role
    from runtime.wire import protocol

    with teacher_role() as role:
        role.teacher = counting = CountingTeacher(role.teacher, refuse_over=-1.0)
        batch = np.random.default_rng(5).normal(0, 0.1, (64, 4)).astype(np.float32)
        (data,) = role.answer([protocol.decode(protocol.encode("teach", request_id=1, obs=batch))])
        reply = protocol.decode(data)
        assert reply["outputs"].shape == (64, 2) and np.isnan(reply["outputs"]).all()
        assert counting.calls == 3 and role.counters["labels_failed"] == 64
