"""``agentrt student compress``: pruned and int8 students become registry versions through the
promotion gate, take fewer bytes, and a real daemon serves them."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import torch

from runtime.learn.checkpoints import read_checkpoint, save_safetensors
from runtime.learn.fastpath import NumpyForward
from runtime.learn.nets import MLP, build_compressed, compressed_metadata, prune_mlp, quantize_int8
from runtime.peer import Peer
from runtime.peer.gym import run_gym_peers
from runtime.testing import start_daemon

FAST = {"AGENTRT_DISTILLATION_PUBLISH_INTERVAL_S": "0.3", "AGENTRT_DISTILLATION_STEPS_PER_PUBLISH": "50"}


def test_a_pruned_int8_mlp_stays_close_to_its_source_and_loads_back_from_safetensors(tmp_path):
    torch.manual_seed(0)
    source = MLP((4,), 2, [64, 64])
    inputs = torch.randn(256, 4)
    pruned = prune_mlp(source, 0.5)
    assert pruned.hidden == [32, 32]
    how = {"int8": True, "prune": 0.5}
    metadata = compressed_metadata(pruned, how)
    compressed = quantize_int8(pruned)
    quantized_error = (compressed(inputs) - prune_mlp(source, 0.5)(inputs)).abs().max().item()
    assert quantized_error < 0.02  # int8 with one scale per unit: within a rounding step per weight
    path = tmp_path / "student.safetensors"
    save_safetensors(compressed.state_dict(), path, metadata)
    tensors, read_back = read_checkpoint(path)
    assert tensors["body.1.weight"].dtype == torch.int8
    rebuilt = build_compressed(read_back)
    rebuilt.load_state_dict(tensors)
    assert torch.equal(rebuilt(inputs), compressed(inputs))
    fast = NumpyForward.compile(rebuilt, inputs.numpy())  # decision's numpy forward serves it too
    assert fast is not None and np.allclose(fast(inputs.numpy()), compressed(inputs).detach().numpy(), atol=1e-5)
    float_bytes = sum(t.numel() * t.element_size() for t in source.state_dict().values())
    assert sum(t.numel() * t.element_size() for t in tensors.values()) * 8 < float_bytes


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_pruning_a_unit_that_is_all_bias_keeps_the_outputs(activation):
    """Its output does not depend on the input, so it is the least important unit, and what it adds
    (act(bias) times its outgoing weights) moves into the next layer's bias."""
    torch.manual_seed(0)
    source = MLP((4,), 2, [3], activation)
    with torch.no_grad():
        source.body[1].weight[2] = 0.0
        source.body[1].bias[2] = 5.0 if activation == "relu" else 1.5
        source.head.weight[:, 2] = torch.tensor([1.0, -2.0])
    pruned = prune_mlp(source, 1 / 3)
    assert pruned.hidden == [2]
    inputs = torch.randn(64, 4)
    assert torch.allclose(pruned(inputs), source(inputs), atol=1e-5)


def test_compressed_versions_pass_or_fail_the_gate_and_the_daemon_serves_one():
    running = start_daemon(env=FAST)
    try:
        run_gym_peers(running.endpoint, "CartPole-v1", episodes=8, peers=2)
        running.wait_until(lambda s: s["student_version"] >= 3, what="a trained student")
        refused = running.cli("student", "compress", "--int8", timeout=600)
        assert refused.returncode == 1 and "agentrt down" in refused.stderr
    finally:
        running.stop(remove_run_dir=False)
    float_version = running.students()["serving"]

    # Half the units, int8 and fine-tuned: promoted or rejected as its held-out agreement dictates.
    result = running.cli(
        "student", "compress", "--int8", "--prune", "0.5", "--finetune-steps", "300", "--json", timeout=600
    )
    kept = json.loads(result.stdout)
    assert kept["parent"] == float_version and kept["serving_version"] == float_version
    assert kept["version"] > float_version
    assert kept["promoted"] == (kept["heldout_agreement"] >= kept["serving_agreement"] - kept["promotion_margin"])
    assert result.returncode == (0 if kept["promoted"] else 1), result.stderr
    assert (
        kept["compression"]["hidden"] == [16]
        and kept["compressed"]["weight_bytes"] * 3 < kept["original"]["weight_bytes"]
    )
    assert kept["compressed"]["bytes"] < kept["original"]["bytes"]
    assert kept["compressed"]["params"] < kept["original"]["params"]
    assert kept["compressed"]["agreement"] == kept["heldout_agreement"] and 0 < kept["original"]["agreement"] <= 1

    # Pruned to one unit and not fine-tuned, it no longer agrees with the teacher: the gate refuses it.
    result = running.cli(
        "student",
        "compress",
        "--prune",
        "0.97",
        "--finetune-steps",
        "0",
        "--version",
        str(float_version),
        "--json",
        timeout=600,
    )
    dropped = json.loads(result.stdout)
    assert result.returncode == 1 and not dropped["promoted"], dropped
    assert dropped["parent"] == float_version and dropped["compression"]["hidden"] == [1]
    assert dropped["heldout_agreement"] < dropped["serving_agreement"] - dropped["promotion_margin"]
    registry = running.students()
    versions = {v["version"]: v for v in registry["versions"]}
    assert (
        versions[dropped["version"]]["status"] == "rejected" and versions[dropped["version"]]["parent"] == float_version
    )
    assert registry["serving"] == (kept["version"] if kept["promoted"] else float_version)

    # Restarted on that run directory, decision serves the compressed version (a rollback to it if
    # the gate kept the float one) and peers get decisions from it.
    restarted = start_daemon(run_dir=running.run_dir)
    try:
        if not kept["promoted"]:
            rollback = restarted.cli("student", "rollback", "--to", str(kept["version"]))
            assert rollback.returncode == 0, rollback.stderr
        restarted.wait_until(lambda s: s["student_version"] == kept["version"], what="the compressed version serving")
        env = gymnasium.make("CartPole-v1")
        obs, _ = env.reset(seed=3)
        answers = []
        with Peer(restarted.endpoint, env.observation_space, env.action_space) as peer:
            for _ in range(20):
                answers.append(peer.act(obs))
                obs, _, terminated, truncated, _ = env.step(int(answers[-1].action))
                if terminated or truncated:
                    obs, _ = env.reset()
        assert answers[0].student_version == kept["version"]
        assert any(a.decided_by == "student" and a.student_version == kept["version"] for a in answers)
        status = restarted.status()
        assert status["roles"]["distillation"]["state"] == "running"
        assert status["roles"]["decision"]["counters"].get("weights_rejected", 0) == 0
    finally:
        restarted.stop()
