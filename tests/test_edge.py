"""The edge mode with real processes: an edge peer that cannot import torch gets the serving student,
acts with it locally, sends the observations its query policy picks, is pushed each promoted
version, and learns CartPole from the runtime's teaching; the protocol's refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import gymnasium
import numpy as np
import pytest

from runtime.peer import Peer
from runtime.testing import start_daemon
from runtime.wire import protocol
from runtime.wire.protocol import ErrorCode

# The suite's bar for the student acting alone (mean over EVAL_EPISODES): far above a random
# policy's ~20 and reachable on a loaded machine; >= 475 is measured outside the suite (README).
BAR = 300
EVAL_EPISODES = 10
LEARN_S = 300

# Run in a child process whose `import torch` fails: the edge SDK must never need it.
NO_TORCH_EDGE = textwrap.dedent(
    """
    import collections, json, sys, time
    sys.modules["torch"] = None  # any import of torch now raises ImportError
    import gymnasium
    import numpy as np
    from runtime.peer.edge import EdgePeer, EdgeQuery
    from runtime.peer.gym import run_edge_gym_peers

    endpoint, eval_episodes, learn_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    recent = collections.deque(maxlen=eval_episodes)
    deadline = time.monotonic() + learn_s
    learnt = run_edge_gym_peers(
        endpoint, "CartPole-v1", 1_000_000, peers=2, query=EdgeQuery(), step_hz=500,
        on_episode=lambda episode: recent.append(episode.episode_return),
        should_stop=lambda: time.monotonic() > deadline or (len(recent) == recent.maxlen and np.mean(recent) >= 475),
    )
    alone = run_edge_gym_peers(endpoint, "CartPole-v1", eval_episodes, peers=1, query=None, seed=10_000)

    # The serving version in both formats, run on the same observations (numpy, onnxruntime).
    env = gymnasium.make("CartPole-v1")
    observations, (obs, _) = [], env.reset(seed=7)
    while len(observations) < 200:  # what a robot sees: observations from episodes, not the unbounded space
        observations.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    observations = np.stack(observations)
    formats = ("safetensors+json", "onnx")
    peers = [EdgePeer(endpoint, env.observation_space, env.action_space, format=f) for f in formats]
    for peer in peers:
        peer.connect(wait_s=60)
    outputs = [peer.student.outputs(observations) for peer in peers]
    versions = [peer.version for peer in peers]
    for peer in peers:
        peer.close()
    print(json.dumps({
        "learnt": learnt.as_dict(),
        "alone": alone.as_dict(),
        "promotion_to_edge_s": [s for stats in learnt.edge for s in stats.promotion_to_edge_s],
        "labels_sent": [stats.labels_sent for stats in learnt.edge],
        "formats_versions": versions,
        "formats_agree": bool(np.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)),
        "torch_modules": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
        "torch_entry": repr(sys.modules.get("torch", "absent")),
    }))
    """
)


@pytest.mark.timeout(LEARN_S + 300)  # the learning deadline is the test's, not the suite's 180 s default
def test_an_edge_peer_without_torch_learns_cartpole_from_the_runtime(daemon):
    child = subprocess.run(
        [sys.executable, "-c", NO_TORCH_EDGE, daemon.endpoint, str(EVAL_EPISODES), str(LEARN_S)],
        capture_output=True,
        text=True,
        timeout=LEARN_S + 240,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    # torch was never imported: the entry stayed the blocker, no torch.* module loaded.
    assert result["torch_modules"] == ["torch"] and result["torch_entry"] == "None"

    learnt, alone = result["learnt"], result["alone"]
    assert learnt["decided_by_teacher"] == 0 and learnt["edge"]["labels_sent"] > 0
    assert len(learnt["edge"]["versions"]) >= 2, "no promoted version reached the edge peers"
    assert result["promotion_to_edge_s"], "no promotion was pushed while the peers acted"
    assert alone["episodes"] == EVAL_EPISODES and alone["mean_return"] >= BAR, alone
    assert "edge" in alone and alone["edge"]["labels_sent"] == 0  # the student alone: no labels asked

    assert result["formats_versions"][0] == result["formats_versions"][1] >= 1
    assert result["formats_agree"]

    # Every label the peers sent went through the pipeline: counted by the gateway, taught, learnt from.
    sent = sum(result["labels_sent"])
    status = daemon.wait_until(
        lambda s: s["roles"]["gateway"]["counters"].get("edge_labels", 0) >= sent, what="labels counted"
    )
    assert status["roles"]["gateway"]["counters"]["students_pushed"] >= 1
    assert status["distillation"]["train_steps"] > 0


@pytest.fixture(scope="module")
def edge_daemon():
    running = start_daemon()
    yield running
    running.stop()


def cartpole_spaces() -> tuple[object, object]:
    env = gymnasium.make("CartPole-v1")
    return env.observation_space, env.action_space


def session(endpoint: str) -> Peer:
    peer = Peer(endpoint, *cartpole_spaces())
    peer.connect(wait_s=60)
    return peer


def reply_to(peer: Peer, message: bytes) -> protocol.Message:
    peer._connected.send(message)
    reply = peer._receive(30)
    assert reply is not None, "no reply"
    return reply


def test_the_serving_student_arrives_in_the_documented_layout_and_acts_as_decision_would(edge_daemon):
    peer = session(edge_daemon.endpoint)
    try:
        student = reply_to(peer, protocol.encode("student_request", format="safetensors+json"))
        assert student.kind == "student" and student["format"] == "safetensors+json"
        metadata, tensors = student["metadata"], student["tensors"]
        assert (student["version"], metadata["layers"], metadata["activation"]) == (0, 2, "relu")
        assert sorted(tensors) == ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight"]
        weights = {name: protocol.decode_array(array) for name, array in tensors.items()}
        assert weights["layers.0.weight"].shape == (32, 4) and weights["layers.1.weight"].shape == (2, 32)
        # The untrained student decides here too: the same actions, by the documented forward pass.
        for obs in np.random.default_rng(0).uniform(-0.2, 0.2, size=(20, 4)).astype(np.float32):
            hidden = np.maximum(weights["layers.0.weight"] @ obs + weights["layers.0.bias"], 0)
            local = int(np.argmax(weights["layers.1.weight"] @ hidden + weights["layers.1.bias"]))
            answer = peer.act(obs, policy="student")
            assert (int(answer.action), answer.student_version) == (local, 0)
    finally:
        peer.close()


def test_a_label_is_taught_and_answered_under_its_seq(edge_daemon):
    peer = session(edge_daemon.endpoint)
    try:
        obs = np.zeros(4, dtype=np.float32)
        answer = reply_to(peer, protocol.encode("label", seq=7, obs=obs, episode_start=True))
        assert (answer.kind, answer["seq"], answer["decided_by"]) == ("action", 7, "teacher")
        # A transition (policy auto): the runtime's query policy decides; answered all the same.
        answer = reply_to(peer, protocol.encode("label", seq=8, obs=obs, policy="auto"))
        assert (answer.kind, answer["seq"]) == ("action", 8)
    finally:
        peer.close()


@pytest.mark.parametrize(
    "message, code, text",
    [
        (protocol.encode("student_request", format="tflite"), ErrorCode.INVALID_FIELD, "not one of"),
        (
            protocol.encode("label", seq=3, obs=np.zeros(4, dtype=np.float32), policy="student"),
            ErrorCode.INVALID_FIELD,
            "not one of auto, teacher",
        ),
        (protocol.encode("label", seq=4, obs=np.zeros(3, dtype=np.float32)), ErrorCode.WRONG_SHAPE, "shape"),
    ],
    ids=["unknown-format", "label-policy", "label-shape"],
)
def test_bad_edge_requests_are_refused_with_their_code(edge_daemon, message, code, text):
    peer = session(edge_daemon.endpoint)
    try:
        error = reply_to(peer, message)
        assert (error.kind, error["code"]) == ("error", code) and text in error["message"], error.fields
    finally:
        peer.close()


def test_edge_requests_need_a_session(edge_daemon):
    peer = Peer(edge_daemon.endpoint, *cartpole_spaces())
    try:
        peer._new_socket()
        error = reply_to(peer, protocol.encode("student_request", format="onnx"))
        assert (error.kind, error["code"]) == ("error", ErrorCode.NOT_ATTACHED)
    finally:
        peer.close()


def test_attach_gym_edge_acts_locally_and_sends_labels(edge_daemon):
    result = edge_daemon.cli(
        "attach", "gym", "CartPole-v1", "--edge", "--episodes", "4", "--endpoint", edge_daemon.endpoint, "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 4 and summary["decided_by_teacher"] == 0
    assert summary["decided_by_student"] == summary["steps"] > 0
    assert summary["edge"]["labels_sent"] > 0 and summary["edge"]["decision_us_p50"] > 0
    refused = edge_daemon.cli("attach", "gym", "CartPole-v1", "--edge", "--policy", "teacher")
    assert refused.returncode == 2 and "--edge" in refused.stderr
