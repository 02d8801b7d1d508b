"""Damage on disk with real processes: a truncated serving checkpoint, a damaged or deleted registry,
a moved run directory, leftover temp files, a distiller restart that keeps its replay buffer, and
retention that never prunes what serves. Each ends in service, never in a crash loop."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from runtime.learn import registry
from runtime.peer import Peer
from runtime.peer.gym import run_gym_peers
from runtime.testing import TestDaemon, agentrt, private_run_dir, start_daemon

FAST = {"AGENTRT_DISTILLATION_PUBLISH_INTERVAL_S": "0.3", "AGENTRT_DISTILLATION_STEPS_PER_PUBLISH": "50"}


@pytest.fixture(scope="module")
def trained():
    """A stopped daemon's run directory with at least two promoted versions, and its student list:
    trained once, damaged only in copies (``trained_run_dir``)."""
    daemon = start_daemon(env=FAST)
    try:
        for _ in range(10):  # a busy machine may need more episodes for the distiller to publish
            run_gym_peers(daemon.endpoint, "CartPole-v1", episodes=4, peers=2)
            listed = daemon.students()
            if sum(v["status"] == registry.PROMOTED for v in listed["versions"]) >= 2:
                break
        else:
            pytest.fail(f"fewer than 2 promoted versions: {listed}")
    finally:
        daemon.stop(remove_run_dir=False)
    listed = json.loads(daemon.cli("student", "list", "--json").stdout)  # the final word, after the stop
    yield daemon.run_dir, listed
    shutil.rmtree(daemon.run_dir, ignore_errors=True)


@pytest.fixture
def trained_run_dir(trained):
    """A copy of the trained run directory for one test to damage, and its student list."""
    source, listed = trained
    copy = private_run_dir()
    shutil.copytree(source, copy, dirs_exist_ok=True)
    yield copy, listed
    shutil.rmtree(copy, ignore_errors=True)


def restart(run_dir: Path, env: dict[str, str] | None = None) -> TestDaemon:
    return start_daemon(env={**FAST, **(env or {})}, run_dir=run_dir)


def acts(daemon: TestDaemon) -> None:
    env = gymnasium.make("CartPole-v1")
    with Peer(daemon.endpoint, env.observation_space, env.action_space) as peer:
        peer.act(np.zeros(4, dtype=np.float32))


def test_a_truncated_serving_checkpoint_is_quarantined_and_an_earlier_version_serves(trained_run_dir):
    run_dir, listed = trained_run_dir
    serving = listed["serving"]
    earlier = max(v["version"] for v in listed["versions"] if v["status"] == "promoted" and v["version"] < serving)
    path = run_dir / registry.checkpoint_path(serving)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    daemon = restart(run_dir)
    try:
        status = daemon.wait_until(
            lambda s: s["student_version"] == earlier and s["checkpoints_quarantined"] == 1,
            what="decision serving the earlier version, one file quarantined",
        )
        assert all(role["restarts"] == 0 for role in status["roles"].values())
        assert (run_dir / "checkpoints" / "quarantine" / path.name).exists() and not path.exists()
        after = daemon.students()
        assert after["serving"] == earlier
        assert {v["version"]: v["status"] for v in after["versions"]}[serving] == registry.QUARANTINED
        assert "checkpoints quarantined 1" in daemon.cli("status").stdout
        assert '"checkpoint_quarantined"' in daemon.log()
        acts(daemon)  # last: its label may let the distiller publish a newer version
    finally:
        daemon.stop()


@pytest.mark.parametrize("damage", ["header overwritten", "deleted"])
def test_a_damaged_or_deleted_registry_is_rebuilt_and_the_same_version_serves(damage, trained_run_dir):
    run_dir, listed = trained_run_dir
    path = run_dir / registry.FILE_NAME
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"\xff" * 100 + path.read_bytes()[100:])
        result = agentrt("student", "list", "--run-dir", str(run_dir))
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "is damaged" in result.stderr and "Traceback" not in result.stderr
    daemon = restart(run_dir)
    try:
        status = daemon.wait_until(
            lambda s: s["student_version"] == listed["serving"], what="the same version serving after the rebuild"
        )
        assert all(role["restarts"] == 0 for role in status["roles"].values())
        assert status["registry_rebuilt"] == int(damage != "deleted")
        rebuilt = daemon.students()
        assert rebuilt["serving"] == listed["serving"]
        assert [v["version"] for v in rebuilt["versions"]][: len(listed["versions"])] == [
            v["version"] for v in listed["versions"]
        ]
        acts(daemon)
    finally:
        daemon.stop()


def test_a_moved_run_directory_rolls_back_and_leftover_temp_files_are_removed(trained_run_dir):
    run_dir, listed = trained_run_dir
    moved = run_dir.with_name(run_dir.name + "-m")
    shutil.move(run_dir, moved)
    leftover = moved / "checkpoints" / ".student-v99.safetensors.k3j4.tmp"
    leftover.write_bytes(b"half a file")
    daemon = restart(moved)
    try:
        daemon.wait_until(lambda s: s["student_version"] == listed["serving"], what="serving from the moved directory")
        assert not leftover.exists()
        target = min(v["version"] for v in listed["versions"] if v["status"] == "promoted")
        result = daemon.cli("student", "rollback", "--to", str(target))
        assert result.returncode == 0, result.stderr
        daemon.wait_until(lambda s: s["student_version"] == target, what="decision serving the rolled-back version")
        assert all(not Path(v["path"]).is_absolute() for v in daemon.students()["versions"])
    finally:
        daemon.stop()


def lineage(versions: dict[int, dict], version: int) -> list[int]:
    """``version`` and its ancestors back to the last promoted one, as far as ``versions`` has them."""
    chain = [version]
    while (parent := versions[chain[-1]]["parent"]) is not None and parent in versions:
        chain.append(parent)
        if versions[parent]["status"] == registry.PROMOTED:
            break
    return chain


def test_the_distiller_restarts_with_its_replay_buffer_and_retention_keeps_what_serves():
    daemon = start_daemon(env={**FAST, "AGENTRT_DISTILLATION_KEEP_VERSIONS": "2"})

    def rows_and_files_agree(_status: dict) -> bool:
        files = {p.name for p in (daemon.run_dir / "checkpoints").glob("student-v*.safetensors")}
        return files == {Path(v["path"]).name for v in daemon.students()["versions"]}

    try:
        played = run_gym_peers(daemon.endpoint, "CartPole-v1", episodes=8, peers=2)
        daemon.wait_until(lambda s: s["candidate_version"] >= 4, what="four versions")
        daemon.wait_until_distiller_rests(played.steps)  # a last candidate is listed before it is pruned
        status = daemon.wait_until(rows_and_files_agree, what="rows and files pruned together")
        listed = daemon.students()
        versions = {v["version"]: v for v in listed["versions"]}
        chain = lineage(versions, listed["serving"])
        # Kept: the newest two and the serving version's ancestors the registry still had when it was
        # promoted (a rejected candidate pruned before a descendant of it was promoted is gone for good).
        assert listed["serving"] in versions
        assert set(versions) == set(sorted(versions)[-2:]) | set(chain)
        assert min(versions) > 1 or 1 in chain  # something was pruned, unless the lineage reaches back to 1

        os.kill(status["roles"]["distillation"]["pid"], signal.SIGKILL)
        restarted = daemon.wait_until(
            lambda s: s["roles"]["distillation"]["restarts"] == 1 and s["roles"]["distillation"]["state"] == "running",
            what="the distiller restarted",
        )
        # No peer has sent anything since: what the buffer holds came back from disk.
        assert restarted["distillation"]["buffer"] > 0
        assert '"learner_data_restored"' in daemon.log()
    finally:
        daemon.stop()
