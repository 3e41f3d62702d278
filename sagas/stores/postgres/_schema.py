"""The PostgreSQL store's schema (version 3), how a database is checked, and how it is
migrated.

Every table lives in the schema ``sagactor`` of the database (so a database may hold other
things too)::

    meta(key PRIMARY KEY, value)                      -- keys 'schema_version', 'partitions'
    counters(name PRIMARY KEY, value)                 -- the last position given out, of
                                                      -- 'events' and of 'external_events'
    definitions(sha256 PRIMARY KEY, text)
    sagas(saga_id PRIMARY KEY, flow, version, definition, input, status, reason,
          started_at, updated_at, last_seq, owner)    -- indexed by status, started_at, owner;
                                                      -- those not terminal by started_at
    events(saga_id, seq, position UNIQUE, type, step, attempt, at, event_id, causation_id,
           data, member, epoch, PRIMARY KEY (saga_id, seq))
                                                      -- member, epoch: a fenced write's
    requests(request_id IDENTITY PRIMARY KEY, saga_id, kind, data, created_at, handled)
                                                      -- pending ones indexed by saga_id
    inbox(key PRIMARY KEY, outcome, output, error)    -- services' definitive replies
    tombstones(key PRIMARY KEY)                       -- actions whose compensation started
    external_events(position PRIMARY KEY, event_id UNIQUE, type, key, data, sent_at,
                    consumed_by, consumed_at)         -- indexed by type, key, consumed_by
    cursors(subscriber PRIMARY KEY, position)         -- the event bus's durable cursors
    owners(owner PRIMARY KEY, lock_key, backend_pid, host, pid, registered_at)
                                                      -- registered owners (see _ownership)
    leases(partition PRIMARY KEY, member, epoch, expires_at, renewed_at)
                                                      -- one row per partition, from 0
    members(member PRIMARY KEY, started_at, last_seen, info)
                                                      -- members sharing the store

``input``, ``data``, ``output`` and ``info`` hold compact JSON text (``text``, not ``jsonb``: a
value reads back exactly as it was written). Ids compare byte by byte (``COLLATE "C"``), so
that sagas list in the same order as in the other stores, whatever the database's collation.
Times are Unix seconds (``double precision``); those of leases and members are the server's
clock (``clock_timestamp()``).

The version is kept in ``meta``. Opening a database whose schema is older migrates it forward
in place (one transaction, under an advisory lock, so that of several processes opening it at
once one migrates and the others find it done); one whose schema is newer than this code knows
is refused with one line, and left as it is. ``_MIGRATIONS`` (from version n to n + 1) holds
the statements of each step. Version 2 added the partitions (``meta``'s ``partitions``, a row of
``leases`` for each, ``members``) and the writer of each event (``events.member`` and
``events.epoch``, nullable columns, added without rewriting the table): a process of version 1
still running while another migrates goes on writing, unfenced, its events' writers ``NULL``
(its inserts name their columns), and refuses the store only when it opens it again. Version 3
added an index of the sagas not terminal (``sagas_in_flight``, partial), so that the sagas in
flight (``in_flight``, a member's ``claim`` every few seconds) are read in time proportional to
their number, not to every saga ever run, and left room in the pages of ``sagas`` (fillfactor
70: pages written from then on) for its rows' updates; a process of version 2 goes on reading
and writing as before (the server keeps the index up to date), but the migration's ``CREATE
INDEX`` reads the whole table with its writes held back meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg

from sagas.errors import StoreMissing
from sagas.stores._port import DEFAULT_PARTITIONS
from sagas.stores._schema import check_tables, not_a_store, partition_count, schema_version

__all__ = ["SCHEMA", "SCHEMA_VERSION"]

_logger = logging.getLogger("sagas.stores.postgres")

SCHEMA_VERSION = 3
"""The schema version this code writes and reads (older ones are migrated forward on open)."""

SCHEMA = "sagactor"
"""The PostgreSQL schema (namespace) holding a store's tables."""

_SCHEMA_LOCK = 0x5341_4741_0000_0001
"""The advisory lock held (for a transaction) while the schema is created or migrated."""

_TABLES = {
    1: frozenset({"meta", "counters", "definitions", "sagas", "events", "requests", "inbox",
                  "tombstones", "external_events", "cursors", "owners"}),
}
_TABLES[2] = _TABLES[1] | {"leases", "members"}
_TABLES[3] = _TABLES[2]

TERMINAL_SQL = "('completed', 'compensated', 'failed')"
"""The terminal statuses (``sagas.stores.TERMINAL``) as an SQL list: the predicate of the index
of the sagas in flight, which the statements reading them repeat word for word
(``status NOT IN ...``), so that the planner uses it whatever their parameters."""

_CREATE = (
    "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE counters (name text PRIMARY KEY, value bigint NOT NULL)",
    "INSERT INTO counters (name, value) VALUES ('events', 0), ('external_events', 0)",
    "CREATE TABLE definitions (sha256 text PRIMARY KEY, text text NOT NULL)",
    """CREATE TABLE sagas (
        saga_id text COLLATE "C" PRIMARY KEY,
        flow text COLLATE "C" NOT NULL,
        version bigint NOT NULL,
        definition text NOT NULL,
        input text NOT NULL,
        status text COLLATE "C" NOT NULL,
        reason text,
        started_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        last_seq bigint NOT NULL,
        owner text COLLATE "C"
    )""",
    "CREATE INDEX sagas_by_status ON sagas (status)",
    "CREATE INDEX sagas_by_started_at ON sagas (started_at, saga_id)",
    "CREATE INDEX sagas_by_owner ON sagas (owner)",
    """CREATE TABLE events (
        saga_id text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        position bigint NOT NULL,
        type text NOT NULL,
        step text,
        attempt bigint,
        at double precision NOT NULL,
        event_id text NOT NULL,
        causation_id text,
        data text NOT NULL,
        member text COLLATE "C",
        epoch bigint,
        PRIMARY KEY (saga_id, seq)
    )""",
    "CREATE UNIQUE INDEX events_by_position ON events (position)",
    """CREATE TABLE requests (
        request_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        saga_id text COLLATE "C" NOT NULL,
        kind text NOT NULL,
        data text NOT NULL,
        created_at double precision NOT NULL,
        handled boolean NOT NULL DEFAULT false
    )""",
    "CREATE INDEX requests_pending ON requests (saga_id) WHERE NOT handled",
    """CREATE TABLE inbox (
        key text PRIMARY KEY,
        outcome text NOT NULL,
        output text,
        error text
    )""",
    "CREATE TABLE tombstones (key text PRIMARY KEY)",
    """CREATE TABLE external_events (
        position bigint PRIMARY KEY,
        event_id text COLLATE "C" NOT NULL UNIQUE,
        type text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        data text NOT NULL,
        sent_at double precision NOT NULL,
        consumed_by text COLLATE "C",
        consumed_at double precision
    )""",
    "CREATE INDEX external_events_by_match ON external_events (type, key, consumed_by, position)",
    """CREATE TABLE cursors (
        subscriber text COLLATE "C" PRIMARY KEY,
        position bigint NOT NULL
    )""",
    """CREATE TABLE owners (
        owner text COLLATE "C" PRIMARY KEY,
        lock_key bigint NOT NULL,
        backend_pid integer NOT NULL,
        host text,
        pid integer,
        registered_at double precision NOT NULL
    )""",
)

_V2_TABLES = (
    """CREATE TABLE leases (
        partition integer PRIMARY KEY,
        member text COLLATE "C",
        epoch bigint NOT NULL,
        expires_at double precision,
        renewed_at double precision
    )""",
    """CREATE TABLE members (
        member text COLLATE "C" PRIMARY KEY,
        started_at double precision NOT NULL,
        last_seen double precision NOT NULL,
        info text NOT NULL
    )""",
)
_CREATE += _V2_TABLES

_V3 = (
    # room in each page of sagas for the new versions of its rows: a saga's header is updated
    # a few times while it runs (its status unchanged), and an update that finds room in its
    # page changes no index (a HOT update): most of them then, a tenth of them without it
    "ALTER TABLE sagas SET (fillfactor = 70)",
    "CREATE INDEX IF NOT EXISTS sagas_in_flight ON sagas (started_at, saga_id) "
    f"WHERE status NOT IN {TERMINAL_SQL}",
)
_CREATE += _V3

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # from version n to n + 1: the statements, run in order in one transaction
    1: (  # and the partitions' rows (_add_partitions)
        "ALTER TABLE events ADD COLUMN member text COLLATE \"C\", ADD COLUMN epoch bigint",
        *_V2_TABLES,
    ),
    2: _V3,
}


def _abandon(db: psycopg.Connection[Any]) -> None:
    """Roll back the open transaction of a failed schema change, if the connection lives."""
    if not db.closed and not db.broken:
        with contextlib.suppress(psycopg.Error):
            db.execute("ROLLBACK")


class _Schema:
    """Checking a database's schema on open, creating it in a new one, migrating an old one.
    The store's connections have :data:`SCHEMA` as their ``search_path`` (set when they
    connect), so statements name tables without it."""

    url: str
    _wanted_partitions: int | None  # asked for by the opener (None: whatever the store has)
    _partition_count: int  # what the store has, once prepared

    def _prepare(self, db: psycopg.Connection[Any], create: bool) -> None:
        tables = self._tables(db)
        if not tables:
            if not create:
                raise StoreMissing(self.url)
            self._create_schema(db)
            tables = self._tables(db)
        version = self._schema_version(db, tables)
        if version < SCHEMA_VERSION:
            self._check_tables(tables, version)
            self._migrate(db)
            version = self._schema_version(db, self._tables(db))
        # read after the version: another process may have migrated the schema since the
        # tables were first read, and a migration only adds tables
        self._check_tables(self._tables(db), version)
        self._partition_count = self._partitions(db)

    @staticmethod
    def _tables(db: psycopg.Connection[Any]) -> set[str]:
        """The tables in the store's schema (none if there is no such schema)."""
        rows = db.execute(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (SCHEMA,),
        ).fetchall()
        return {name for (name,) in rows}

    def _create_schema(self, db: psycopg.Connection[Any]) -> None:
        """Create the schema and its tables in one transaction, unless another process did
        meanwhile (the advisory lock makes them take turns)."""
        db.execute("BEGIN")
        try:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            if not self._tables(db):
                db.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
                for statement in _CREATE:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s)",
                    (str(SCHEMA_VERSION),),
                )
                self._add_partitions(db)
                _logger.info("created saga store %s (schema version %d)", self.url,
                             SCHEMA_VERSION)
            db.execute("COMMIT")
        except BaseException:
            _abandon(db)
            raise

    def _schema_version(self, db: psycopg.Connection[Any], tables: set[str]) -> int:
        """The schema's version, if it is one this code can use (or migrate), else
        ``StoreUnavailable``."""
        foreign = not_a_store(self.url, f"schema {SCHEMA} has", tables)
        if "meta" not in tables:
            raise foreign
        try:
            row = db.execute(
                f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'"
            ).fetchone()
        except psycopg.errors.UndefinedColumn as err:  # a 'meta' table of another shape
            raise foreign from err
        if row is None:
            raise foreign
        return schema_version(self.url, row[0], _TABLES, SCHEMA_VERSION,
                              newer="; upgrade sagactor to use it")

    def _check_tables(self, tables: set[str], version: int) -> None:
        """``StoreUnavailable`` if a table of that schema version is missing."""
        check_tables(self.url, tables, _TABLES[version])

    def _migrate(self, db: psycopg.Connection[Any]) -> None:
        """Bring the schema to ``SCHEMA_VERSION`` in one transaction, keeping the data.

        The version is read again under the advisory lock: another process may have migrated
        the schema meanwhile (then nothing is done), or made it newer (left to the caller's
        check).
        """
        db.execute("BEGIN")
        try:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            (text,) = db.execute(  # type: ignore[misc]
                "SELECT value FROM meta WHERE key = 'schema_version' FOR UPDATE"
            ).fetchone()
            start = version = int(text)
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)  # type: ignore[arg-type]
                version += 1
                if version == 2:
                    self._add_partitions(db)
            if version != start:
                db.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'",
                           (str(version),))
            db.execute("COMMIT")
        except BaseException:
            _abandon(db)
            raise
        if version != start:
            _logger.info("migrated saga store %s from schema %d to %d", self.url, start, version)

    def _add_partitions(self, db: psycopg.Connection[Any]) -> None:
        """Record the store's number of partitions (the opener's, else the default) and give
        each a row of ``leases``, never held (in the open transaction)."""
        count = self._wanted_partitions or DEFAULT_PARTITIONS
        db.execute("INSERT INTO meta (key, value) VALUES ('partitions', %s)", (str(count),))
        db.execute("INSERT INTO leases (partition, epoch) SELECT p, 0 FROM "
                   "generate_series(0, %s - 1) AS p", (count,))

    def _partitions(self, db: psycopg.Connection[Any]) -> int:
        """The store's number of partitions; ``StoreUnavailable`` if it is unreadable or not
        the number the opener asked for."""
        row = db.execute("SELECT value FROM meta WHERE key = 'partitions'").fetchone()
        return partition_count(self.url, row, self._wanted_partitions)
