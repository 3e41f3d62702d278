"""The SQLite saga store (``sqlite:///path``): embedded, durable, shareable by several processes.

The database runs in WAL mode with a busy timeout, so several processes (and several
:class:`SqliteStore` objects) can use one file: writers take SQLite's write lock with
``BEGIN IMMEDIATE`` and wait up to the busy timeout for it. Within one object, every write goes
through one connection guarded by a lock, and each thread reads on a connection of its own
(opened on its first read, closed by :meth:`SqliteStore.close` or when the thread ends): in WAL
mode readers do not wait for the writer, and a read sees everything committed before it starts.
A read of one statement runs in autocommit; a read of several (``load``, ``load_many``) runs in
one read transaction, so its statements agree.

``synchronous=normal`` (the default) survives a crash of the process; ``synchronous=full`` also
survives a power loss, at the cost of an fsync per commit.

Schema (version 5)::

    meta(key PRIMARY KEY, value)                      -- key 'schema_version'
    definitions(sha256 PRIMARY KEY, text)
    sagas(saga_id PRIMARY KEY, flow, version, definition, input, status, reason,
          started_at, updated_at, last_seq, owner)    -- indexed by status, started_at, owner
    events(position INTEGER PRIMARY KEY AUTOINCREMENT, saga_id, seq, type, step, attempt,
           at, event_id, causation_id, data, UNIQUE(saga_id, seq))
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

``input``, ``data`` and ``output`` hold compact JSON text. Their columns are declared ``TEXT``,
not ``JSON``: SQLite gives an unknown type name NUMERIC affinity, which would turn the JSON text
``3`` into the integer 3. Version 2 added ``sagas.owner``, ``requests``, ``inbox`` and
``tombstones``, version 3 ``external_events``, version 4 ``cursors``, version 5 ``owners``;
an older file is migrated forward in place when opened (one transaction).

Positions (``events.position``) are given out by ``AUTOINCREMENT`` inside a write transaction,
which holds SQLite's one write lock (``BEGIN IMMEDIATE``) until it commits, whatever process
writes: position ``p + 1`` cannot be allocated before the transaction holding ``p`` has
committed or rolled back. So positions become visible to readers in order, never with a hole
that fills later, and a log reader (the event bus) may advance past everything it has read.

Ownership (several processes sharing one file) must never hand a live owner's sagas to
another runtime, and must notice a dead owner however it died. Two records say an owner lives,
and neither alone is trusted when it says "dead":

- *A lock*: :meth:`SqliteStore.register_owner` takes an exclusive ``flock`` on
  ``<db file>.owners/<owner>.lock`` and holds it until :meth:`SqliteStore.close` or the death
  of the process, however it dies (the OS drops the lock). A lock file that is there and
  locked is a live owner; one that is there and unlocked is a stale one (removed when seen).
- *A registration*: in the same call, a row of ``owners`` records the owner's process: its
  pid, its start time (``/proc/<pid>/stat``), the boot id and the pid namespace
  (:mod:`sagas.stores._process`). ``close()`` deletes it; a crash leaves it behind.

An owner is alive if its lock file is locked, or else if it has a registration whose process
still runs (same pid, same start time: a reused pid is another process). A process that exited
(a zombie included), or that ran before the last boot, is gone. Deleting ``<db>.owners/`` or a
lock file therefore takes nothing from a live owner: its registration keeps it alive. Where the
process cannot be seen (another pid namespace, no ``/proc``) the lock file decides: unlocked,
the owner is gone; missing, it is taken as alive (never adopted when unsure). A registration
whose process is gone is deleted by the next ``adopt`` that finds it, or the next
``register_owner``. Registering an id whose owner is alive (its lock held, or its lock file
deleted but its process running) fails. The lock belongs to the open file, so a process that
``fork()`` s without ``exec`` shares it with its child: the owner lives until both are gone.

Files: everything the store creates is private (:mod:`sagas.stores._files`): directories
``0700``, the database file ``0600`` (created empty before SQLite opens it; SQLite then gives
its ``-wal``, ``-shm`` and ``-journal`` files the database file's mode), lock files ``0600``;
a stricter umask is respected, and existing files and directories keep their modes. Opened
with ``create=False`` (the commands that only read or act on existing sagas), a missing store
raises :class:`~sagas.errors.StoreMissing` and nothing is created: no directory, no file.
SQLite itself never creates the file (it is opened with ``mode=rw``).

Every sqlite3 error is translated here: a file that cannot be used (not a database, damaged,
truncated, another application's database, a newer schema, locked beyond the busy timeout)
raises :class:`~sagas.errors.StoreUnavailable` with one line naming the file. An existing file
is never reset or overwritten; only a new or empty one gets the schema.
"""

from __future__ import annotations

import builtins
import contextlib
import enum
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from actors import StoredReply
from sagas.errors import BadStoreUrl, SeqConflict, StoreMissing, StoreUnavailable, UnknownSaga
from sagas.stores._base import (
    TERMINAL,
    Append,
    ExternalEvent,
    LogEntry,
    NewSaga,
    Request,
    SagaHeader,
    SagaRecord,
    StoredEvent,
    check_claim,
    check_position,
    check_subscriber,
    external_event_fields,
    new_event_id,
)
from sagas.stores._common import OWNER_ID as _OWNER_ID
from sagas.stores._common import check_owner as _check_owner
from sagas.stores._common import decode as _decode
from sagas.stores._common import encode as _encode
from sagas.stores._common import request_json as _request_json
from sagas.stores._files import PRIVATE_FILE, create_private_file, make_private_dirs
from sagas.stores._process import ProcessIdentity, process_alive, this_process

__all__ = ["SCHEMA_VERSION", "SYNCHRONOUS", "SqliteInbox", "SqliteStore"]

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 5
"""The schema version this code writes and reads (older ones are migrated forward on open)."""

SYNCHRONOUS = ("normal", "full")
"""The accepted values of ``synchronous``."""

_MAGIC = b"SQLite format 3\x00"
_TABLES = {  # the tables of each schema version
    1: frozenset({"meta", "definitions", "sagas", "events"}),
    2: frozenset({"meta", "definitions", "sagas", "events", "requests", "inbox", "tombstones"}),
}
_TABLES[3] = _TABLES[2] | {"external_events"}
_TABLES[4] = _TABLES[3] | {"cursors"}
_TABLES[5] = _TABLES[4] | {"owners"}

_OWNER_GRACE = 0.2
"""Seconds ``register_owner`` retries a lock file held by someone checking whether a dead
owner of the same id is alive (the check holds it for microseconds)."""


_T = TypeVar("_T")


def _plain(obj: object) -> object:
    """JSON encoding of what ``json`` does not know: read-only mappings (``actors.freeze``)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode_output = json.JSONEncoder(
    separators=(",", ":"), allow_nan=False, ensure_ascii=False, default=_plain
).encode

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

_SCHEMA += _V2_TABLES + _V3_TABLES + _V4_TABLES + _V5_TABLES

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
}

_HEADER_COLUMNS = (
    "saga_id, flow, version, definition, input, status, reason, started_at, updated_at, last_seq, "
    "owner"
)
_EVENT_COLUMNS = "position, seq, type, step, attempt, at, event_id, causation_id, data"

_INSERT_SAGA = (
    f"INSERT INTO sagas ({_HEADER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (saga_id) DO NOTHING"
)
_INSERT_DEFINITION = "INSERT OR IGNORE INTO definitions (sha256, text) VALUES (?, ?)"
_INSERT_EVENT = (
    "INSERT INTO events (saga_id, seq, type, step, attempt, at, event_id, causation_id, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_SAGA = (
    "UPDATE sagas SET last_seq = ?, status = ?, reason = ?, updated_at = ? "
    "WHERE saga_id = ? AND last_seq = ?"
)
_SELECT_HEADER = f"SELECT {_HEADER_COLUMNS} FROM sagas WHERE saga_id = ?"
_SELECT_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM events WHERE saga_id = ? ORDER BY seq"
_SELECT_ALL_EVENTS = (
    f"SELECT saga_id, {_EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
)
_SELECT_LOG = (
    "SELECT e.saga_id, s.flow, e.position, e.seq, e.type, e.step, e.attempt, e.at, e.event_id, "
    "e.causation_id, e.data FROM events AS e CROSS JOIN sagas AS s ON s.saga_id = e.saga_id "
    "WHERE e.position > ? ORDER BY e.position LIMIT ?"
)
_SELECT_CURSOR = "SELECT position FROM cursors WHERE subscriber = ?"
_SAVE_CURSOR = (
    "INSERT INTO cursors (subscriber, position) VALUES (?, ?) "
    "ON CONFLICT (subscriber) DO UPDATE SET position = excluded.position"
)
_SELECT_DEFINITION = "SELECT text FROM definitions WHERE sha256 = ?"
# load_many, per chunk of ids (the {} is the chunk's placeholders)
_SELECT_HEADERS_IN = f"SELECT {_HEADER_COLUMNS} FROM sagas WHERE saga_id IN ({{}})"
_SELECT_EVENTS_IN = (
    f"SELECT saga_id, {_EVENT_COLUMNS} FROM events WHERE saga_id IN ({{}}) ORDER BY saga_id, seq"
)
_SELECT_DEFINITIONS_IN = "SELECT sha256, text FROM definitions WHERE sha256 IN ({})"
_SELECT_IN_FLIGHT = (
    "SELECT saga_id FROM sagas WHERE status NOT IN ({}) ORDER BY started_at, saga_id".format(
        ", ".join("?" * len(TERMINAL))
    )
)
_TERMINAL = tuple(sorted(TERMINAL))
_SELECT_UNFINISHED = "SELECT saga_id, owner, started_at FROM sagas WHERE status NOT IN ({})".format(
    ", ".join("?" * len(TERMINAL))
)
_SET_OWNER = "UPDATE sagas SET owner = ? WHERE saga_id = ?"
_SELECT_REGISTRATIONS = "SELECT owner, pid, started, boot, pidns FROM owners"
_SELECT_REGISTRATION = f"{_SELECT_REGISTRATIONS} WHERE owner = ?"
_REGISTER = (
    "INSERT OR REPLACE INTO owners (owner, pid, started, boot, pidns, registered_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_UNREGISTER = "DELETE FROM owners WHERE owner = ?"
_IDS_PER_QUERY = 500  # below SQLite's oldest limit on bound parameters (999)
_READ_CACHE_KIB = 16384
"""The page cache of a read connection, at most (SQLite's default is 2 MiB): a ``load_many``
of thousands of sagas walks the events index and table together, and thrashes a small cache."""

_REQUEST_COLUMNS = "request_id, saga_id, kind, data, created_at"
_INSERT_REQUEST = (
    "INSERT INTO requests (saga_id, kind, data, created_at) "
    "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sagas WHERE saga_id = ?)"
)
# Polled by every owner: walk the pending requests only (few), never the owner's sagas (many)
# nor the handled requests (all of history). CROSS JOIN fixes the join order in SQLite.
_SELECT_REQUESTS_OF_OWNER = (
    "SELECT r.request_id, r.saga_id, r.kind, r.data, r.created_at "
    "FROM requests AS r INDEXED BY requests_pending CROSS JOIN sagas AS s "
    "ON s.saga_id = r.saga_id "
    "WHERE r.handled = 0 AND r.request_id > ? AND s.owner = ? ORDER BY r.request_id"
)
_SELECT_REQUESTS_FOR = (
    f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE saga_id = ? AND handled = 0 "
    "ORDER BY request_id"
)
_COMPLETE_REQUEST = "UPDATE requests SET handled = 1 WHERE request_id = ?"

_SELECT_REPLY = "SELECT outcome, output, error FROM inbox WHERE key = ?"
_PUT_REPLY = "INSERT OR REPLACE INTO inbox (key, outcome, output, error) VALUES (?, ?, ?, ?)"
_SELECT_TOMBSTONE = "SELECT 1 FROM tombstones WHERE key = ?"
_PUT_TOMBSTONE = "INSERT OR IGNORE INTO tombstones (key) VALUES (?)"

_EXTERNAL_COLUMNS = "position, event_id, type, key, data, sent_at, consumed_by, consumed_at"
_INSERT_EXTERNAL = (
    "INSERT INTO external_events (event_id, type, key, data, sent_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_SELECT_EXTERNAL_BY_ID = f"SELECT {_EXTERNAL_COLUMNS} FROM external_events WHERE event_id = ?"
_SELECT_EXTERNAL_AFTER = (
    f"SELECT {_EXTERNAL_COLUMNS} FROM external_events WHERE position > ? ORDER BY position LIMIT ?"
)
# claim_event: what the saga took already, else the oldest unclaimed (both on the index)
_SELECT_CLAIMED = (
    f"SELECT {_EXTERNAL_COLUMNS} FROM external_events "
    "WHERE type = ? AND key = ? AND consumed_by = ? ORDER BY position LIMIT 1"
)
_SELECT_UNCLAIMED = (
    f"SELECT {_EXTERNAL_COLUMNS} FROM external_events "
    "WHERE type = ? AND key = ? AND consumed_by IS NULL ORDER BY position LIMIT 1"
)
_CLAIM = (
    "UPDATE external_events SET consumed_by = ?, consumed_at = ? "
    "WHERE position = ? AND consumed_by IS NULL"
)

# An event row as written: (saga_id, seq, type, step, attempt, at, event_id, causation_id, data).
_EventRow = tuple[str, int, str, "str | None", "int | None", float, str, "str | None", str]


def _header(row: Sequence[Any]) -> SagaHeader:
    """A header from a row of ``_HEADER_COLUMNS`` (``input`` is the fifth)."""
    return SagaHeader(*row[:4], _decode(row[4]), *row[5:])


def _event(row: Sequence[Any]) -> StoredEvent:
    position, seq, type_, step, attempt, at, event_id, causation_id, data = row
    data_ = _decode(data)
    return StoredEvent(seq, type_, step, attempt, at, event_id, causation_id, data_, position)


def _event_rows(
    saga_id: str, events: Sequence[StoredEvent], first: int, into: builtins.list[_EventRow]
) -> None:
    """Add the rows of ``events`` to ``into``; ``ValueError`` unless their seqs run from first."""
    seq = first
    for e in events:
        if e.seq != seq:
            raise ValueError(
                f"saga {saga_id!r}: events must have consecutive seqs from {first}, "
                f"got {[e.seq for e in events]}"
            )
        seq += 1
        into.append(
            (
                saga_id,
                e.seq,
                e.type,
                e.step,
                e.attempt,
                e.at,
                e.event_id,
                e.causation_id,
                _encode(e.data),
            )
        )


# A create as written: the saga, its row of _HEADER_COLUMNS and its events' rows.
_Create = tuple[NewSaga, tuple[Any, ...], builtins.list[_EventRow]]


def _create_rows(saga: NewSaga) -> _Create:
    """What ``saga`` writes; ``ValueError`` / ``TypeError`` for what a create refuses (an
    invalid owner, seqs that are not 1..n, an input or data that is not JSON)."""
    if saga.owner is not None:
        _check_owner(saga.owner)
    rows: builtins.list[_EventRow] = []
    _event_rows(saga.saga_id, saga.events, 1, rows)
    params = (
        saga.saga_id,
        saga.flow,
        saga.version,
        saga.definition,
        _encode(saga.input),
        saga.status,
        saga.reason,
        saga.started_at,
        saga.started_at,
        len(rows),
        saga.owner,
    )
    return saga, params, rows


def _append_rows(
    appends: Sequence[Append],
) -> tuple[builtins.list[_EventRow], dict[str, builtins.list[Any]]]:
    """The event rows of ``appends`` and, per saga, the parameters of its ``_UPDATE_SAGA``:
    ``[new last_seq, status, reason, updated_at, saga_id, expected last_seq]``.

    ``ValueError`` for an append without events or with non-consecutive seqs, ``TypeError`` /
    ``ValueError`` for data that is not JSON, ``SeqConflict`` for an append that does not
    follow the previous append of its saga here (the call conflicts with itself).
    """
    rows: builtins.list[_EventRow] = []
    updates: dict[str, builtins.list[Any]] = {}
    for append in appends:
        saga_id, events = append.saga_id, append.events
        if not events:
            raise ValueError(f"saga {saga_id!r}: an append needs at least one event")
        first = events[0].seq
        _event_rows(saga_id, events, first, rows)
        last = first + len(events) - 1
        update = updates.get(saga_id)
        if update is None:
            updates[saga_id] = [
                last,
                append.status,
                append.reason,
                append.updated_at,
                saga_id,
                first - 1,
            ]
        elif first != update[0] + 1:
            raise SeqConflict(saga_id, first)
        else:
            update[:4] = (last, append.status, append.reason, append.updated_at)
    return rows, updates


def _chunks(items: builtins.list[str]) -> builtins.list[builtins.list[str]]:
    """``items`` in slices of at most ``_IDS_PER_QUERY`` (one query's bound parameters)."""
    return [items[i : i + _IDS_PER_QUERY] for i in range(0, len(items), _IDS_PER_QUERY)]


def _placeholders(sql: str, chunk: Sequence[Any]) -> str:
    """``sql`` with its ``{}`` replaced by one ``?`` per item of ``chunk``."""
    return sql.format(", ".join("?" * len(chunk)))


class _Reader:
    """A thread's read connection, kept in the store's ``threading.local``: when the thread
    ends the local drops it, and a ``weakref.finalize`` closes the connection."""

    __slots__ = ("__weakref__", "db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db


def _close_quietly(db: sqlite3.Connection) -> None:
    """Close a read connection (it writes nothing, so an error closing it loses nothing)."""
    with contextlib.suppress(sqlite3.Error):
        db.close()


def _request(row: Sequence[Any]) -> Request:
    """A request from a row of ``_REQUEST_COLUMNS``."""
    request_id, saga_id, kind, data, created_at = row
    return Request(request_id, saga_id, kind, _decode(data), created_at)


def _external(row: Sequence[Any]) -> ExternalEvent:
    """An external event from a row of ``_EXTERNAL_COLUMNS``."""
    position, event_id, type_, key, data, sent_at, consumed_by, consumed_at = row
    return ExternalEvent(
        position, event_id, type_, key, _decode(data), sent_at, consumed_by, consumed_at
    )


def _ids(saga_ids: Sequence[str]) -> builtins.list[str]:
    """``saga_ids`` without repeats, refusing a lone string (a slip for ``[saga_id]``)."""
    if isinstance(saga_ids, str):
        raise TypeError("saga_ids is a sequence of ids, not one id")
    return builtins.list(dict.fromkeys(saga_ids))


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (it may have been unlinked)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


class _Lock(enum.Enum):
    """What an owner's lock file says of it."""

    HELD = "held"  # there and locked: the owner is alive
    FREE = "free"  # there, unlocked (now removed): nobody holds it
    MISSING = "missing"  # not there (never made, removed on close, or deleted by someone)


def _registration(row: Sequence[Any]) -> ProcessIdentity | None:
    """The process an ``owners`` row (``pid, started, boot, pidns``) records; ``None`` if the
    row is not one this store writes (written by hand: it proves nothing)."""
    pid, started, boot, pidns = row
    if not (isinstance(pid, int) and pid > 0 and isinstance(started, (int, type(None)))
            and isinstance(boot, (str, type(None))) and isinstance(pidns, (str, type(None)))):
        return None
    return ProcessIdentity(pid, started, boot, pidns)


def _database_uri(path: Path) -> str:
    """The ``file:`` URI that opens the existing database at ``path`` and never creates one
    (``mode=rw``), whatever the working directory is later."""
    return f"file:{quote(os.path.abspath(path))}?mode=rw"


def _rollback(db: sqlite3.Connection) -> None:
    """End the open transaction, if any, without writing it (a no-op after COMMIT)."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


class SqliteStore:
    """A :class:`~sagas.stores.SagaStore` in one SQLite file.

    Opening creates the missing directories and file (private: see the module docstring) and,
    for a new or empty file, the schema; with ``create=False`` it creates nothing and raises
    ``StoreMissing`` when there is no store (no file, or an empty one). An existing file must
    be a sagactor store of a schema this code supports, else ``StoreUnavailable`` (the file is
    left untouched), except that an older schema is migrated forward. ``busy_timeout``
    (seconds) is how long an operation waits for another connection's lock before giving up
    with ``StoreUnavailable``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        synchronous: str = "normal",
        *,
        busy_timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        if not isinstance(synchronous, str) or synchronous.lower() not in SYNCHRONOUS:
            raise BadStoreUrl(
                f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.path = Path(path)
        self.synchronous = synchronous.lower()
        self.busy_timeout = busy_timeout
        query = "" if self.synchronous == "normal" else f"?synchronous={self.synchronous}"
        self.url = f"sqlite:///{os.path.abspath(self.path)}{query}"
        self._uri = _database_uri(self.path)
        self._owners_dir = self.path.with_name(self.path.name + ".owners")
        self._lock = threading.Lock()  # the write connection's
        self._owner_fds: dict[str, int] = {}  # owners registered here -> their locked file
        self._inbox = SqliteInbox(self)
        # Reads: each thread's _Reader in _local; _readers holds the finalizers of all the
        # read connections opened (to close them in close()), _reading counts the reads under
        # way (close() waits for them). _readers_lock guards the three and _reads_closed.
        self._local = threading.local()
        self._readers_lock = threading.Condition(threading.Lock())
        self._readers: builtins.set[weakref.finalize] = set()
        self._reading = 0
        self._reads_closed = False
        self._db: sqlite3.Connection | None = self._open(create)

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r})"

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- opening ------------------------------------------------------------------------------

    def _open(self, create: bool) -> sqlite3.Connection:
        if create:
            self._create_file()
        if not self._check_file():
            raise StoreMissing(os.fspath(self.path))
        db = self._connect()
        try:
            self._prepare(db, create)
        except sqlite3.Error as err:
            db.close()
            raise self._translate(err) from err
        except BaseException:
            db.close()
            raise
        return db

    def _create_file(self) -> None:
        """Create the missing directories and an empty database file, private (SQLite gives
        its ``-wal`` and ``-shm`` files the database file's mode); existing ones are kept."""
        try:
            make_private_dirs(self.path.parent)
        except OSError as err:
            raise StoreUnavailable(
                f"saga store {self.path}: cannot create its directory ({err.strerror})"
            ) from err
        try:
            create_private_file(Path(os.path.realpath(self.path)))  # a link's target, if one
        except OSError as err:
            raise StoreUnavailable(
                f"saga store {self.path} cannot be created ({err.strerror})"
            ) from err

    def _connect(self) -> sqlite3.Connection:
        """A new connection to the existing file, in autocommit mode (we issue BEGIN /
        COMMIT); SQLite never creates the file (``mode=rw``)."""
        try:
            return sqlite3.connect(
                self._uri,
                uri=True,
                timeout=self.busy_timeout,  # SQLite's busy timeout: waits for other writers
                isolation_level=None,
                # the write connection is shared by threads (under self._lock); a read
                # connection is used by its thread only, but closed by close() or a finalizer,
                # which may run on another thread
                check_same_thread=False,
            )
        except sqlite3.Error as err:
            raise self._translate(err) from err

    def _check_file(self) -> bool:
        """Whether there is a file; refuse, without opening it with SQLite, one that is not
        empty and not a SQLite file."""
        try:
            with open(self.path, "rb") as file:
                head = file.read(len(_MAGIC))
        except FileNotFoundError:
            return False
        except IsADirectoryError as err:
            raise StoreUnavailable(f"saga store {self.path} is a directory, not a file") from err
        except OSError as err:
            raise StoreUnavailable(
                f"saga store {self.path} cannot be read ({err.strerror})"
            ) from err
        if head and head != _MAGIC:
            raise StoreUnavailable(f"saga store {self.path} is not a SQLite database")
        return True

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
            tables = self._tables(db)
            version = self._schema_version(db, tables)
        self._check_tables(tables, version)
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
                _log.info("created saga store %s (schema version %d)", self.path, SCHEMA_VERSION)
            db.execute("COMMIT")
        finally:
            _rollback(db)

    def _schema_version(self, db: sqlite3.Connection, tables: set[str]) -> int:
        """The file's schema version, if it is one this code can use (or migrate), else
        ``StoreUnavailable``."""
        foreign = StoreUnavailable(
            f"saga store {self.path} is not a sagactor store (a SQLite database with tables "
            f"{', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''})"
        )
        if "meta" not in tables:
            raise foreign
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError as err:  # a 'meta' table of another shape
            raise foreign from err
        if row is None:
            raise foreign
        try:
            version = int(row[0])
        except (TypeError, ValueError) as err:
            raise StoreUnavailable(
                f"saga store {self.path} has an unreadable schema version {row[0]!r}"
            ) from err
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"saga store {self.path}: schema version {version} is newer than this sagactor "
                f"supports ({SCHEMA_VERSION})"
            )
        if version not in _TABLES:
            raise StoreUnavailable(f"saga store {self.path} has unknown schema version {version}")
        return version

    def _check_tables(self, tables: set[str], version: int) -> None:
        """``StoreUnavailable`` if a table of that schema version is missing."""
        missing = _TABLES[version] - tables
        if missing:
            raise StoreUnavailable(
                f"saga store {self.path} is damaged: table(s) {', '.join(sorted(missing))} missing"
            )

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
            if version != start:
                db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),)
                )
            db.execute("COMMIT")
        finally:
            _rollback(db)
        if version != start:
            _log.info("migrated saga store %s from schema %d to %d", self.path, start, version)

    # -- errors -------------------------------------------------------------------------------

    def _translate(self, err: sqlite3.Error) -> Exception:
        """The sagactor error for a sqlite3 error: one line naming the file."""
        if isinstance(err, (sqlite3.InterfaceError, sqlite3.ProgrammingError)):
            return TypeError(f"saga store {self.path}: {err}")  # a value SQLite cannot bind
        name = getattr(err, "sqlite_errorname", "") or ""
        text = str(err)
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
            what = f"is locked by another connection (busy timeout {self.busy_timeout:g} s)"
        elif name.startswith("SQLITE_NOTADB") or "not a database" in text:
            what = "is not a SQLite database"
        elif name.startswith("SQLITE_CORRUPT") or "malformed" in text:
            what = f"is damaged ({text})"
        elif name.startswith("SQLITE_READONLY"):
            what = f"is read-only ({text})"
        elif name.startswith("SQLITE_CANTOPEN"):
            what = "cannot be opened"
        elif name.startswith("SQLITE_FULL"):
            what = "cannot grow: the disk is full"
        else:
            what = f"failed: {text}"
        return StoreUnavailable(f"saga store {self.path} {what}")

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable(f"saga store {self.path} is closed")
        return self._db

    # -- writing ------------------------------------------------------------------------------

    def write(
        self, creates: Sequence[NewSaga], appends: Sequence[Append]
    ) -> builtins.list[tuple[bool, SagaHeader]]:
        """Create sagas, then append to sagas, in one transaction (one commit): all of it is
        written or none of it.

        Each create returns ``(True, header)`` when created and ``(False, existing_header)``
        when the id exists (already, or by an earlier create of this call), in which case
        nothing of that create is written and the call goes on. The insert of the saga row
        decides, under SQLite's write lock, so of concurrent creates of one id (from any
        connection or process) exactly one wins. The headers are those right after the
        creates.

        Then each append's first seq must be its saga's next one (counting this call's
        creates and earlier appends to the same saga), else ``SeqConflict``; an unknown saga
        raises ``UnknownSaga``. The ``UNIQUE(saga_id, seq)`` constraint backs the check up.
        Each saga's status, reason and ``updated_at`` become those of its last append here.

        Refused, with nothing of the call written: a create whose seqs are not 1..n or whose
        ``owner`` is not a valid owner id and an append without events or with
        non-consecutive seqs (``ValueError``), an input or event data that is not JSON
        (``TypeError`` / ``ValueError``), and any append that fails as above.
        """
        new = [_create_rows(saga) for saga in creates]
        rows, updates = _append_rows(appends)
        with self._lock:
            db = self._connection()
            if not new and not updates:
                return []
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    results = self._insert_sagas(db, new)
                    if updates:
                        failure = self._extend_sagas(db, appends, rows, updates, bool(new))
                        if failure is not None:
                            raise failure
                    db.execute("COMMIT")
                finally:
                    _rollback(db)
            except sqlite3.Error as err:
                raise self._translate(err) from err
        return results

    def create(self, saga: NewSaga) -> tuple[bool, SagaHeader]:
        """Create the saga with its first events (seqs 1..n) in one transaction:
        ``write([saga], [])``.

        Returns ``(True, header)`` when created and ``(False, existing_header)`` when the id
        exists, in which case nothing is written. Of concurrent creates of one id (from any
        connection or process) exactly one wins. Raises ``ValueError`` if the seqs are not
        1..n or the ``owner`` is not a valid owner id, and ``TypeError`` / ``ValueError`` if
        the input or an event's data is not JSON.
        """
        return self.write((saga,), ())[0]

    def append(self, batch: Sequence[Append]) -> None:
        """Append to several sagas in one transaction (a group commit): ``write([], batch)``,
        all or nothing.

        Each append's first seq must be its saga's next one (counting earlier appends to the
        same saga in this batch), else ``SeqConflict``; an unknown saga raises ``UnknownSaga``;
        nothing of the batch is written then. Raises ``ValueError`` for an append without
        events or with non-consecutive seqs and ``TypeError`` / ``ValueError`` for data that
        is not JSON. Each saga's status, reason and ``updated_at`` become those of its last
        append here.
        """
        self.write((), batch)

    def _insert_sagas(
        self, db: sqlite3.Connection, creates: builtins.list[_Create]
    ) -> builtins.list[tuple[bool, SagaHeader]]:
        """Insert the sagas whose ids are free, in the open transaction; one result each."""
        results: builtins.list[tuple[bool, SagaHeader]] = []
        defined: builtins.set[str] = set()
        for saga, params, rows in creates:
            try:
                if db.execute(_INSERT_SAGA, params).rowcount == 0:
                    existing = db.execute(_SELECT_HEADER, (saga.saga_id,)).fetchone()
                    results.append((False, _header(existing)))
                    continue
                if saga.definition not in defined:
                    db.execute(_INSERT_DEFINITION, (saga.definition, saga.definition_text))
                    defined.add(saga.definition)
                db.executemany(_INSERT_EVENT, rows)
            except sqlite3.IntegrityError as err:
                if "UNIQUE" in str(err):
                    raise StoreUnavailable(
                        f"saga store {self.path} is inconsistent: saga {saga.saga_id!r} has "
                        "events but no header"
                    ) from err
                raise ValueError(f"saga {saga.saga_id!r} refused by the store: {err}") from err
            results.append((True, _header(params)))
        return results

    def _extend_sagas(
        self,
        db: sqlite3.Connection,
        appends: Sequence[Append],
        rows: builtins.list[_EventRow],
        updates: dict[str, builtins.list[Any]],
        created: bool,
    ) -> Exception | None:
        """Apply the appends in the open transaction; ``None`` if they all fit, else the
        error to raise, found once their writes are undone. If the call ``created`` sagas,
        the appends are undone back to a savepoint, so that the error is found in what they
        saw (the file plus this call's creates); else the whole transaction is rolled back
        (one statement less per append, the common case) and the error found in the file."""
        if created:
            db.execute("SAVEPOINT appends")
        refused: sqlite3.IntegrityError | None = None
        try:
            if db.executemany(_UPDATE_SAGA, updates.values()).rowcount == len(updates):
                db.executemany(_INSERT_EVENT, rows)
                if created:
                    db.execute("RELEASE appends")
                return None
        except sqlite3.IntegrityError as err:
            refused = err
        db.execute("ROLLBACK TO appends" if created else "ROLLBACK")
        return self._append_failure(db, appends, refused)

    def _append_failure(
        self, db: sqlite3.Connection, batch: Sequence[Append], refused: sqlite3.Error | None
    ) -> Exception:
        """Why the appends of ``batch`` failed: the first unknown saga or seq conflict, in
        order, in the file as it is now (or as the open transaction, rolled back to before the
        appends, sees it)."""
        last_seq: dict[str, int] = {}
        for append in batch:
            saga_id = append.saga_id
            if saga_id not in last_seq:
                row = db.execute("SELECT last_seq FROM sagas WHERE saga_id = ?", (saga_id,))
                found = row.fetchone()
                if found is None:
                    return UnknownSaga(saga_id)
                last_seq[saga_id] = found[0]
            first = append.events[0].seq
            last = first + len(append.events) - 1
            taken = db.execute(
                "SELECT 1 FROM events WHERE saga_id = ? AND seq BETWEEN ? AND ? LIMIT 1",
                (saga_id, first, last),
            ).fetchone()
            if first != last_seq[saga_id] + 1 or taken is not None:
                return SeqConflict(saga_id, first)
            last_seq[saga_id] = last
        if refused is not None:  # no conflict: a value the schema refuses (e.g. a NULL type)
            return ValueError(f"batch refused by saga store {self.path}: {refused}")
        first_append = batch[0]  # the conflicting writer went on meanwhile
        return SeqConflict(first_append.saga_id, first_append.events[0].seq)

    # -- reading ------------------------------------------------------------------------------

    def load(self, saga_id: str) -> SagaRecord:
        """The saga's header, definition text and whole log (in seq order), read in one
        transaction so that they agree; ``UnknownSaga`` if absent."""

        def read(db: sqlite3.Connection) -> tuple[Any, Any, builtins.list[Any]]:
            row = db.execute(_SELECT_HEADER, (saga_id,)).fetchone()
            if row is None:
                raise UnknownSaga(saga_id)
            text = db.execute(_SELECT_DEFINITION, (row[3],)).fetchone()
            return row, text, db.execute(_SELECT_EVENTS, (saga_id,)).fetchall()

        row, text, events = self._read(read)
        if text is None:
            raise self._missing_definition(row)
        return SagaRecord(_header(row), text[0], tuple(_event(r) for r in events))

    def load_many(self, saga_ids: Sequence[str]) -> builtins.list[SagaRecord]:
        """The records of the sagas in ``saga_ids``, read in one transaction so that they
        agree: in the order of ``saga_ids``, each saga once (at its first place); ids that do
        not exist are left out.

        A few queries per 500 ids (headers, then all their events at once, then each
        definition once), not one per saga. ``TypeError`` for a lone string.
        """
        wanted = _ids(saga_ids)
        logs: dict[str, builtins.list[StoredEvent]] = {}

        def read(db: sqlite3.Connection) -> tuple[builtins.list[Any], dict[str, str]]:
            headers: builtins.list[Any] = []
            for chunk in _chunks(wanted):
                headers += db.execute(_placeholders(_SELECT_HEADERS_IN, chunk), chunk).fetchall()
                rows = db.execute(_placeholders(_SELECT_EVENTS_IN, chunk), chunk).fetchall()
                # decoded chunk by chunk, so that at most one chunk's rows are held at once
                for saga_id, position, seq, type_, step, attempt, at, event_id, cause, data in rows:
                    event = StoredEvent(seq, type_, step, attempt, at, event_id, cause,
                                        _decode(data), position)  # fmt: skip
                    log = logs.get(saga_id)
                    if log is None:
                        logs[saga_id] = [event]
                    else:
                        log.append(event)
            texts: dict[str, str] = {}
            for chunk in _chunks(builtins.list({row[3] for row in headers})):
                sql = _placeholders(_SELECT_DEFINITIONS_IN, chunk)
                texts.update(db.execute(sql, chunk).fetchall())
            return headers, texts

        headers, texts = self._read(read)
        by_id = {row[0]: row for row in headers}
        records = []
        for saga_id in wanted:
            row = by_id.get(saga_id)
            if row is None:
                continue
            text = texts.get(row[3])
            if text is None:
                raise self._missing_definition(row)
            records.append(SagaRecord(_header(row), text, tuple(logs.get(saga_id, ()))))
        return records

    def _missing_definition(self, row: Sequence[Any]) -> StoreUnavailable:
        """The error for a saga (a row of ``_HEADER_COLUMNS``) whose definition is missing."""
        return StoreUnavailable(
            f"saga store {self.path} is damaged: the definition {row[3]} of saga "
            f"{row[0]!r} is missing"
        )

    def header(self, saga_id: str) -> SagaHeader:
        """The saga's header; ``UnknownSaga`` if absent."""
        row = self._fetch(_SELECT_HEADER, (saga_id,))
        if not row:
            raise UnknownSaga(saga_id)
        return _header(row[0])

    def list(
        self, *, status: str | None = None, flow: str | None = None, limit: int | None = None
    ) -> builtins.list[SagaHeader]:
        """Sagas newest first (``started_at`` then id, both descending), filtered; at most
        ``limit`` of them (all if ``None``)."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if flow is not None:
            where.append("flow = ?")
            params.append(flow)
        sql = f"SELECT {_HEADER_COLUMNS} FROM sagas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, saga_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_header(row) for row in self._fetch(sql, params)]

    def in_flight(self) -> builtins.list[str]:
        """Ids of every saga whose status is not terminal, oldest first."""
        return [saga_id for (saga_id,) in self._fetch(_SELECT_IN_FLIGHT, _TERMINAL)]

    def read_all(self, after: int = 0, limit: int = 1000) -> builtins.list[tuple[str, StoredEvent]]:
        """Up to ``limit`` events of all sagas with ``position > after``, in position order.

        Positions are assigned under SQLite's write lock, so a reader never sees a position
        before a smaller one is committed.
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        rows = self._fetch(_SELECT_ALL_EVENTS, (after, limit))
        return [(row[0], _event(row[1:])) for row in rows]

    def read_log(self, after: int = 0, limit: int = 1000) -> builtins.list[LogEntry]:
        """Up to ``limit`` events with ``position > after``, in position order, each with its
        saga's id and flow name: one query (the events joined to their sagas' headers), read on
        this thread's read connection. Positions become visible in order (see the module
        docstring)."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        return [LogEntry(row[0], row[1], _event(row[2:]))
                for row in self._fetch(_SELECT_LOG, (after, limit))]

    def last_position(self) -> int:
        """The position of the newest saga event (0 if none)."""
        rows = self._fetch("SELECT COALESCE(MAX(position), 0) FROM events", ())
        return int(rows[0][0])

    def definition(self, sha256: str) -> str:
        """The flow text stored under that sha256; ``KeyError`` if absent."""
        row = self._fetch(_SELECT_DEFINITION, (sha256,))
        if not row:
            raise KeyError(sha256)
        return row[0][0]

    def _fetch(self, sql: str, params: Sequence[Any]) -> builtins.list[Any]:
        """The rows of one reading statement, run in autocommit on this thread's read
        connection (so it sees everything committed before it starts)."""
        db = self._start_read()
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise self._translate(err) from err
        finally:
            self._end_read()

    def _read(self, read: Callable[[sqlite3.Connection], _T]) -> _T:
        """``read(db)`` on this thread's read connection, in one read transaction (so its
        statements see one snapshot), ended before returning."""
        db = self._start_read()
        try:
            db.execute("BEGIN")
            try:
                return read(db)
            finally:
                _rollback(db)
        except sqlite3.Error as err:
            raise self._translate(err) from err
        finally:
            self._end_read()

    def _start_read(self) -> sqlite3.Connection:
        """This thread's read connection, opened on first use; counts a read under way until
        ``_end_read`` (``close()`` waits for it). ``StoreUnavailable`` once closed."""
        with self._readers_lock:
            if self._reads_closed:
                raise StoreUnavailable(f"saga store {self.path} is closed")
            self._reading += 1
        try:
            reader: _Reader | None = getattr(self._local, "reader", None)
            if reader is None:
                reader = self._open_reader()
            elif reader.db.in_transaction:  # a failed ROLLBACK: its snapshot would be stale
                reader.db.execute("ROLLBACK")
            return reader.db
        except sqlite3.Error as err:
            self._end_read()
            raise self._translate(err) from err
        except BaseException:
            self._end_read()
            raise

    def _end_read(self) -> None:
        """Count the read that ``_start_read`` began as done (and wake a waiting ``close()``)."""
        with self._readers_lock:
            self._reading -= 1
            if self._reading == 0:
                self._readers_lock.notify_all()

    def _open_reader(self) -> _Reader:
        """Open this thread's read connection (``query_only``: it never writes)."""
        db = self._connect()
        try:
            db.execute("PRAGMA query_only = ON")
            db.execute(f"PRAGMA cache_size = -{_READ_CACHE_KIB}")
        except sqlite3.Error as err:
            db.close()
            raise self._translate(err) from err
        reader = _Reader(db)
        closer = weakref.finalize(reader, _close_quietly, db)
        closer.atexit = False
        with self._readers_lock:
            self._readers = {c for c in self._readers if c.alive}  # drop ended threads'
            self._readers.add(closer)
        self._local.reader = reader
        return reader

    def _write(self, sql: str, params: Sequence[Any]) -> tuple[int, int | None]:
        """Run one writing statement on its own, committed before it returns (autocommit);
        its ``(rowcount, lastrowid)``."""
        with self._lock:
            db = self._connection()
            try:
                cursor = db.execute(sql, params)
                return cursor.rowcount, cursor.lastrowid
            except sqlite3.Error as err:
                raise self._translate(err) from err

    def _write_many(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        """Run each writing statement with each of its rows of parameters, all in one
        transaction committed before it returns (nothing of them on an error). Nothing to run
        is no transaction."""
        with self._lock:
            db = self._connection()
            if not any(rows for _, rows in statements):
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    for sql, rows in statements:
                        db.executemany(sql, rows)
                    db.execute("COMMIT")
                finally:
                    _rollback(db)
            except sqlite3.Error as err:
                raise self._translate(err) from err

    # -- ownership ----------------------------------------------------------------------------

    def register_owner(self, owner: str) -> None:
        """Declare ``owner`` alive, in every process, until this store object is closed or its
        process dies: an exclusive ``flock`` on ``<db file>.owners/<owner>.lock``, and a
        registration of this process in ``owners`` (see the module docstring).

        Registering an owner twice on one store object is fine. Raises ``ValueError`` for an
        id that is not ``[A-Za-z0-9_.-]{1,128}`` and ``StoreUnavailable`` if the owner is
        alive elsewhere (another store object or process registered it) or the lock file
        cannot be made.
        """
        _check_owner(owner)
        with self._lock:
            db = self._connection()
            if owner in self._owner_fds:
                return
            fd = self._lock_owner(owner)
            try:
                self._register(db, owner)
            except BaseException:
                self._unlock_owner(owner, fd)
                raise
            self._owner_fds[owner] = fd

    def _lock_owner(self, owner: str) -> int:
        """Create and lock the owner's lock file; its descriptor, held until ``close()``."""
        path = self._lock_path(owner)
        deadline = time.monotonic() + _OWNER_GRACE
        try:
            make_private_dirs(self._owners_dir)
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if _same_file(fd, path):
                        return fd
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise self._registered_elsewhere(owner) from None
                    time.sleep(0.001)
                except BaseException:
                    os.close(fd)
                    raise
                # locked by a liveness check of a dead owner, or unlinked by one: try again
                os.close(fd)
        except OSError as err:
            raise StoreUnavailable(
                f"saga store {self.path}: cannot lock owner file {path} ({err.strerror})"
            ) from err

    def _register(self, db: sqlite3.Connection, owner: str) -> None:
        """Record this process as ``owner``'s, unless a live process holds the id already
        (its lock file was deleted), and forget the registrations of processes that are gone."""
        me = this_process()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = []
                for other, *row in db.execute(_SELECT_REGISTRATIONS).fetchall():
                    process = _registration(row)
                    running = None if process is None else process_alive(process)
                    if other == owner and running:
                        raise self._registered_elsewhere(owner)
                    if running is False:
                        gone.append((other,))
                db.executemany(_UNREGISTER, gone)
                db.execute(_REGISTER, (owner, *me, time.time()))
                db.execute("COMMIT")
            finally:
                _rollback(db)
        except sqlite3.Error as err:
            raise self._translate(err) from err

    def _registered_elsewhere(self, owner: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"saga store {self.path}: owner {owner!r} is already registered by a live runtime"
        )

    def _unlock_owner(self, owner: str, fd: int) -> None:
        """Remove the owner's lock file if it is still the one ``fd`` holds (removed while
        locked: registrants re-check), then let the lock go."""
        path = self._lock_path(owner)
        try:
            if _same_file(fd, path):
                os.unlink(path)
        except OSError as err:
            _log.warning("saga store %s: cannot remove %s (%s)", self.path, path, err)
        finally:
            os.close(fd)

    def _unregister(self, db: sqlite3.Connection, owners: builtins.list[str]) -> None:
        """Delete the registrations of ``owners`` (on close). If that fails they stay, and the
        owners count as alive while this process runs: logged, not raised."""
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_UNREGISTER, [(owner,) for owner in owners])
                db.execute("COMMIT")
            finally:
                _rollback(db)
        except sqlite3.Error as err:
            _log.warning("saga store %s: cannot unregister owners %s (%s)", self.path,
                         ", ".join(owners), err)

    def _lock_path(self, owner: str) -> Path:
        return self._owners_dir / f"{owner}.lock"

    def owner_alive(self, owner: str) -> bool:
        """Whether a runtime registered as ``owner`` (in any process, this one included) is
        alive: its lock file is locked, or its registered process still runs (see the module
        docstring).

        A dead owner's stale lock file is removed. A check racing with another check of the
        same dead owner may see it alive, never the reverse. Raises ``ValueError`` for an
        invalid id, ``StoreUnavailable`` if the store is closed or the file cannot be read.
        """
        _check_owner(owner)
        self._connection()
        rows = self._fetch(_SELECT_REGISTRATION, (owner,))
        return self._alive(owner, _registration(rows[0][1:]) if rows else None)

    def _alive(self, owner: str, registered: ProcessIdentity | None) -> bool:
        """Whether ``owner``, whose registration (if any) names the process ``registered``,
        is alive: its lock says so, or else its process does; when neither can tell, it is
        alive unless its lock file is there, unlocked."""
        lock = self._probe_lock(owner)
        if lock is _Lock.HELD:
            return True
        if registered is None:
            return False
        running = process_alive(registered)
        if running is not None:
            return running
        return lock is _Lock.MISSING

    def _probe_lock(self, owner: str) -> _Lock:
        """What ``owner``'s lock file says; a file found unlocked is removed (under the lock
        taken to see it unlocked, so a registrant that opened it re-checks)."""
        path = self._lock_path(owner)
        try:
            while True:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return _Lock.MISSING
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return _Lock.HELD
                    if _same_file(fd, path):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
                        return _Lock.FREE
                    # replaced since we opened it (by a registrant): look at the new file
                finally:
                    os.close(fd)
        except OSError as err:
            raise StoreUnavailable(
                f"saga store {self.path}: cannot check owner file {path} ({err.strerror})"
            ) from err

    def adopt(self, owner: str, saga_ids: Sequence[str] | None = None, *,
              include_failed: bool = False) -> builtins.list[str]:
        """Make ``owner`` the owner of every non-terminal saga (of ``saga_ids`` only, if given)
        that has no owner or a dead one; returns their ids, oldest first.

        One ``BEGIN IMMEDIATE`` transaction: the owners are checked and the sagas taken under
        SQLite's write lock, so of concurrent adopters (any process) one takes each saga; the
        registrations of the dead owners found are deleted in it. ``owner`` itself counts as
        alive (its sagas are not returned); ids in ``saga_ids`` that do not exist, or are
        terminal, are ignored. ``ValueError`` for an invalid id.
        """
        _check_owner(owner)
        wanted = None if saga_ids is None else _ids(saga_ids)
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    rows = self._unfinished(db, wanted, include_failed)
                    owners = {o for _, o, _ in rows if o is not None and o != owner}
                    dead = self._dead(db, owners)
                    adopted = [row for row in rows if row[1] is None or row[1] in dead]
                    db.executemany(_SET_OWNER, [(owner, saga_id) for saga_id, _, _ in adopted])
                    db.executemany(_UNREGISTER, [(o,) for o in dead])
                    db.execute("COMMIT")
                finally:
                    _rollback(db)
            except sqlite3.Error as err:
                raise self._translate(err) from err
        adopted.sort(key=lambda row: (row[2], row[0]))
        return [saga_id for saga_id, _, _ in adopted]

    def _dead(self, db: sqlite3.Connection, owners: builtins.set[str]) -> builtins.set[str]:
        """Which of ``owners`` are dead, their registrations read in the open transaction (an
        id that is not a valid owner id, written by hand, is nobody's: dead)."""
        if not owners:
            return set()
        registered = {o: _registration(row) for o, *row in db.execute(_SELECT_REGISTRATIONS)}
        return {o for o in owners
                if not _OWNER_ID.fullmatch(o) or not self._alive(o, registered.get(o))}

    @staticmethod
    def _unfinished(
        db: sqlite3.Connection, saga_ids: builtins.list[str] | None, include_failed: bool = False
    ) -> builtins.list[tuple[str, str | None, float]]:
        """``(saga_id, owner, started_at)`` of the non-terminal sagas (of ``saga_ids``), and of
        the failed ones too with ``include_failed``."""
        # the statement excludes three statuses: repeating one keeps its placeholders valid
        excluded = ("completed", "compensated", "compensated") if include_failed else _TERMINAL
        if saga_ids is None:
            return db.execute(_SELECT_UNFINISHED, excluded).fetchall()
        rows = []
        for start in range(0, len(saga_ids), _IDS_PER_QUERY):
            chunk = saga_ids[start : start + _IDS_PER_QUERY]
            sql = f"{_SELECT_UNFINISHED} AND saga_id IN ({', '.join('?' * len(chunk))})"
            rows += db.execute(sql, (*excluded, *chunk)).fetchall()
        return rows

    # -- requests -----------------------------------------------------------------------------

    def request(self, saga_id: str, kind: str, data: dict[str, Any] | None = None) -> int:
        """Record a pending request for the saga, committed before it returns; its id.

        Ids increase and are never reused. ``data`` (``None`` means ``{}``) must be a JSON
        object: ``TypeError`` / ``ValueError`` otherwise, as for an empty ``kind``;
        ``UnknownSaga`` if the saga does not exist (checked in the same statement).
        """
        data_json = _request_json(kind, data)
        params = (saga_id, kind, data_json, time.time(), saga_id)
        inserted, request_id = self._write(_INSERT_REQUEST, params)
        if inserted == 0 or request_id is None:
            raise UnknownSaga(saga_id)
        return request_id

    def requests(self, owner: str, after: int = 0) -> builtins.list[Request]:
        """Pending requests with ``request_id > after`` for the sagas ``owner`` owns now, in
        id order."""
        return [_request(row) for row in self._fetch(_SELECT_REQUESTS_OF_OWNER, (after, owner))]

    def requests_for(self, saga_id: str) -> builtins.list[Request]:
        """Pending requests for one saga, in id order (none for an unknown saga)."""
        return [_request(row) for row in self._fetch(_SELECT_REQUESTS_FOR, (saga_id,))]

    def complete_request(self, request_id: int) -> None:
        """Mark the request handled (committed before it returns): it is no longer pending.
        An unknown or already completed id is ignored."""
        self._write(_COMPLETE_REQUEST, (request_id,))

    # -- subscribers' cursors -----------------------------------------------------------------

    def cursor(self, subscriber: str) -> int | None:
        """The position of the last event ``subscriber`` handled, or ``None`` if it has none."""
        rows = self._fetch(_SELECT_CURSOR, (check_subscriber(subscriber),))
        return int(rows[0][0]) if rows else None

    def save_cursor(self, subscriber: str, position: int) -> None:
        """Set ``subscriber``'s cursor to ``position`` (as given, even below its value),
        committed before it returns (one statement in autocommit)."""
        self._write(_SAVE_CURSOR, (check_subscriber(subscriber), check_position(position)))

    def cursors(self) -> dict[str, int]:
        """Every subscriber's cursor, by name."""
        return dict(self._fetch("SELECT subscriber, position FROM cursors", ()))

    def delete_cursor(self, subscriber: str) -> None:
        """Forget ``subscriber``'s cursor; an unknown name is ignored."""
        self._write("DELETE FROM cursors WHERE subscriber = ?", (check_subscriber(subscriber),))

    # -- external events ----------------------------------------------------------------------

    def send_event(
        self,
        type: str,
        key: str,
        data: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        sent_at: float,
    ) -> tuple[ExternalEvent, bool]:
        """Record an external event, committed before it returns: ``(event, True)``, or
        ``(the existing event, False)`` when one with that ``event_id`` exists (nothing is
        written then, whatever the other arguments). Without ``event_id`` a uuid4 hex one is
        made. The ``UNIQUE`` event id decides, so of concurrent sends of one id (any
        connection or process) exactly one records it.

        ``ValueError`` / ``TypeError`` (nothing written) for an invalid type, key, id,
        ``sent_at`` or data that is not a JSON object (``None`` means ``{}``).
        """
        generated = event_id is None
        params = external_event_fields(type, key, data, event_id, sent_at)
        with self._lock:
            db = self._connection()
            try:
                while True:
                    # one statement, in autocommit; the existing row is read after it, on
                    # the same connection (an event is never deleted, only marked consumed)
                    cursor = db.execute(_INSERT_EXTERNAL, params)
                    if cursor.rowcount == 1:
                        position = cursor.lastrowid
                        break
                    if not generated:
                        existing = db.execute(_SELECT_EXTERNAL_BY_ID, (params[0],)).fetchone()
                        return _external(existing), False
                    params = (new_event_id(), *params[1:])  # a uuid4 collision: never, in practice
            except sqlite3.Error as err:
                raise self._translate(err) from err
        return _external((position, *params, None, None)), True

    def events_after(self, position: int = 0, limit: int = 1000) -> builtins.list[ExternalEvent]:
        """Up to ``limit`` external events with a position above ``position``, in position
        order, read on this thread's read connection.

        Positions are assigned under SQLite's write lock, so a reader never sees a position
        before a smaller one is committed.
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        return [_external(row) for row in self._fetch(_SELECT_EXTERNAL_AFTER, (position, limit))]

    def last_event_position(self) -> int:
        """The position of the newest external event (0 if none)."""
        rows = self._fetch("SELECT COALESCE(MAX(position), 0) FROM external_events", ())
        return int(rows[0][0])

    def claim_event(self, type: str, key: str, saga_id: str, *, at: float) -> ExternalEvent | None:
        """The external event of that type and key ``saga_id`` took already, if any; else the
        oldest unclaimed one, taken now (``consumed_by=saga_id``, ``consumed_at=at``) and
        committed before it returns; else ``None``.

        One ``BEGIN IMMEDIATE`` transaction: the event is found and marked under SQLite's
        write lock, so of concurrent claimers (any connection or process) one takes each
        event. ``ValueError`` / ``TypeError`` for an invalid type, key, saga id or ``at``.
        """
        at = check_claim(type, key, saga_id, at)
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute(_SELECT_CLAIMED, (type, key, saga_id)).fetchone()
                    if row is None:
                        row = db.execute(_SELECT_UNCLAIMED, (type, key)).fetchone()
                        if row is not None:
                            db.execute(_CLAIM, (saga_id, at, row[0]))
                            row = (*row[:6], saga_id, at)
                    db.execute("COMMIT")
                finally:
                    _rollback(db)
            except sqlite3.Error as err:
                raise self._translate(err) from err
        return None if row is None else _external(row)

    # -- the service inbox --------------------------------------------------------------------

    @property
    def inbox(self) -> SqliteInbox:
        """This store's durable service inbox (always the same object)."""
        return self._inbox

    def close(self) -> None:
        """Release the owners registered here (their registrations are deleted, then their
        lock files removed) and close the connections, once the reads under way are done;
        further use raises ``StoreUnavailable``. Closing twice is fine."""
        with self._readers_lock:
            self._reads_closed = True
            while self._reading:
                self._readers_lock.wait()
            closers, self._readers = self._readers, set()
        for closer in closers:
            closer()
        with self._lock:
            db, self._db = self._db, None
            owner_fds, self._owner_fds = self._owner_fds, {}
        if db is not None and owner_fds:
            self._unregister(db, builtins.list(owner_fds))
        for owner, fd in owner_fds.items():
            self._unlock_owner(owner, fd)
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as err:
                raise self._translate(err) from err


class SqliteInbox:
    """The durable :class:`actors.InboxStore` of a :class:`SqliteStore` (its ``inbox``).

    Replies live in table ``inbox``, tombstones in ``tombstones``, in the store's file, so they
    survive a crash and are shared by every store object and process using the file. Each
    write is committed before it returns: ``put`` and ``tombstone`` are one statement each on
    the store's write connection, ``write_many`` one transaction. ``get`` and
    ``is_tombstoned`` run on the calling thread's read connection, so they do not wait for
    the store's writes. Thread-safe; raises ``StoreUnavailable`` once the store is closed.
    """

    __slots__ = ("_store",)

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"SqliteInbox({self._store.url!r})"

    def get(self, key: str) -> StoredReply | None:
        """The definitive reply stored under ``key`` (a fresh copy), or ``None``."""
        rows = self._store._fetch(_SELECT_REPLY, (key,))
        if not rows:
            return None
        outcome, output, error = rows[0]
        return StoredReply(outcome, None if output is None else _decode(output), error)

    def put(self, key: str, reply: StoredReply) -> None:
        """Store ``reply`` under ``key``, replacing any earlier one; committed on return.

        ``TypeError`` unless ``reply`` is a :class:`actors.StoredReply` with JSON output.
        """
        self._store._write(_PUT_REPLY, _reply_row(key, reply, "put"))

    def tombstone(self, action_key: str) -> None:
        """Record that ``action_key``'s compensation has started; committed on return."""
        self._store._write(_PUT_TOMBSTONE, (action_key,))

    def is_tombstoned(self, action_key: str) -> bool:
        """Whether :meth:`tombstone` was called for ``action_key`` (by anyone using the file)."""
        return bool(self._store._fetch(_SELECT_TOMBSTONE, (action_key,)))

    def read_many(
        self, keys: Sequence[str], action_keys: Sequence[str]
    ) -> tuple[dict[str, StoredReply], set[str]]:
        """What :meth:`get` gives for each of ``keys`` (only those with a stored reply) and
        which of ``action_keys`` are tombstoned, read in one transaction (a service actor
        looks up a whole batch of commands at once)."""
        keys, action_keys = list(dict.fromkeys(keys)), list(dict.fromkeys(action_keys))

        def read(db: sqlite3.Connection) -> tuple[dict[str, StoredReply], set[str]]:
            replies: dict[str, StoredReply] = {}
            tombstoned: set[str] = set()
            for first in range(0, len(keys), _IDS_PER_QUERY):
                chunk = keys[first:first + _IDS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                for key, outcome, output, error in db.execute(
                        f"SELECT key, outcome, output, error FROM inbox WHERE key IN ({marks})",
                        chunk):
                    replies[key] = StoredReply(outcome, None if output is None else
                                               _decode(output), error)
            for first in range(0, len(action_keys), _IDS_PER_QUERY):
                chunk = action_keys[first:first + _IDS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                tombstoned.update(key for (key,) in db.execute(
                    f"SELECT key FROM tombstones WHERE key IN ({marks})", chunk))
            return replies, tombstoned

        if not keys and not action_keys:
            return {}, set()
        return self._store._read(read)

    def write_many(
        self, replies: Sequence[tuple[str, StoredReply]], tombstones: Sequence[str]
    ) -> None:
        """Store every ``(key, reply)`` of ``replies`` (as :meth:`put`, in order: a later reply
        for a key replaces an earlier one) and every tombstone (as :meth:`tombstone`), in one
        transaction committed before it returns: all of them or none.

        ``TypeError`` (nothing written) for a reply that is not a :class:`actors.StoredReply`
        with JSON output, for ``replies`` given as a mapping or ``tombstones`` as one string.
        """
        if isinstance(replies, (str, Mapping)):
            raise TypeError("replies is a sequence of (key, reply) pairs")
        if isinstance(tombstones, str):
            raise TypeError("tombstones is a sequence of action keys, not one key")
        rows = [_reply_row(key, reply, "write_many") for key, reply in replies]
        keys = [(action_key,) for action_key in tombstones]
        self._store._write_many(((_PUT_REPLY, rows), (_PUT_TOMBSTONE, keys)))


def _reply_row(key: str, reply: StoredReply, method: str) -> tuple[Any, ...]:
    """The ``inbox`` row of ``reply``; ``TypeError`` unless it is a :class:`actors.StoredReply`
    with JSON output (``ValueError`` for NaN or infinity)."""
    if not isinstance(reply, StoredReply):
        raise TypeError(f"SqliteInbox.{method} expects a StoredReply, got {type(reply).__name__}")
    output = None if reply.output is None else _encode_output(reply.output)
    return (key, reply.outcome, output, reply.error)
