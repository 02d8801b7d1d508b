"""The student registry: every candidate student version (promoted or rejected by the gate), the
version it was trained on from (``parent``), its held-out scores, and which version serves.
SQLite in the run directory (``students.sqlite``), written by the distiller only; the decision
process, the gateway and ``agentrt student list`` read it.

**Rows and checkpoint files are one transaction.** ``Registry.add`` writes a version in three
steps: (1) insert its row with status ``writing``; (2) write the checkpoint (temp file, fsync,
rename); (3) in one SQLite transaction set the row's final status and, if promoted, the serving
version. Readers ignore ``writing`` rows, and a row that is not ``writing`` always has its file.
A crash anywhere leaves something ``Registry.recover`` (run by the distiller when it starts) puts
right: a ``writing`` row is removed with its file, if the rename happened (the version was never
announced, so its number is used again); leftover temp files are deleted; a row whose file is gone
is dropped (or marked ``quarantined`` when its file was moved aside); a file without a row is
recorded again from its own metadata (every checkpoint carries its row, see ``checkpoint_metadata``).
Pruning deletes rows first, then files, so a crash in between leaves files that are recorded again.

Paths in rows are relative to the run directory, so a moved run directory keeps working.

**Damage.** A registry SQLite cannot read raises ``RegistryDamaged``; ``open_writable`` (the
distiller) moves it aside (``students.sqlite.damaged-<time>``, with its WAL) and starts an empty
one, which ``recover`` fills from the checkpoints. A registry that was deleted is rebuilt the same
way. What only the old registry knew is lost: which version a person rolled back from (the
rebuilt one serves the newest promoted version).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import CheckpointError, RegistryDamaged
from runtime.learn.checkpoints import CheckpointStore, read_metadata

if TYPE_CHECKING:
    import torch

FILE_NAME = "students.sqlite"
CHECKPOINTS = "checkpoints"

PROMOTED, REJECTED, ROLLED_BACK = "promoted", "rejected", "rolled_back"
#: A row whose checkpoint is being written (step 1 of ``Registry.add``); readers ignore it.
WRITING = "writing"
#: A version whose file could not be read; the file lies in ``checkpoints/quarantine/``.
QUARANTINED = "quarantined"

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

#: The checkpoint metadata key that holds the version's row (JSON), for rebuilding the registry.
RECORD_KEY = "agentrt.record"


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
    path: str  # relative to the run directory

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_path(version: int) -> str:
    """Where a version's checkpoint lies, relative to the run directory (what rows store)."""
    return f"{CHECKPOINTS}/student-v{version}.safetensors"


def checkpoint_metadata(record: VersionRecord) -> dict[str, str]:
    """The row a checkpoint carries in its metadata, so that the registry can be rebuilt from files."""
    return {RECORD_KEY: json.dumps({k: v for k, v in record.as_dict().items() if k != "path"})}


def record_from_metadata(version: int, metadata: dict[str, str]) -> VersionRecord:
    """The row a checkpoint carries; a file written before checkpoints carried one is recorded as
    ``rejected`` (no verdict on record, so never served without the gate)."""
    defaults = VersionRecord(version, None, time.time(), 0, 0, None, None, None, REJECTED, checkpoint_path(version))
    try:
        stored = json.loads(metadata[RECORD_KEY])
    except (KeyError, ValueError):
        return defaults
    known = {f.name for f in fields(VersionRecord)} - {"version", "path"}
    return replace(defaults, **{k: v for k, v in stored.items() if k in known})


@dataclass
class Recovery:
    """What ``Registry.recover`` (and ``open_writable``) found and put right, for the distiller's log."""

    damaged_moved_to: Path | None = None  # the damaged registry, moved aside
    temp_files_removed: list[str] = field(default_factory=list)
    discarded: list[int] = field(default_factory=list)  # ``writing`` rows: row and file removed
    dropped: list[int] = field(default_factory=list)  # rows whose file was gone
    adopted: list[int] = field(default_factory=list)  # files without a row, recorded from their metadata
    quarantined: dict[int, str] = field(default_factory=dict)  # files without a row that could not be read
    serving: tuple[int, int] | None = None  # (before, after) when the serving version had to change


class Registry:
    def __init__(self, run_dir: str | Path, readonly: bool = False) -> None:
        """Open the registry; RegistryDamaged if SQLite cannot read it."""
        self.run_dir = Path(run_dir)
        self.store = CheckpointStore(self.run_dir / CHECKPOINTS)
        self.path = self.run_dir / FILE_NAME
        if readonly:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        else:
            self.db = sqlite3.connect(self.path, timeout=5)
        try:
            # A header overwritten fails the first statement; a truncated file fails the check.
            result = self.db.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {result and result[0]}")
            if not readonly:
                # WAL lets readers (decision, the CLI) read while the distiller writes.
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise  # busy, unwritable, a failing disk: not a damaged file, so nothing to rebuild
            raise RegistryDamaged(
                f"the student registry {self.path} is damaged ({exc}); "
                "the distiller moves it aside and rebuilds it from the checkpoints when it starts"
            ) from None

    def close(self) -> None:
        self.db.close()

    def file(self, record: VersionRecord) -> Path:
        """The checkpoint file of a row (rows written before paths were relative hold absolute ones)."""
        return self.run_dir / record.path

    # --- writing a version -----------------------------------------------------------------------
    def add(
        self, record: VersionRecord, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
    ) -> Path:
        """Record ``record`` and write its checkpoint, with ``metadata`` (a compressed student's
        shape), as one transaction (see the module docstring). Safe to call again for a version
        whose write failed (a full disk): it starts over."""
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                astuple_with(record, status=WRITING),
            )
        path = self.store.save(record.version, state, {**(metadata or {}), **checkpoint_metadata(record)})
        self._finish(record)
        return path

    def _finish(self, record: VersionRecord) -> None:
        with self.db:
            self.db.execute("UPDATE versions SET status = ? WHERE version = ?", (record.status, record.version))
            if record.status == PROMOTED:
                self._serve(record.version, "promoted")

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

    def _set(self, version: int, status: str, file: Path) -> None:
        self.db.execute(
            "UPDATE versions SET status = ?, path = ? WHERE version = ?",
            (status, str(file.relative_to(self.run_dir)), version),
        )

    def quarantine(self, version: int) -> Path | None:
        """Move a version's unreadable file aside and mark its row; if it served, the newest earlier
        promoted version serves instead. Returns where the file went (None if it was gone already:
        decision may have moved it first)."""
        moved = self.store.quarantine(self.store.path(version))
        aside = moved or self.store.quarantined(version)
        with self.db:
            if aside is None:  # not there at all: a row without a file
                self.db.execute("DELETE FROM versions WHERE version = ?", (version,))
            else:
                self._set(version, QUARANTINED, aside)
            if self.serving() == version:
                self._serve(self._promoted_before(version), f"version {version} quarantined")
        return moved

    def prune(self, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` versions, rows and files, never the serving version or its
        ancestors back to the last promoted one (what a rollback needs). Returns those deleted."""
        protected = set(self.lineage(self.serving()))
        rows = [r for r in self.versions() if r.status != WRITING]
        doomed = [r for r in rows[: max(0, len(rows) - keep)] if r.version not in protected]
        if not doomed:
            return []
        with self.db:  # rows first: a crash before the files are gone leaves files that recover records again
            self.db.executemany("DELETE FROM versions WHERE version = ?", [(r.version,) for r in doomed])
        for record in doomed:
            if record.status != QUARANTINED:  # a quarantined file stays for an operator to look at
                self.file(record).unlink(missing_ok=True)
        return [r.version for r in doomed]

    # --- recovery --------------------------------------------------------------------------------
    def recover(self) -> Recovery:
        """Make rows and files agree again after a crash, a lost registry or a moved run directory."""
        found = Recovery(temp_files_removed=self.store.remove_temp_files())
        with self.db:
            for record in self.versions(include_writing=True):
                expected = self.run_dir / checkpoint_path(record.version)
                if record.status == WRITING:
                    expected.unlink(missing_ok=True)  # never announced: as if the write never began
                    self.db.execute("DELETE FROM versions WHERE version = ?", (record.version,))
                    found.discarded.append(record.version)
                elif record.status == QUARANTINED:
                    continue
                elif expected.exists():
                    # Relative again: rows written before paths were relative hold absolute ones.
                    self._set(record.version, record.status, expected)
                elif (moved := self.store.quarantined(record.version)) is not None:  # decision moved it aside
                    self._set(record.version, QUARANTINED, moved)
                else:
                    self.db.execute("DELETE FROM versions WHERE version = ?", (record.version,))
                    found.dropped.append(record.version)
            recorded = {r.version for r in self.versions()}
            for version in self.store.versions():
                if version in recorded:
                    continue
                path = self.store.path(version)
                try:
                    record = record_from_metadata(version, read_metadata(path))
                except CheckpointError as exc:
                    self.store.quarantine(path)
                    found.quarantined[version] = str(exc)
                    continue
                self.db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", astuple_with(record))
                found.adopted.append(version)
            before = self.serving()
            current = self.get(before)
            if before == 0 or current is None or current.status != PROMOTED:
                # Rebuilt (no serving row): the newest promoted version; else the newest one before it.
                after = self._promoted_before(before or None)
                if after != before:
                    self._serve(after, "registry recovered")
                    found.serving = (before, after)
        return found

    # --- reading ---------------------------------------------------------------------------------
    def serving(self) -> int:
        """The version decision should serve; 0 when none was promoted yet."""
        row = self.db.execute("SELECT version FROM serving WHERE id = 1").fetchone()
        return row[0] if row else 0

    def _promoted_before(self, version: int | None) -> int:
        """The newest promoted version before ``version`` (None: of all), 0 if none."""
        row = self.db.execute(
            "SELECT MAX(version) FROM versions WHERE status = ? AND version < ?",
            (PROMOTED, version if version is not None else 2**62),
        ).fetchone()
        return row[0] or 0

    def get(self, version: int) -> VersionRecord | None:
        row = self.db.execute("SELECT * FROM versions WHERE version = ?", (version,)).fetchone()
        return VersionRecord(*row) if row else None

    def versions(self, include_writing: bool = False) -> list[VersionRecord]:
        rows = [VersionRecord(*row) for row in self.db.execute("SELECT * FROM versions ORDER BY version")]
        return rows if include_writing else [r for r in rows if r.status != WRITING]

    def latest_version(self) -> int:
        """The highest version number recorded (quarantined ones too: a number is never used twice)."""
        row = self.db.execute("SELECT MAX(version) FROM versions WHERE status != ?", (WRITING,)).fetchone()
        return row[0] or 0

    def newest(self) -> int:
        """The newest version with its checkpoint in place: where training resumes from (0: none)."""
        row = self.db.execute(
            "SELECT MAX(version) FROM versions WHERE status NOT IN (?, ?)", (WRITING, QUARANTINED)
        ).fetchone()
        return row[0] or 0

    def lineage(self, version: int) -> list[int]:
        """``version`` and its ancestors back to (and with) the first promoted one, newest first."""
        chain: list[int] = []
        record = self.get(version) if version else None
        while record is not None and record.version not in chain:
            chain.append(record.version)
            if len(chain) > 1 and record.status == PROMOTED:
                break
            record = self.get(record.parent) if record.parent else None
        return chain

    def serving_order(self) -> list[int]:
        """The versions decision should try, best first: the serving one, then earlier promoted ones
        (those whose file is there), for when a file cannot be read."""
        current = self.serving()
        earlier = self.db.execute(
            "SELECT * FROM versions WHERE status = ? AND version < ? ORDER BY version DESC", (PROMOTED, current)
        )
        order = [current] if current else []
        return order + [r.version for r in map(lambda row: VersionRecord(*row), earlier) if self.file(r).exists()]

    def rollback_target(self, to: int | None) -> VersionRecord:
        """The version a rollback should serve: ``to``, or the promoted version before the serving one."""
        current = self.serving()
        if to is None:
            rows = self.db.execute(
                "SELECT * FROM versions WHERE status = ? AND version < ? ORDER BY version DESC", (PROMOTED, current)
            )
            record = next((r for r in map(lambda row: VersionRecord(*row), rows) if self.file(r).exists()), None)
            if record is None:
                raise ValueError(f"no promoted version with a checkpoint on disk before the serving version {current}")
            return record
        record = self.get(to)
        if record is None or record.status == WRITING:
            raise ValueError(f"no student version {to} in the registry (see distillation.keep_versions)")
        if record.status == QUARANTINED:
            raise ValueError(f"the checkpoint of version {to} cannot be read; it was quarantined ({record.path})")
        return record


def astuple_with(record: VersionRecord, **changes: Any) -> tuple[Any, ...]:
    """A row's values in column order, with ``changes``."""
    return tuple(asdict(replace(record, **changes)).values())


def open_writable(run_dir: str | Path) -> tuple[Registry, Path | None]:
    """The distiller's registry. A damaged one is moved aside (with its WAL and shared memory) and an
    empty one started, for ``Registry.recover`` to fill from the checkpoints; returns where it went."""
    try:
        return Registry(run_dir), None
    except RegistryDamaged:
        path = Path(run_dir) / FILE_NAME
        aside = path.with_name(f"{FILE_NAME}.damaged-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        for suffix in ("-wal", "-shm", ""):  # a stale WAL would be replayed into the new database
            source = Path(f"{path}{suffix}")
            if source.exists():
                source.replace(f"{aside}{suffix}")
        return Registry(run_dir), aside


def serving_order(run_dir: str | Path) -> list[int]:
    """The versions a reader (decision, the gateway) should try to serve, best first. While the
    registry is missing, damaged or names none (until the distiller has rebuilt it: a reader
    starting meanwhile may find it new and still empty), the promoted versions the checkpoints'
    own metadata name, newest first."""
    if (Path(run_dir) / FILE_NAME).exists():
        try:
            registry = Registry(run_dir, readonly=True)
        except (RegistryDamaged, sqlite3.OperationalError):
            pass
        else:
            try:
                order = registry.serving_order()
                if order:
                    return order
            except sqlite3.OperationalError:  # the distiller has not created its tables yet
                pass
            finally:
                registry.close()
    store = CheckpointStore(Path(run_dir) / CHECKPOINTS)
    promoted = []
    for version in reversed(store.versions()):
        try:
            if record_from_metadata(version, read_metadata(store.path(version))).status == PROMOTED:
                promoted.append(version)
        except CheckpointError:
            continue  # decision quarantines it if it ever tries to load it
    return promoted


def serving_version(run_dir: str | Path) -> int:
    """The version the registry says should serve (0 before the first promotion)."""
    order = serving_order(run_dir)
    return order[0] if order else 0
