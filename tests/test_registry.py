"""The student registry and its checkpoints as one transaction, without processes: crash points,
recovery, damage, a moved run directory, pruning, and the learner's data saved and restored."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.errors import CheckpointError, RegistryDamaged
from runtime.learn import registry
from runtime.learn.checkpoints import read_arrays, read_checkpoint, save_arrays
from runtime.learn.registry import PROMOTED, QUARANTINED, REJECTED, Registry, VersionRecord
from runtime.learn.replay import ReplayBuffer

STATE = {"weight": torch.arange(6, dtype=torch.float32)}


def record(version: int, parent: int | None, status: str) -> VersionRecord:
    path = registry.checkpoint_path(version)
    return VersionRecord(version, parent, time.time(), 10 * version, 5 * version, 0.9, 0.1, 0.8, status, path)


def write(run_dir: Path, lineage: list[tuple[int, int | None, str]]) -> None:
    store = Registry(run_dir)
    try:
        for version, parent, status in lineage:
            store.add(record(version, parent, status), STATE)
    finally:
        store.close()


def consistent(store: Registry) -> None:
    """Every row has its file (a quarantined one's in quarantine/), and every file its row."""
    rows = store.versions(include_writing=True)
    assert {r.version for r in rows if r.status != QUARANTINED} == set(store.store.versions())
    assert all(store.file(r).exists() for r in rows)


class Killed(BaseException):
    """Stands for SIGKILL at a crash point: nothing after it runs, no handler catches it."""


def test_a_kill_between_the_rename_and_finishing_the_row_leaves_no_orphan(tmp_path, monkeypatch):
    write(tmp_path, [(1, None, PROMOTED)])
    store = Registry(tmp_path)

    def killed(self, record):
        raise Killed

    monkeypatch.setattr(Registry, "_finish", killed)
    with pytest.raises(Killed):
        store.add(record(2, 1, PROMOTED), STATE)
    store.close()
    monkeypatch.undo()
    assert (tmp_path / registry.checkpoint_path(2)).exists()  # renamed in, row still `writing`
    assert [r.version for r in Registry(tmp_path, readonly=True).versions()] == [1]  # readers ignore it

    store = Registry(tmp_path)
    found = store.recover()
    assert found.discarded == [2] and store.serving() == 1
    consistent(store)
    store.add(record(2, 1, PROMOTED), STATE)  # the number was never announced: used again
    assert store.serving() == 2 and store.latest_version() == 2
    consistent(store)


def test_a_kill_before_the_rename_leaves_a_temp_file_that_recovery_removes(tmp_path, monkeypatch):
    write(tmp_path, [(1, None, PROMOTED)])
    store = Registry(tmp_path)

    def killed(path, data):  # the temp file is written and synced; the process dies before os.replace
        (Path(path).parent / f".{Path(path).name}.x1y2.tmp").write_bytes(data)
        raise Killed

    monkeypatch.setattr("runtime.learn.checkpoints.atomic_write", killed)
    with pytest.raises(Killed):
        store.add(record(2, 1, PROMOTED), STATE)
    store.close()
    monkeypatch.undo()

    store = Registry(tmp_path)
    found = store.recover()
    assert found.temp_files_removed == [".student-v2.safetensors.x1y2.tmp"] and found.discarded == [2]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    consistent(store)


def test_a_row_without_its_file_is_dropped_and_the_serving_version_falls_back(tmp_path):
    write(tmp_path, [(1, None, PROMOTED), (2, 1, REJECTED), (3, 2, PROMOTED)])
    (tmp_path / registry.checkpoint_path(3)).unlink()
    store = Registry(tmp_path)
    found = store.recover()
    assert found.dropped == [3] and found.serving == (3, 1)
    assert store.serving() == 1
    consistent(store)


@pytest.mark.parametrize("damage", ["header overwritten", "truncated", "deleted"])
def test_a_damaged_or_deleted_registry_is_rebuilt_from_the_checkpoints_metadata(tmp_path, damage):
    lineage = [(1, None, PROMOTED), (2, 1, REJECTED), (3, 2, PROMOTED), (4, 3, REJECTED)]
    write(tmp_path, lineage)
    before = [r.as_dict() for r in Registry(tmp_path, readonly=True).versions()]
    path = tmp_path / registry.FILE_NAME
    if damage == "header overwritten":
        path.write_bytes(b"\0" * 100 + path.read_bytes()[100:])
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    if damage != "deleted":
        with pytest.raises(RegistryDamaged, match="damaged"):
            Registry(tmp_path, readonly=True)
    assert registry.serving_order(tmp_path) == [3, 1]  # readers fall back on the files meanwhile

    store, moved = registry.open_writable(tmp_path)
    # A reader starting now finds a new, empty registry: until it is rebuilt, the files still decide.
    assert registry.serving_order(tmp_path) == [3, 1]
    found = store.recover()
    assert (moved is None) == (damage == "deleted")
    assert moved is None or moved.exists()
    assert found.adopted == [1, 2, 3, 4] and store.serving() == 3
    assert [r.as_dict() for r in store.versions()] == before  # every field, from the files' own metadata
    consistent(store)


def test_an_unreadable_checkpoint_is_quarantined_and_an_earlier_version_serves(tmp_path):
    write(tmp_path, [(1, None, PROMOTED), (2, 1, PROMOTED), (3, 2, PROMOTED)])
    path = tmp_path / registry.checkpoint_path(3)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(path)
    store = Registry(tmp_path)
    moved = store.quarantine(3)
    assert moved == tmp_path / "checkpoints" / "quarantine" / "student-v3.safetensors" and moved.exists()
    assert store.get(3).status == QUARANTINED and store.serving() == 2
    assert store.latest_version() == 3 and store.newest() == 2  # the number stays taken
    with pytest.raises(ValueError, match="quarantined"):
        store.rollback_target(3)
    store.recover()
    consistent(store)


def test_a_moved_run_directory_still_rolls_back(tmp_path):
    (tmp_path / "before").mkdir()
    write(tmp_path / "before", [(1, None, PROMOTED), (2, 1, PROMOTED)])
    shutil.move(tmp_path / "before", tmp_path / "after")
    store = Registry(tmp_path / "after")
    target = store.rollback_target(None)
    assert target.version == 1 and target.path == "checkpoints/student-v1.safetensors"
    assert read_checkpoint(store.file(target))[0]["weight"].tolist() == STATE["weight"].tolist()


def test_absolute_paths_of_older_registries_are_made_relative(tmp_path):
    write(tmp_path, [(1, None, PROMOTED)])
    db = sqlite3.connect(tmp_path / registry.FILE_NAME)
    with db:
        db.execute("UPDATE versions SET path = ?", ("/somewhere/else/checkpoints/student-v1.safetensors",))
    db.close()
    store = Registry(tmp_path)
    store.recover()
    assert store.get(1).path == "checkpoints/student-v1.safetensors" and store.rollback_target(1).version == 1


def test_pruning_deletes_rows_and_files_but_never_the_serving_version_or_its_ancestors(tmp_path):
    # 1 promoted; 2..4 rejected, each trained on from the one before; 5 promoted (parent 4), 6..9 rejected
    # with 9 newest. Rolling back to 5 later needs 5; 5's lineage back to the last promoted one is 5, 4, 3, 2, 1.
    lineage = [(1, None, PROMOTED), (2, 1, REJECTED), (3, 2, REJECTED), (4, 3, REJECTED), (5, 4, PROMOTED)]
    lineage += [(v, v - 1, REJECTED) for v in range(6, 10)]
    write(tmp_path, lineage)
    store = Registry(tmp_path)
    assert store.lineage(5) == [5, 4, 3, 2, 1]
    assert store.prune(2) == [6, 7]  # 8 and 9 are the newest two; 1..5 the serving lineage
    assert [r.version for r in store.versions()] == [1, 2, 3, 4, 5, 8, 9]
    consistent(store)

    store.add(record(10, 9, PROMOTED), STATE)  # 10 serves: its lineage is 10, 9, 8, 7(gone): no promoted ancestor left
    assert store.lineage(10) == [10, 9, 8]
    assert store.prune(2) == [1, 2, 3, 4, 5]
    assert [r.version for r in store.versions()] == [8, 9, 10] and store.serving() == 10
    consistent(store)


def test_pruning_stops_at_the_last_promoted_ancestor(tmp_path):
    write(tmp_path, [(1, None, PROMOTED), (2, 1, PROMOTED), (3, 2, REJECTED), (4, 3, PROMOTED), (5, 4, REJECTED)])
    store = Registry(tmp_path)
    assert store.lineage(4) == [4, 3, 2]
    assert store.prune(1) == [1]
    consistent(store)


def test_the_replay_buffer_round_trips_oldest_first_within_its_bounds(tmp_path):
    buffer = ReplayBuffer(max_samples=5, max_bytes=1 << 20)
    for start in range(0, 8, 2):  # 8 samples into 5 slots: 0..2 evicted, the ring wrapped
        rows = np.arange(start, start + 2, dtype=np.float32)[:, None]
        buffer.add(priority=rows[:, 0], features=rows, outputs=rows * 10)
    save_arrays(tmp_path / "data.safetensors", buffer.snapshot(), {})
    snapshot, _ = read_arrays(tmp_path / "data.safetensors")
    assert snapshot["features"][:, 0].tolist() == [3, 4, 5, 6, 7]

    same = ReplayBuffer(max_samples=5, max_bytes=1 << 20)
    same.restore(snapshot, buffer.added, buffer.evicted)
    assert same.snapshot()["features"].tolist() == buffer.snapshot()["features"].tolist()
    assert (same.added, same.evicted) == (8, 3)
    assert same.snapshot()["priorities"].tolist() == [3, 4, 5, 6, 7]

    smaller = ReplayBuffer(max_samples=3, max_bytes=1 << 20)  # bounded: the newest samples stay
    smaller.restore(snapshot, buffer.added, buffer.evicted)
    assert smaller.snapshot()["features"][:, 0].tolist() == [5, 6, 7] and len(smaller) == 3
