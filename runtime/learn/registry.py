"""The student registry: every candidate student version (promoted or rejected by the gate), the
version it was trained on from (``parent``), its held-out scores, and which version serves.
SQLite in the run directory (``students.sqlite``), written by the distiller only; the decision
process and ``agentrt student list`` read it."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "students.sqlite"

PROMOTED, REJECTED, ROLLED_BACK = "promoted", "rejected", "rolled_back"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    parent INTEGER,
    created REAL NOT NULL,
    samples_seen INTEGER NOT NULL,
    train_steps INTEGER NOT NULL,
    heldout_agreement REAL,
    heldout_loss REAL,
    serving_agreement REAL,
    status TEXT NOT NULL,
    path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS serving (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    changed REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class VersionRecord:
    version: int
    parent: int | None
    created: float
    samples_seen: int
    train_steps: int
    heldout_agreement: float | None
    heldout_loss: float | None
    serving_agreement: float | None
    status: str
    path: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry:
    def __init__(self, run_dir: str | Path, readonly: bool = False) -> None:
        path = Path(run_dir) / FILE_NAME
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        else:
            self.db = sqlite3.connect(path, timeout=5)
            # WAL lets readers (decision, the CLI) read while the distiller writes.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def record(
        self,
        version: int,
        parent: int | None,
        samples_seen: int,
        train_steps: int,
        heldout_agreement: float | None,
        heldout_loss: float | None,
        serving_agreement: float | None,
        status: str,
        path: str,
    ) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    version,
                    parent,
                    time.time(),
                    samples_seen,
                    train_steps,
                    heldout_agreement,
                    heldout_loss,
                    serving_agreement,
                    status,
                    path,
                ),
            )
            if status == PROMOTED:
                self._serve(version, "promoted")

    def serve(self, version: int, reason: str) -> None:
        with self.db:
            self._serve(version, reason)

    def _serve(self, version: int, reason: str) -> None:
        self.db.execute(
            "INSERT INTO serving VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "version = excluded.version, changed = excluded.changed, reason = excluded.reason",
            (version, time.time(), reason),
        )

    def set_status(self, version: int, status: str) -> None:
        with self.db:
            self.db.execute("UPDATE versions SET status = ? WHERE version = ?", (status, version))

    def serving(self) -> int:
        """The version decision should serve; 0 when none was promoted yet."""
        row = self.db.execute("SELECT version FROM serving WHERE id = 1").fetchone()
        return row[0] if row else 0

    def get(self, version: int) -> VersionRecord | None:
        row = self.db.execute("SELECT * FROM versions WHERE version = ?", (version,)).fetchone()
        return VersionRecord(*row) if row else None

    def versions(self) -> list[VersionRecord]:
        return [VersionRecord(*row) for row in self.db.execute("SELECT * FROM versions ORDER BY version")]

    def latest_version(self) -> int:
        row = self.db.execute("SELECT MAX(version) FROM versions").fetchone()
        return row[0] or 0

    def rollback_target(self, to: int | None) -> VersionRecord:
        """The version a rollback should serve: ``to``, or the promoted version before the serving one."""
        current = self.serving()
        if to is None:
            rows = self.db.execute(
                "SELECT * FROM versions WHERE status = ? AND version < ? ORDER BY version DESC", (PROMOTED, current)
            )
            record = next((r for r in map(lambda row: VersionRecord(*row), rows) if Path(r.path).exists()), None)
            if record is None:
                raise ValueError(f"no promoted version with a checkpoint on disk before the serving version {current}")
            return record
        record = self.get(to)
        if record is None:
            raise ValueError(f"no student version {to} in the registry")
        if not Path(record.path).exists():
            raise ValueError(
                f"the checkpoint of version {to} was pruned ({record.path}); see distillation.keep_checkpoints"
            )
        return record


def serving_version(run_dir: str) -> int:
    """The version the registry says should serve (0 before the first promotion)."""
    if not (Path(run_dir) / FILE_NAME).exists():
        return 0
    store = Registry(run_dir, readonly=True)
    try:
        return store.serving()
    except sqlite3.OperationalError:  # the distiller has not created its tables yet
        return 0
    finally:
        store.close()
