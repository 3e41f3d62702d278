"""The SQLite store's schema (version 6), how a file is checked, and how it is migrated.

::

    meta(key PRIMARY KEY, value)                      -- keys 'schema_version', 'partitions'
    definitions(sha256 PRIMARY KEY, text)
    sagas(saga_id PRIMARY KEY, flow, version, definition, input, status, reason,
          started_at, updated_at, last_seq, owner)    -- indexed by status, started_at, owner
    events(position INTEGER PRIMARY KEY AUTOINCREMENT, saga_id, seq, type, step, attempt,
           at, event_id, causation_id, data, member, epoch, UNIQUE(saga_id, seq))
                                                      -- member, epoch: a fenced write's
    requests(request_id INTEGER PRIMARY KEY AUTOINCREMENT, saga_id, kind, data, created_at,
             handled)                                 -- pending ones indexed by saga_id
    inbox(key PRIMARY KEY, outcome, output, error)    -- services' definitive replies
    tombstones(key PRIMARY KEY)                       -- actions whose compensation started
    external_events(position INTEGER PRIMARY KEY AUTOINCREMENT, event_id UNIQUE, type, key,
                    data, sent_at, consumed_by, consumed_at)
                                                      -- indexed by type, key, consumed_by
    cursors(subscriber PRIMARY KEY, position)         -- the event bus's durable cursors
    owners(owner PRIMARY KEY, pid, started, boot, pidns, registered_at)
                                                      -- registered owners' processes
    leases(partition INTEGER PRIMARY KEY, member, epoch, expires_at, renewed_at)
                                                      -- one row per partition, from 0
    members(member PRIMARY KEY, started_at, last_seen, info)
                                                      -- members sharing the store

``input``, ``data``, ``output`` and ``info`` hold compact JSON text. Their columns are declared
``TEXT``, not ``JSON``: SQLite gives an unknown type name NUMERIC affinity, which would turn the
JSON text ``3`` into the integer 3. Version 2 added ``sagas.owner``, ``requests``, ``inbox`` and
``tombstones``, version 3 ``external_events``, version 4 ``cursors``, version 5 ``owners``,
version 6 the partitions (``meta``'s ``partitions``, ``leases``, ``members``) and the writer of
each event (``events.member``, ``events.epoch``: ``NULL`` for the events written before); an
older file is migrated forward in place when opened (one transaction; the partitions it gets
are those its opener asks for, else 64).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from sagas.errors import StoreMissing, StoreUnavailable
from sagas.stores._port import DEFAULT_PARTITIONS
from sagas.stores._schema import check_tables, not_a_store, partition_count, schema_version

__all__ = ["SCHEMA_VERSION"]

_logger = logging.getLogger("sagas.stores.sqlite")

SCHEMA_VERSION = 6
"""The schema version this code writes and reads (older ones are migrated forward on open)."""

_TABLES = {  # the tables of each schema version
    1: frozenset({"meta", "definitions", "sagas", "events"}),
    2: frozenset({"meta", "definitions", "sagas", "events", "requests", "inbox", "tombstones"}),
}
_TABLES[3] = _TABLES[2] | {"external_events"}
_TABLES[4] = _TABLES[3] | {"cursors"}
_TABLES[5] = _TABLES[4] | {"owners"}
_TABLES[6] = _TABLES[5] | {"leases", "members"}

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE definitions (sha256 TEXT PRIMARY KEY, text TEXT NOT NULL)",
    """CREATE TABLE sagas (
        saga_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        version INTEGER NOT NULL,
        definition TEXT NOT NULL,
        input TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        started_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_seq INTEGER NOT NULL,
        owner TEXT
    )""",
    "CREATE INDEX sagas_by_status ON sagas (status)",
    "CREATE INDEX sagas_by_started_at ON sagas (started_at, saga_id)",
    "CREATE INDEX sagas_by_owner ON sagas (owner)",
    """CREATE TABLE events (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        saga_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        step TEXT,
        attempt INTEGER,
        at REAL NOT NULL,
        event_id TEXT NOT NULL,
        causation_id TEXT,
        data TEXT NOT NULL,
        member TEXT,
        epoch INTEGER,
        UNIQUE (saga_id, seq)
    )""",
)

_V2_TABLES = (
    """CREATE TABLE requests (
        request_id INTEGER PRIMARY KEY AUTOINCREMENT,
        saga_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at REAL NOT NULL,
        handled INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX requests_pending ON requests (saga_id) WHERE handled = 0",
    """CREATE TABLE inbox (
        key TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        output TEXT,
        error TEXT
    ) WITHOUT ROWID""",
    "CREATE TABLE tombstones (key TEXT PRIMARY KEY) WITHOUT ROWID",
)

_V3_TABLES = (
    """CREATE TABLE external_events (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        sent_at REAL NOT NULL,
        consumed_by TEXT,
        consumed_at REAL
    )""",
    "CREATE INDEX external_events_by_match ON external_events (type, key, consumed_by, position)",
)

_V4_TABLES = (
    """CREATE TABLE cursors (
        subscriber TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

_V5_TABLES = (
    """CREATE TABLE owners (
        owner TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        started INTEGER,
        boot TEXT,
        pidns TEXT,
        registered_at REAL NOT NULL
    ) WITHOUT ROWID""",
)

_V6_TABLES = (
    """CREATE TABLE leases (
        partition INTEGER PRIMARY KEY,
        member TEXT,
        epoch INTEGER NOT NULL,
        expires_at REAL,
        renewed_at REAL
    )""",
    """CREATE TABLE members (
        member TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        info TEXT NOT NULL
    ) WITHOUT ROWID""",
)

_SCHEMA += _V2_TABLES + _V3_TABLES + _V4_TABLES + _V5_TABLES + _V6_TABLES

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # from version n to n + 1
    1: (
        "ALTER TABLE sagas ADD COLUMN owner TEXT",
        "CREATE INDEX sagas_by_owner ON sagas (owner)",
        *_V2_TABLES,
    ),
    2: _V3_TABLES,
    3: _V4_TABLES,
    4: _V5_TABLES,
    5: (  # and the partitions' rows (_add_partitions)
        "ALTER TABLE events ADD COLUMN member TEXT",
        "ALTER TABLE events ADD COLUMN epoch INTEGER",
        *_V6_TABLES,
    ),
}


def _rollback(db: sqlite3.Connection) -> None:
    """End the open transaction, if any, without writing it (a no-op after COMMIT)."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


class _Schema:
    """Checking a file's schema on open, creating it in a new file, migrating an old one."""

    path: Path
    synchronous: str
    busy_timeout: float
    _wanted_partitions: int | None  # asked for by the opener (None: whatever the file has)
    _partition_count: int  # what the file has, once prepared

    def _prepare(self, db: sqlite3.Connection, create: bool) -> None:
        tables = self._tables(db)
        if not tables:
            if not create:
                raise StoreMissing(os.fspath(self.path))
            self._create_schema(db)
            tables = self._tables(db)
        version = self._schema_version(db, tables)
        if version < SCHEMA_VERSION:
            self._check_tables(tables, version)
            self._migrate(db)
            version = self._schema_version(db, self._tables(db))
        # read after the version: another process may have migrated the file since the
        # tables were first read (they would be an older version's), and a migration only
        # adds tables
        self._check_tables(self._tables(db), version)
        self._partition_count = self._partitions(db)
        self._use_wal(db)
        db.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL mode (once per file: the mode is persistent).

        Two connections switching a new file at once: SQLite refuses one with SQLITE_BUSY
        without waiting, so the switch is retried until the busy timeout.
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                (mode,) = db.execute("PRAGMA journal_mode").fetchone()
                if mode.lower() != "wal":
                    (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as err:
                busy = getattr(err, "sqlite_errorname", "").startswith("SQLITE_BUSY")
                if not (busy or "locked" in str(err)) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)
        if mode.lower() != "wal":
            raise StoreUnavailable(f"saga store {self.path} cannot use WAL mode (it is in {mode})")

    @staticmethod
    def _tables(db: sqlite3.Connection) -> set[str]:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name for (name,) in rows}

    def _create_schema(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            if not self._tables(db):  # another connection may have created it meanwhile
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                self._add_partitions(db)
                _logger.info("created saga store %s (schema version %d)", self.path, SCHEMA_VERSION)
            db.execute("COMMIT")
        finally:
            _rollback(db)

    def _schema_version(self, db: sqlite3.Connection, tables: set[str]) -> int:
        """The file's schema version, if it is one this code can use (or migrate), else
        ``StoreUnavailable``."""
        foreign = not_a_store(self.path, "a SQLite database with", tables)
        if "meta" not in tables:
            raise foreign
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError as err:  # a 'meta' table of another shape
            raise foreign from err
        if row is None:
            raise foreign
        return schema_version(self.path, row[0], _TABLES, SCHEMA_VERSION)

    def _check_tables(self, tables: set[str], version: int) -> None:
        """``StoreUnavailable`` if a table of that schema version is missing."""
        check_tables(self.path, tables, _TABLES[version])

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring the schema to ``SCHEMA_VERSION`` in one transaction, keeping the data.

        The version is read again under the write lock: another connection may have migrated
        the file meanwhile (then nothing is done), or made it newer (left to the caller's check).
        """
        db.execute("BEGIN IMMEDIATE")
        try:
            (text,) = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            start = version = int(text)
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
                version += 1
                if version == 6:
                    self._add_partitions(db)
            if version != start:
                db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),)
                )
            db.execute("COMMIT")
        finally:
            _rollback(db)
        if version != start:
            _logger.info("migrated saga store %s from schema %d to %d", self.path, start, version)

    def _add_partitions(self, db: sqlite3.Connection) -> None:
        """Record the store's number of partitions (the opener's, else the default) and give
        each a row of ``leases``, never held (in the open transaction)."""
        count = self._wanted_partitions or DEFAULT_PARTITIONS
        db.execute("INSERT INTO meta (key, value) VALUES ('partitions', ?)", (str(count),))
        db.executemany("INSERT INTO leases (partition, epoch) VALUES (?, 0)",
                       [(p,) for p in range(count)])

    def _partitions(self, db: sqlite3.Connection) -> int:
        """The file's number of partitions; ``StoreUnavailable`` if it is unreadable or not
        the number the opener asked for."""
        row = db.execute("SELECT value FROM meta WHERE key = 'partitions'").fetchone()
        return partition_count(self.path, row, self._wanted_partitions)
