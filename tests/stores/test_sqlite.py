"""The SQLite store: the store contract, plus what only a file can do wrong."""

from __future__ import annotations

import gc
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import sagas.stores
from actors import Command, Service, StoredReply, handles
from actors._dispatch import Dispatcher
from sagas.errors import BadStoreUrl, SeqConflict, StoreMissing, StoreUnavailable, UnknownSaga
from sagas.stores import (
    Append,
    Fence,
    MemoryStore,
    NewSaga,
    SagaStore,
    SqliteStore,
    open_store,
    partition_of,
)
from sagas.stores._process import ProcessIdentity, this_process
from sagas.stores.contract import (
    FLOW_SHA,
    FLOW_TEXT,
    JOIN_TIMEOUT,
    StoreContract,
    append,
    event,
    new_saga,
    run_pair,
    snapshot,
)
from sagas.stores.sqlite import SqliteInbox
from sagas.stores.sqlite._external import _SELECT_CLAIMED, _SELECT_UNCLAIMED
from sagas.stores.sqlite._requests import _SELECT_REQUESTS_OF_OWNER
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]


class TestSqliteStore(StoreContract):
    def make_store(self, tmp_path: Path) -> SqliteStore:
        return SqliteStore(tmp_path / "sagas.db")

    def open_again(self, store: SagaStore) -> SqliteStore:
        assert isinstance(store, SqliteStore)
        return SqliteStore(store.path)

    def lose_owner_files(self, store: SagaStore, owner: str | None) -> None:
        assert isinstance(store, SqliteStore)
        if owner is None:
            shutil.rmtree(owners_dir(store.path))
        else:
            _lock_file(store.path, owner).unlink()


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection to the file, as another program would open it."""
    return sqlite3.connect(path, isolation_level=None, timeout=10)


def filled_store(path: Path, sagas: int = 50) -> None:
    """A real store with some sagas and events, closed (so everything is in the main file)."""
    with SqliteStore(path) as store:
        for n in range(sagas):
            store.create(new_saga(f"s{n}", started_at=float(n), n_events=3))
        store.append([append(f"s{n}", 4, 3, status="completed") for n in range(sagas)])


# -- persistence and sharing ----------------------------------------------------------------------


def test_sagas_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    with SqliteStore(path) as store:
        store.create(new_saga("s", n_events=2))
        store.append([append("s", 3, status="compensating", reason="r")])
        before = store.load("s"), snapshot(store)
    with SqliteStore(path) as store:
        assert (store.load("s"), snapshot(store)) == before
        store.append([append("s", 4, status="compensated")])
        positions = [e.position for e in store.load("s").events]
        assert positions == sorted(positions) and len(set(positions)) == 4
        assert store.in_flight() == []


def test_two_stores_opening_a_new_file_at_once_both_work(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    stores = run_pair(lambda: SqliteStore(path), lambda: SqliteStore(path))
    assert all(isinstance(s, SqliteStore) for s in stores), stores
    for n, store in enumerate(stores):
        store.create(new_saga(f"s{n}"))
    assert [h.saga_id for h in stores[0].list()] == ["s1", "s0"]
    for store in stores:
        store.close()


def test_opening_the_file_again_in_a_process_keeps_its_other_stores_working(
    tmp_path: Path,
) -> None:
    """POSIX record locks belong to a process: a second store of the same file, opened and
    closed here, must not drop the locks SQLite holds for the first, or another process's
    last close checkpoints and deletes the WAL under it."""
    path = tmp_path / "sagas.db"
    with SqliteStore(path) as store:
        store.create(new_saga("before", n_events=2))
        for _ in range(3):
            SqliteStore(path).close()
            open_store(f"sqlite:///{path}", create=False).close()
        writer = (f"from sagas.stores import SqliteStore\n"
                  f"from sagas.stores.contract import new_saga\n"
                  f"with SqliteStore({str(path)!r}) as other:\n"
                  f"    other.create(new_saga('elsewhere', n_events=2))\n")
        subprocess.run([sys.executable, "-c", writer], check=True, timeout=60)
        assert (tmp_path / "sagas.db-wal").exists()  # the other process was not the last
        store.create(new_saga("after", n_events=2))
        assert {h.saga_id for h in store.list()} == {"before", "elsewhere", "after"}
        assert len(store.load("after").events) == 2


# -- schema and settings --------------------------------------------------------------------------


def test_schema_is_version_6_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    SqliteStore(path).close()
    db = raw(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "6",
        )
        assert db.execute("SELECT value FROM meta WHERE key = 'partitions'").fetchone() == (
            "64",
        )
        assert db.execute("SELECT partition, member, epoch FROM leases").fetchall() == [
            (p, None, 0) for p in range(64)
        ]
        columns = [r[1] for r in db.execute("PRAGMA table_info(events)")]
        assert columns[-2:] == ["member", "epoch"]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {
            "meta",
            "definitions",
            "sagas",
            "events",
            "requests",
            "inbox",
            "tombstones",
            "external_events",
            "cursors",
            "owners",
            "leases",
            "members",
        } <= tables
        indexed = {
            r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE type = 'index'") if r[0]
        }
        assert any("(status)" in sql for sql in indexed)
        assert any("(started_at" in sql for sql in indexed)
        assert any("(owner)" in sql for sql in indexed)
        assert any("(type, key, consumed_by, position)" in sql for sql in indexed)
    finally:
        db.close()


def test_json_columns_are_compact(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        store.create(new_saga("s", input={"a": [1, 2]}))
    db = raw(tmp_path / "s.db")
    try:
        assert db.execute("SELECT input FROM sagas").fetchone() == ('{"a":[1,2]}',)
        assert db.execute("SELECT data FROM events").fetchone() == (
            '{"input":{"a":[1,2]},"deadline_at":null}',
        )
    finally:
        db.close()


def test_creates_the_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "sagas.db"
    with SqliteStore(path) as store:
        store.create(new_saga("s"))
    assert path.is_file()


@pytest.mark.parametrize(
    ("synchronous", "pragma"), [("normal", 1), ("full", 2), ("FULL", 2), ("Normal", 1)]
)
def test_synchronous_is_applied(tmp_path: Path, synchronous: str, pragma: int) -> None:
    with SqliteStore(tmp_path / "s.db", synchronous=synchronous) as store:
        assert store._db is not None
        assert store._db.execute("PRAGMA synchronous").fetchone() == (pragma,)
        assert store.synchronous == synchronous.lower()
        assert store.url.endswith("?synchronous=full") == (pragma == 2)


@pytest.mark.parametrize("synchronous", ["off", "extra", "", "2"])
def test_an_invalid_synchronous_is_a_bad_url(tmp_path: Path, synchronous: str) -> None:
    with pytest.raises(BadStoreUrl):
        SqliteStore(tmp_path / "s.db", synchronous=synchronous)
    with pytest.raises(BadStoreUrl, match="synchronous"):
        open_store(f"sqlite:///{tmp_path}/s.db?synchronous={synchronous}")
    assert list(tmp_path.iterdir()) == []


def test_url_names_the_file_absolutely_and_reopens_it(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db", synchronous="full") as store:
        store.create(new_saga("s"))
        assert store.url == f"sqlite:///{tmp_path / 's.db'}?synchronous=full"
        assert store.url.startswith("sqlite:////")
        again = open_store(store.url)
        assert isinstance(again, SqliteStore) and again.synchronous == "full"
        assert again.header("s") == store.header("s")
        again.close()


# -- files that are not (our) stores --------------------------------------------------------------


V1_SCHEMA = (  # the schema of version 1, as sagactor 0.1 wrote it
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
        last_seq INTEGER NOT NULL
    )""",
    "CREATE INDEX sagas_by_status ON sagas (status)",
    "CREATE INDEX sagas_by_started_at ON sagas (started_at, saga_id)",
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
    "INSERT INTO meta (key, value) VALUES ('schema_version', '1')",
)


def _v1_store(path: Path, *, drop: str | None = None, extra: str | None = None) -> None:
    """A version-1 store with two sagas ('old' running, 'done' completed), closed."""
    db = raw(path)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in V1_SCHEMA:
        db.execute(statement)
    db.execute("INSERT INTO definitions VALUES (?, ?)", (FLOW_SHA, FLOW_TEXT))
    for saga_id, status, last_seq in (("old", "running", 2), ("done", "completed", 1)):
        db.execute(
            "INSERT INTO sagas VALUES (?, 'order', 1, ?, ?, ?, NULL, 1000.0, 1001.0, ?)",
            (saga_id, FLOW_SHA, f'{{"order":"{saga_id}"}}', status, last_seq),
        )
        for seq in range(1, last_seq + 1):
            db.execute(
                "INSERT INTO events (saga_id, seq, type, step, attempt, at, event_id, "
                "causation_id, data) VALUES (?, ?, 'step.started', 'reserve', 1, 1000.5, ?, "
                "NULL, ?)",
                (saga_id, seq, f"{saga_id}-{seq}", f'{{"seq":{seq}}}'),
            )
    if drop:
        db.execute(f"DROP TABLE {drop}")
    if extra:
        db.execute(extra)
    db.close()


V2_SCHEMA = (  # the schema of version 2, as sagactor wrote it before external events
    *V1_SCHEMA[:-1],
    "ALTER TABLE sagas ADD COLUMN owner TEXT",
    "CREATE INDEX sagas_by_owner ON sagas (owner)",
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
    "INSERT INTO meta (key, value) VALUES ('schema_version', '2')",
)


def _v2_store(path: Path, *, drop: str | None = None, extra: str | None = None) -> None:
    """A version-2 store with two sagas ('old' running, owned by 'gone', with a pending
    request; 'done' completed), an inbox reply and a tombstone, closed."""
    db = raw(path)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in V2_SCHEMA:
        db.execute(statement)
    db.close()
    _v2_rows(path)
    db = raw(path)
    if drop:
        db.execute(f"DROP TABLE {drop}")
    if extra:
        db.execute(extra)
    db.close()


def _v2_rows(path: Path) -> None:
    """The rows of :func:`_v2_store`, written into a store of version 2 or later."""
    db = raw(path)
    db.execute("INSERT INTO definitions VALUES (?, ?)", (FLOW_SHA, FLOW_TEXT))
    for saga_id, status, last_seq, owner in (
        ("old", "running", 2, "gone"),
        ("done", "completed", 1, None),
    ):
        db.execute(
            "INSERT INTO sagas VALUES (?, 'order', 1, ?, ?, ?, NULL, 1000.0, 1001.0, ?, ?)",
            (saga_id, FLOW_SHA, f'{{"order":"{saga_id}"}}', status, last_seq, owner),
        )
        for seq in range(1, last_seq + 1):
            db.execute(
                "INSERT INTO events (saga_id, seq, type, step, attempt, at, event_id, "
                "causation_id, data) VALUES (?, ?, 'step.started', 'reserve', 1, 1000.5, ?, "
                "NULL, ?)",
                (saga_id, seq, f"{saga_id}-{seq}", f'{{"seq":{seq}}}'),
            )
    db.execute(
        "INSERT INTO requests (saga_id, kind, data, created_at) VALUES "
        "('old', 'cancel', '{\"why\":\"cli\"}', 1002.0)"
    )
    db.execute("INSERT INTO inbox VALUES ('old:reserve', 'succeeded', '{\"id\":1}', NULL)")
    db.execute("INSERT INTO tombstones VALUES ('done:reserve')")
    db.close()


V3_SCHEMA = (  # the schema of version 3, as sagactor wrote it before the event bus's cursors
    *V2_SCHEMA[:-1],
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
    "INSERT INTO meta (key, value) VALUES ('schema_version', '3')",
)


def _v3_store(path: Path, *, drop: str | None = None, extra: str | None = None) -> None:
    """A version-3 store: the version-2 one (see :func:`_v2_store`) with one external event
    ('pay-1', consumed by 'old'), closed."""
    db = raw(path)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in V3_SCHEMA:
        db.execute(statement)
    db.close()
    _v2_rows(path)
    db = raw(path)
    db.execute(
        "INSERT INTO external_events (event_id, type, key, data, sent_at, consumed_by, "
        "consumed_at) VALUES ('pay-1', 'Paid', 'o-1', '{\"n\":1}', 5.0, 'old', 6.0)"
    )
    if drop:
        db.execute(f"DROP TABLE {drop}")
    if extra:
        db.execute(extra)
    db.close()


V4_SCHEMA = (  # the schema of version 4, as sagactor wrote it before owners' registrations
    *V3_SCHEMA[:-1],
    """CREATE TABLE cursors (
        subscriber TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "INSERT INTO meta (key, value) VALUES ('schema_version', '4')",
)


def _v4_store(path: Path, *, drop: str | None = None, extra: str | None = None) -> None:
    """A version-4 store: the version-2 one (see :func:`_v2_store`) with a cursor ('mailer'
    at 2), closed."""
    db = raw(path)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in V4_SCHEMA:
        db.execute(statement)
    db.close()
    _v2_rows(path)
    db = raw(path)
    db.execute("INSERT INTO cursors VALUES ('mailer', 2)")
    if drop:
        db.execute(f"DROP TABLE {drop}")
    if extra:
        db.execute(extra)
    db.close()


V5_SCHEMA = (  # the schema of version 5, as sagactor wrote it before partitions and leases
    *V4_SCHEMA[:-1],
    """CREATE TABLE owners (
        owner TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        started INTEGER,
        boot TEXT,
        pidns TEXT,
        registered_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "INSERT INTO meta (key, value) VALUES ('schema_version', '5')",
)


def _v5_store(path: Path, *, drop: str | None = None, extra: str | None = None) -> None:
    """A version-5 store: the version-4 one (see :func:`_v4_store`) with a registration of an
    owner whose process is gone, closed."""
    db = raw(path)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in V5_SCHEMA:
        db.execute(statement)
    db.close()
    _v2_rows(path)
    db = raw(path)
    db.execute("INSERT INTO cursors VALUES ('mailer', 2)")
    db.execute("INSERT INTO owners VALUES ('gone', 999999999, 1, 'boot', 'ns', 1000.0)")
    if drop:
        db.execute(f"DROP TABLE {drop}")
    if extra:
        db.execute(extra)
    db.close()


def _meta(path: Path, key: str, value: str | None) -> None:
    """A store whose ``meta`` has ``value`` under ``key`` (``None``: no such row)."""
    filled_store(path, sagas=3)
    db = raw(path)
    db.execute("DELETE FROM meta WHERE key = ?", (key,))
    if value is not None:
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
    db.close()


def _text(path: Path) -> None:
    path.write_text("order-1,reserve,ok\nthis is not a database\n")


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(16384))


def _header_then_garbage(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + random.Random(8).randbytes(8192))


def _truncated_copy(path: Path) -> None:
    filled_store(path.with_name("whole.db"), sagas=300)
    whole = path.with_name("whole.db").read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def _truncated_to_one_page(path: Path) -> None:
    filled_store(path.with_name("whole.db"), sagas=300)
    path.write_bytes(path.with_name("whole.db").read_bytes()[:4096])


def _other_application(path: Path) -> None:
    db = raw(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.close()


def _other_meta_table(path: Path) -> None:
    db = raw(path)
    db.execute("CREATE TABLE meta (name TEXT, content TEXT)")
    db.execute("INSERT INTO meta VALUES ('generator', 'someone else')")
    db.close()


def _schema_version(value: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        filled_store(path, sagas=3)
        db = raw(path)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
        db.close()

    return make


def _missing_table(path: Path) -> None:
    filled_store(path, sagas=3)
    db = raw(path)
    db.execute("DROP TABLE events")
    db.close()


DAMAGED = {
    "text file": (_text, "not a SQLite database"),
    "random bytes": (_random_bytes, "not a SQLite database"),
    "sqlite header then garbage": (_header_then_garbage, ""),
    "truncated copy": (_truncated_copy, "damaged"),
    "truncated to one page": (_truncated_to_one_page, "damaged"),
    "another application's database": (_other_application, "not a sagactor store"),
    "another application's meta table": (_other_meta_table, "not a sagactor store"),
    "newer schema": (
        _schema_version("99"),
        "schema version 99 is newer than this sagactor supports (6)",
    ),
    "older schema": (_schema_version("0"), "unknown schema version 0"),
    "unreadable schema version": (_schema_version("one"), "schema version"),
    "a table missing": (_missing_table, "events missing"),
    "version 1 with a table missing": (
        lambda path: _v1_store(path, drop="events"),
        "events missing",
    ),
    "version 1 that cannot be migrated": (
        lambda path: _v1_store(path, extra="CREATE TABLE inbox (x)"),
        "table inbox already exists",
    ),
    "version 2 with a table missing": (
        lambda path: _v2_store(path, drop="requests"),
        "requests missing",
    ),
    "version 2 that cannot be migrated": (
        lambda path: _v2_store(path, extra="CREATE TABLE external_events (x)"),
        "table external_events already exists",
    ),
    "version 3 with a table missing": (
        lambda path: _v3_store(path, drop="external_events"),
        "external_events missing",
    ),
    "version 3 that cannot be migrated": (
        lambda path: _v3_store(path, extra="CREATE TABLE cursors (x)"),
        "table cursors already exists",
    ),
    "version 4 with a table missing": (
        lambda path: _v4_store(path, drop="cursors"),
        "cursors missing",
    ),
    "version 4 that cannot be migrated": (
        lambda path: _v4_store(path, extra="CREATE TABLE owners (x)"),
        "table owners already exists",
    ),
    "version 5 with a table missing": (
        lambda path: _v5_store(path, drop="owners"),
        "owners missing",
    ),
    "version 5 that cannot be migrated": (
        lambda path: _v5_store(path, extra="CREATE TABLE leases (x)"),
        "table leases already exists",
    ),
    "a number of partitions that is none": (
        lambda path: _meta(path, "partitions", "many"),
        "is damaged: its number of partitions is 'many'",
    ),
    "no number of partitions": (
        lambda path: _meta(path, "partitions", None),
        "is damaged: its number of partitions is 'missing'",
    ),
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_file_that_is_not_a_usable_store_is_unavailable_and_left_alone(
    tmp_path: Path, kind: str
) -> None:
    make, message = DAMAGED[kind]
    path = tmp_path / "damaged.db"
    make(path)
    before = path.read_bytes()
    for opener in (
        lambda: SqliteStore(path),
        lambda: open_store(f"sqlite:///{path}"),
        lambda: open_store(f"sqlite:///{path}", create=False),
    ):
        with pytest.raises(StoreUnavailable) as caught:
            opener()
        assert not isinstance(caught.value, StoreMissing)
        text = str(caught.value)
        assert str(path) in text and message in text
        assert "\n" not in text
        assert path.read_bytes() == before


def test_a_directory_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreUnavailable, match="directory"):
        SqliteStore(tmp_path / "dir.db")


def test_a_parent_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnavailable, match="directory"):
        SqliteStore(tmp_path / "file" / "sagas.db")


@pytest.mark.parametrize("kind", ["empty file", "empty database"])
def test_an_empty_file_becomes_a_store(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "sagas.db"
    if kind == "empty file":
        path.write_bytes(b"")
    else:
        db = raw(path)
        db.execute("VACUUM")
        db.close()
    with SqliteStore(path) as store:
        store.create(new_saga("s"))
    with SqliteStore(path) as store:
        assert store.header("s").last_seq == 1


# -- locks and the errors of a running store ------------------------------------------------------


def test_a_write_lock_held_beyond_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path, busy_timeout=0.05) as store:
        store.create(new_saga("s"))
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="locked") as caught:
                store.append([append("s", 2)])
            assert str(path) in str(caught.value)
            with pytest.raises(StoreUnavailable, match="locked"):
                store.create(new_saga("t"))
            assert store.header("s").last_seq == 1  # readers are not blocked (WAL)
        finally:
            other.execute("ROLLBACK")
            other.close()
        store.append([append("s", 2)])  # usable again once the lock is gone
        assert store.header("s").last_seq == 2


def test_an_exclusive_lock_at_open_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    filled_store(path, sagas=1)
    other = raw(path)
    try:
        other.execute("PRAGMA locking_mode = EXCLUSIVE")
        other.execute("BEGIN EXCLUSIVE")
        other.execute("UPDATE sagas SET reason = 'held'")
        other.execute("COMMIT")  # in exclusive locking mode the lock stays held
        with pytest.raises(StoreUnavailable, match="locked"):
            SqliteStore(path, busy_timeout=0.05)
    finally:
        other.close()
    with SqliteStore(path) as store:
        assert store.header("s0").reason == "held"


def test_a_unique_violation_is_a_seq_conflict_and_writes_nothing(tmp_path: Path) -> None:
    # The seq check passes (last_seq says 1) but the log already has seq 2: the UNIQUE
    # constraint is the backstop, and its error is translated.
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.create(new_saga("s"))
        store.create(new_saga("t"))
        other = raw(path)
        other.execute(
            "INSERT INTO events (saga_id, seq, type, at, event_id, data) "
            "VALUES ('s', 2, 'step.started', 1.0, 'stray', '{}')"
        )
        other.close()
        before = snapshot(store)
        with pytest.raises(SeqConflict) as caught:
            store.append([append("t", 2), append("s", 2, status="completed")])
        assert (caught.value.saga_id, caught.value.seq) == ("s", 2)
        assert snapshot(store) == before


def test_a_value_sqlite_cannot_store_is_a_type_error_and_writes_nothing(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        store.create(new_saga("s"))
        before = snapshot(store)
        bad = event(2)
        object.__setattr__(bad, "step", ["not", "a", "string"])
        with pytest.raises(TypeError):
            store.append([Append("s", (bad,), "running", None, 1.0)])
        assert snapshot(store) == before


def test_a_store_damaged_while_open_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    filled_store(path, sagas=200)
    with SqliteStore(path) as store:
        whole = path.read_bytes()
        page_size = int.from_bytes(whole[16:18], "big")
        garbage = random.Random(9).randbytes(len(whole) - 2 * page_size)
        with open(path, "r+b") as file:  # keep the header and schema pages, ruin the rest
            file.seek(2 * page_size)
            file.write(garbage)
        with pytest.raises(StoreUnavailable, match="damaged") as caught:
            store.read_all(0, 100_000)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_unique_violation_in_a_write_with_creates_writes_nothing(tmp_path: Path) -> None:
    # as above, with creates in the call: they are undone with the appends
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.create(new_saga("s"))
        other = raw(path)
        other.execute(
            "INSERT INTO events (saga_id, seq, type, at, event_id, data) "
            "VALUES ('s', 2, 'step.started', 1.0, 'stray', '{}')"
        )
        other.close()
        before = snapshot(store)
        with pytest.raises(SeqConflict) as caught:
            store.write([new_saga("n", n_events=2)], [append("n", 3), append("s", 2)])
        assert (caught.value.saga_id, caught.value.seq) == ("s", 2)
        assert snapshot(store) == before


def test_a_create_the_schema_refuses_is_a_value_error_and_writes_nothing(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        saga = new_saga("bad", n_events=2)
        untyped = event(2, saga_id="bad")
        object.__setattr__(untyped, "type", None)  # events.type is NOT NULL
        bad = NewSaga(**{**{f: getattr(saga, f) for f in NewSaga.__dataclass_fields__},
                         "events": (saga.events[0], untyped)})  # fmt: skip
        with pytest.raises(ValueError, match="'bad' refused"):
            store.write([new_saga("good"), bad], [])
        assert snapshot(store) == ([], [])


def _statements(db: sqlite3.Connection) -> list[str]:
    """The statements ``db`` runs from now on (its trace callback appends them)."""
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    return seen


def test_a_write_is_one_transaction(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        store.create(new_saga("old"))
        assert store._db is not None
        seen = _statements(store._db)
        results = store.write(
            [new_saga(f"new-{n}", n_events=3) for n in range(5)],
            [append("old", 2), append("new-0", 4, 2), append("old", 3)],
        )
        store._db.set_trace_callback(None)
        assert [created for created, _ in results] == [True] * 5
        assert seen.count("BEGIN IMMEDIATE") == seen.count("COMMIT") == 1
        assert not any(s.startswith("ROLLBACK") for s in seen)
        assert store.header("old").last_seq == 3 and store.header("new-0").last_seq == 5


def test_load_many_runs_a_few_queries_per_chunk_in_one_read_transaction(
    tmp_path: Path,
) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        ids = [f"s{n}" for n in range(1234)]
        store.write([new_saga(saga_id, n_events=3) for saga_id in ids], [])
        store.header("s0")  # opens this thread's read connection
        seen = _statements(store._local.reader.db)
        assert len(store.load_many(ids)) == 1234
        assert seen[0] == "BEGIN" and seen[-1] == "ROLLBACK"
        selects = [s for s in seen if s.startswith("SELECT")]
        assert len(selects) == 3 * 2 + 1  # headers and events per 500 ids, one definition
        assert not store._local.reader.db.in_transaction


def test_read_log_reads_a_page_with_its_flows_in_one_query_on_the_indexes(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        store.write([new_saga(f"s{n}", n_events=3, flow=f"flow{n % 3}") for n in range(50)], [])
        store.header("s0")  # opens this thread's read connection
        db = store._local.reader.db
        seen = _statements(db)
        page = store.read_log(10, 100)
        assert len(page) == 100 and {e.flow for e in page} == {"flow0", "flow1", "flow2"}
        assert len(seen) == 1
        plan = " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {seen[0]}"))
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan


def test_the_inbox_writes_many_in_one_transaction(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        assert store._db is not None
        seen = _statements(store._db)
        store.inbox.write_many(
            [(f"k{n}", StoredReply("succeeded", {"n": n}, None)) for n in range(3)], ["t1", "t2"]
        )
        store._db.set_trace_callback(None)
        assert seen.count("BEGIN IMMEDIATE") == seen.count("COMMIT") == 1
        db = raw(path)  # committed: another connection sees it all
        try:
            assert db.execute("SELECT count(*) FROM inbox").fetchone() == (3,)
            assert db.execute("SELECT key FROM tombstones ORDER BY key").fetchall() == [
                ("t1",), ("t2",)
            ]  # fmt: skip
        finally:
            db.close()


def test_the_inbox_reads_many_keys_in_one_read_transaction(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        inbox = store.inbox
        inbox.write_many(
            [(f"k{n}", StoredReply("succeeded", {"n": n}, None)) for n in range(0, 1200, 2)],
            [f"k{n}" for n in range(0, 1200, 3)],
        )
        keys = [f"k{n}" for n in range(1200)]
        inbox.get("k0")  # opens this thread's read connection
        seen = _statements(store._local.reader.db)
        replies, tombstoned = inbox.read_many(keys, keys[:600])
        assert seen[0] == "BEGIN" and seen[-1] == "ROLLBACK"
        assert len([s for s in seen if s.startswith("SELECT")]) == 3 + 2  # 500 keys per query
        assert replies == {f"k{n}": StoredReply("succeeded", {"n": n}, None)
                           for n in range(0, 1200, 2)}
        assert tombstoned == {f"k{n}" for n in range(0, 600, 3)}
        assert inbox.read_many([], []) == ({}, set())
        replies["k0"].output["n"] = 99  # a private copy
        assert inbox.get("k0") == StoredReply("succeeded", {"n": 0}, None)


def test_the_inbox_writes_none_of_a_batch_with_output_that_is_not_json(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        good = ("k1", StoredReply("succeeded", {}, None))
        with pytest.raises(TypeError):
            store.inbox.write_many([good, ("k2", StoredReply("succeeded", {"x": {1}}, None))], [])
        with pytest.raises(ValueError):
            store.inbox.write_many([good, ("k2", StoredReply("succeeded", {"x": 1e999}, None))],
                                   ["t"])  # fmt: skip
        assert store.inbox.get("k1") is None and not store.inbox.is_tombstoned("t")


def test_an_inbox_batch_that_cannot_get_the_write_lock_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path, busy_timeout=0.05) as store:
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="locked"):
                store.inbox.write_many([("k", StoredReply("succeeded", {}, None))], ["t"])
            assert store.inbox.get("k") is None  # reads go on meanwhile
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert not store.inbox.is_tombstoned("t")
        store.inbox.write_many([("k", StoredReply("succeeded", {}, None))], ["t"])
        assert store.inbox.is_tombstoned("t")


# -- read connections -----------------------------------------------------------------------------


def test_reads_do_not_wait_for_the_stores_writes(tmp_path: Path) -> None:
    # A shard committing holds the store's write lock; service actors reading the inbox and
    # other readers go on, on their own connections.
    with SqliteStore(tmp_path / "s.db") as store:
        store.create(new_saga("s", n_events=2))
        store.inbox.put("k", StoredReply("succeeded", {"a": 1}, None))
        store.inbox.tombstone("t")
        reads = {
            "get": lambda: store.inbox.get("k"),
            "is_tombstoned": lambda: store.inbox.is_tombstoned("t"),
            "header": lambda: store.header("s").last_seq,
            "load": lambda: len(store.load("s").events),
            "load_many": lambda: len(store.load_many(["s"])),
            "list": lambda: len(store.list()),
            "in_flight": store.in_flight,
            "read_all": lambda: len(store.read_all()),
            "definition": lambda: store.definition(FLOW_SHA),
            "requests_for": lambda: store.requests_for("s"),
        }
        results: dict[str, object] = {}
        with store._lock:  # as a commit under way would
            thread = threading.Thread(
                target=lambda: results.update({name: read() for name, read in reads.items()})
            )
            thread.start()
            thread.join(JOIN_TIMEOUT)
            assert not thread.is_alive(), "a read waited for the write lock"
        assert results == {
            "get": StoredReply("succeeded", {"a": 1}, None),
            "is_tombstoned": True,
            "header": 2,
            "load": 2,
            "load_many": 1,
            "list": 1,
            "in_flight": ["s"],
            "read_all": 2,
            "definition": FLOW_TEXT,
            "requests_for": [],
        }


def test_a_read_sees_every_commit_before_it(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store, SqliteStore(tmp_path / "s.db") as other:
        store.create(new_saga("s"))
        with pytest.raises(UnknownSaga):
            store.load("ghost")  # a failed read ends its transaction too
        assert store.load_many(["s"])[0].header.last_seq == 1
        assert store.header("s").last_seq == 1
        reader = store._local.reader.db
        assert not reader.in_transaction
        for seq in range(2, 6):  # written on this store's write connection, then another's
            (store if seq % 2 else other).append([append("s", seq)])
            assert store.header("s").last_seq == seq
            assert len(store.load("s").events) == seq
            assert store.load_many(["s"])[0].header.last_seq == seq
            other.inbox.put(f"k{seq}", StoredReply("succeeded", {}, None))
            assert store.inbox.get(f"k{seq}") is not None
        assert store._local.reader.db is reader  # one read connection per thread, kept
        assert not reader.in_transaction


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_close_closes_every_read_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    before = _open_fds()
    store = SqliteStore(path)
    store.create(new_saga("s"))
    readers: list[sqlite3.Connection] = []
    barrier = threading.Barrier(5, timeout=JOIN_TIMEOUT)

    def read() -> None:
        store.header("s")
        readers.append(store._local.reader.db)
        barrier.wait()  # all four read connections are open at once
        barrier.wait()  # ... until the store is closed

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    barrier.wait()
    assert len({id(db) for db in readers}) == 4
    store.close()
    assert _open_fds() == before
    for db in readers:
        with pytest.raises(sqlite3.ProgrammingError):
            db.execute("SELECT 1")
    barrier.wait()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    with pytest.raises(StoreUnavailable):
        store.header("s")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_thread_that_ends_closes_its_read_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    baseline = _open_fds()
    with SqliteStore(path) as store:
        store.create(new_saga("s"))
        store.header("s")
        before = _open_fds()
        for _ in range(20):  # threads come and go; their connections do not pile up
            thread = threading.Thread(target=lambda: store.header("s"))
            thread.start()
            thread.join(JOIN_TIMEOUT)
        gc.collect()
        assert len([c for c in store._readers if c.alive]) == 1  # this thread's
        # SQLite may hold back the descriptor of a closed connection while others of the
        # process have the file locked (closing it would drop their POSIX locks); it reuses
        # that one for the next connection, so at most one is held back.
        assert _open_fds() <= before + 1
    assert _open_fds() == baseline


def test_close_waits_for_a_read_under_way(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.create(new_saga("s"))
    reading, release = threading.Event(), threading.Event()

    def slow(db: sqlite3.Connection) -> object:
        reading.set()
        assert release.wait(JOIN_TIMEOUT)
        return db.execute("SELECT last_seq FROM sagas").fetchall()

    results: list[object] = []
    reader = threading.Thread(target=lambda: results.append(store._read(slow)))
    reader.start()
    assert reading.wait(JOIN_TIMEOUT)
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waiting for the read
    with pytest.raises(StoreUnavailable):
        store.header("s")  # no new read starts meanwhile
    release.set()
    for thread in (reader, closer):
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive()
    assert results == [[(1,)]]


# -- open_store -----------------------------------------------------------------------------------


def test_open_store_memory() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    assert open_store("MEMORY://") is not store
    assert store.partitions() == 64
    assert open_store("memory://?partitions=8").partitions() == 8
    assert open_store("memory://", partitions=5).partitions() == 5
    assert MemoryStore(partitions=1).partitions() == 1


# -- partitions -----------------------------------------------------------------------------------


def test_a_store_keeps_the_partitions_it_was_created_with(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    url = f"sqlite:///{path}"
    with open_store(f"{url}?partitions=8&synchronous=full") as store:
        assert store.partitions() == 8 and len(store.leases()) == 8
        store.create(new_saga("s"))
    for reopen in (lambda: open_store(url), lambda: open_store(f"{url}?partitions=8"),
                   lambda: SqliteStore(path, partitions=8),
                   lambda: open_store(url, create=False, partitions=8)):
        with reopen() as store:
            assert store.partitions() == 8
    before = path.read_bytes()
    for reopen in (lambda: open_store(f"{url}?partitions=64"),
                   lambda: open_store(url, partitions=16, create=False),
                   lambda: SqliteStore(path, partitions=64)):
        with pytest.raises(StoreUnavailable) as caught:
            reopen()
        assert f"saga store {path} has 8 partitions, not " in str(caught.value)
        assert "fixed when it is created" in str(caught.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("url", "partitions", "message"),
    [
        ("sqlite:///x.db?partitions=8", 4, "partitions=4 and the URL's partitions=8 disagree"),
        ("sqlite:///x.db", 0, "a number of partitions is from 1 to 16384, got 0"),
        ("sqlite:///x.db", True, "a number of partitions is an int, got bool"),
        ("memory://?partitions=8", 9, "disagree"),
    ],
)
def test_partitions_asked_for_twice_or_out_of_range_are_refused(
    url: str, partitions: Any, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadStoreUrl) as caught:
        open_store(url, partitions=partitions)
    assert message in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("partitions", "error"), [(0, ValueError), (16385, ValueError),
                                                   (8.0, TypeError), ("8", TypeError)])
def test_a_store_object_refuses_a_number_of_partitions_that_is_none_creating_nothing(
    partitions: Any, error: type, tmp_path: Path
) -> None:
    with pytest.raises(error):
        SqliteStore(tmp_path / "sagas.db", partitions=partitions)
    with pytest.raises(error):
        MemoryStore(partitions)
    assert list(tmp_path.iterdir()) == []


def test_open_store_three_slashes_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///.saga/sagas.db")
    assert isinstance(store, SqliteStore)
    assert store.path == Path(".saga/sagas.db") and store.synchronous == "normal"
    store.close()
    assert (tmp_path / ".saga" / "sagas.db").is_file()


def test_open_store_four_slashes_is_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = tmp_path / "elsewhere" / "abs.db"
    url = "sqlite:////" + str(absolute).lstrip("/")
    store = open_store(url)
    assert isinstance(store, SqliteStore) and store.path == absolute
    store.close()
    assert absolute.is_file()
    assert not (tmp_path / str(absolute).lstrip("/")).exists()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "normal"),
        ("?synchronous=normal", "normal"),
        ("?synchronous=full", "full"),
        ("?synchronous=FULL", "full"),
    ],
)
def test_open_store_synchronous_option(tmp_path: Path, query: str, expected: str) -> None:
    store = open_store(f"sqlite:///{tmp_path}/s.db{query}")
    assert isinstance(store, SqliteStore) and store.synchronous == expected
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "memory",
        "memory:/",
        "memory://somewhere",
        "postgresql://localhost/sagas",
        "file:///x.db",
        "/tmp/x.db",
        "x.db",
        "sqlite:",
        "sqlite://",
        "sqlite:///",
        "sqlite:////",
        "sqlite:///dir/",
        "sqlite://host/x.db",
        "sqlite:///:memory:",
        "sqlite:///x.db?synchronous=off",
        "sqlite:///x.db?synchronous",
        "sqlite:///x.db?mode=ro",
        "sqlite:///x.db?synchronous=full&synchronous=normal",
        "sqlite:///x.db?=full",
        "sqlite:///x.db?partitions=0",
        "sqlite:///x.db?partitions=16385",
        "sqlite:///x.db?partitions=eight",
        "sqlite:///x.db?partitions=08",
        "sqlite:///x.db?partitions=-8",
        "sqlite:///x.db?partitions=8&partitions=8",
        "memory://?partitions=0",
        "memory://?color=red",
    ],
)
def test_open_store_refuses_a_bad_url_and_creates_nothing(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadStoreUrl) as caught:
        open_store(url)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["mysql://saga@localhost/sagas", "x.db", "redis://"])
def test_an_unknown_scheme_lists_the_supported_ones(url: str) -> None:
    with pytest.raises(BadStoreUrl) as caught:
        open_store(url)
    assert "memory://" in str(caught.value) and "sqlite:///" in str(caught.value)
    assert "sqlite:////" in str(caught.value)


def test_public_exports() -> None:
    assert sorted(sagas.stores.__all__) == sorted(
        [
            "DEFAULT_PARTITIONS",
            "TERMINAL",
            "Append",
            "Cursors",
            "EventLog",
            "ExternalEvent",
            "ExternalEvents",
            "Fence",
            "Lease",
            "LeaseInfo",
            "Leases",
            "LogEntry",
            "LogReader",
            "MemberInfo",
            "MemoryStore",
            "NewSaga",
            "Ownership",
            "Request",
            "Requests",
            "SagaHeader",
            "SagaRecord",
            "SagaStore",
            "ServiceInbox",
            "SqliteStore",
            "StoreFacet",
            "StoredEvent",
            "Writer",
            "check_subscriber",
            "display_url",
            "open_store",
            "partition_of",
        ]
    )
    for name in sagas.stores.__all__:
        assert getattr(sagas.stores, name) is not None


# -- schema migration -----------------------------------------------------------------------------


def _schema(path: Path) -> dict[str, object]:
    """Every table's columns and every index, to compare two files' schemas."""
    db = raw(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            "version": db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(),
            "columns": {t: db.execute(f"PRAGMA table_info({t})").fetchall() for t in tables},
            "indexes": sorted(
                db.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'")
            ),
        }
    finally:
        db.close()


def test_a_version_1_store_is_migrated_in_place_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_store(path)
    with SqliteStore(path) as store:
        record = store.load("old")
        assert record.header.owner is None and record.header.status == "running"
        assert record.header.input == {"order": "old"} and record.header.last_seq == 2
        assert [e.event_id for e in record.events] == ["old-1", "old-2"]
        assert record.definition_text == FLOW_TEXT
        assert store.in_flight() == ["old"]
        store.register_owner("me")
        assert store.adopt("me") == ["old"]
        store.append([append("old", 3, status="completed")])
        request_id = store.request("old", "cancel")
        assert [r.request_id for r in store.requests("me")] == [request_id]
        store.inbox.put("old:reserve", StoredReply("succeeded", {"id": 1}, None))
        store.create(new_saga("new", owner="me"))
        assert [e.seq for e in store.load("old").events] == [1, 2, 3]
    fresh = tmp_path / "fresh.db"
    SqliteStore(fresh).close()
    assert _schema(path) == _schema(fresh)
    with SqliteStore(path) as store:  # and it opens again as a version-6 store
        assert store.header("old").owner == "me" and store.header("done").owner is None
        assert store.inbox.get("old:reserve") == StoredReply("succeeded", {"id": 1}, None)


def test_a_version_2_store_is_migrated_in_place_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _v2_store(path)
    with SqliteStore(path) as store:
        assert _schema(path)["version"] == ("6",)
        record = store.load("old")
        assert record.header.owner == "gone" and record.header.status == "running"
        assert record.header.input == {"order": "old"} and record.header.last_seq == 2
        assert [e.event_id for e in record.events] == ["old-1", "old-2"]
        assert record.definition_text == FLOW_TEXT
        assert store.header("done").status == "completed"
        ((_, event),) = store.read_all(2)
        assert (event.event_id, event.position) == ("done-1", 3)
        (request,) = store.requests_for("old")
        assert (request.kind, request.data) == ("cancel", {"why": "cli"})
        assert request.created_at == 1002.0
        assert store.inbox.get("old:reserve") == StoredReply("succeeded", {"id": 1}, None)
        assert store.inbox.is_tombstoned("done:reserve")
        assert store.events_after() == []
        sent, _ = store.send_event("Paid", "o-1", {"n": 1}, event_id="pay-1", sent_at=5.0)
        assert sent.position == 1
        taken = store.claim_event("Paid", "o-1", "old", at=6.0)
        assert taken is not None and taken.event_id == "pay-1"
        store.register_owner("me")
        assert store.adopt("me") == ["old"]
        assert [r.request_id for r in store.requests("me")] == [request.request_id]
    fresh = tmp_path / "fresh.db"
    SqliteStore(fresh).close()
    assert _schema(path) == _schema(fresh)
    with SqliteStore(path) as store:  # and it opens again as a version-6 store
        (event,) = store.events_after()
        assert (event.event_id, event.consumed_by, event.consumed_at) == ("pay-1", "old", 6.0)
        assert store.send_event("Paid", "o-1", event_id="pay-1", sent_at=7.0) == (event, False)
        assert store.header("old").owner == "me"


def test_a_version_3_store_is_migrated_in_place_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    _v3_store(path)
    with SqliteStore(path) as store:
        assert _schema(path)["version"] == ("6",)
        assert store.header("old").owner == "gone" and store.header("done").status == "completed"
        log = store.read_log()
        assert [(e.saga_id, e.flow, e.event.event_id) for e in log] == [
            ("old", "order", "old-1"),
            ("old", "order", "old-2"),
            ("done", "order", "done-1"),
        ]
        assert store.last_position() == 3
        (sent,) = store.events_after()
        assert (sent.event_id, sent.consumed_by) == ("pay-1", "old")
        assert store.inbox.get("old:reserve") == StoredReply("succeeded", {"id": 1}, None)
        assert store.cursors() == {}
        store.save_cursor("mailer", 2)
    fresh = tmp_path / "fresh.db"
    SqliteStore(fresh).close()
    assert _schema(path) == _schema(fresh)
    with SqliteStore(path) as store:  # and it opens again as a version-6 store
        assert store.cursor("mailer") == 2


def test_a_version_4_store_is_migrated_in_place_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    _v4_store(path)
    with SqliteStore(path) as store:
        assert _schema(path)["version"] == ("6",)
        assert store.header("old").owner == "gone" and store.cursor("mailer") == 2
        assert store.owner_alive("gone") is False
        store.register_owner("me")
        assert store.adopt("me") == ["old"]
    fresh = tmp_path / "fresh.db"
    SqliteStore(fresh).close()
    assert _schema(path) == _schema(fresh)
    with SqliteStore(path) as store:  # and it opens again as a version-6 store
        assert store.header("old").owner == "me"


def test_a_version_5_store_is_migrated_in_place_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    _v5_store(path)
    with SqliteStore(path) as store:
        assert _schema(path)["version"] == ("6",)
        assert store.header("old").owner == "gone" and store.cursor("mailer") == 2
        assert store.owner_alive("gone") is False
        assert store.partitions() == 64
        assert [(i.member, i.epoch, i.held) for i in store.leases()] == [(None, 0, False)] * 64
        assert store.writers("old") == [(1, None, None), (2, None, None)]  # written unfenced
        (lease,) = store.acquire("m-1", [partition_of("old", 64)], 60.0)
        store.append([append("old", 3)], fence=Fence.of("m-1", [lease]))
        assert store.writers("old")[-1] == (3, "m-1", 1)
    fresh = tmp_path / "fresh.db"
    SqliteStore(fresh).close()
    assert _schema(path) == _schema(fresh)
    with SqliteStore(path) as store:  # and it opens again as a version-6 store
        assert [w.member for w in store.writers("old")] == [None, None, "m-1"]


def test_an_old_store_gets_the_partitions_its_migrating_opener_asks_for(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    _v5_store(path)
    with SqliteStore(path, partitions=8) as store:
        assert store.partitions() == 8 and len(store.leases()) == 8
    with SqliteStore(path) as store:
        assert store.partitions() == 8


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_two_stores_opening_an_old_file_at_once_migrate_it_once(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / f"v{version}.db"
    {1: _v1_store, 2: _v2_store, 3: _v3_store, 4: _v4_store, 5: _v5_store}[version](path)
    stores = run_pair(lambda: SqliteStore(path), lambda: SqliteStore(path))
    try:
        assert all(isinstance(s, SqliteStore) for s in stores), stores
        assert [s.header("old").last_seq for s in stores] == [2, 2]
    finally:
        for store in stores:
            if isinstance(store, SqliteStore):
                store.close()
    assert _schema(path)["version"] == ("6",)


def test_a_file_another_process_migrates_while_it_is_opened_is_not_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tables and the version are read one after the other: another process migrating the
    file in between (here, deterministically, another store object) used to make the opener
    see an old file's tables with the new version, and refuse it as damaged."""
    path = tmp_path / "v4.db"
    _v4_store(path)
    read_version = SqliteStore._schema_version
    migrated = []

    def version_after_another_migrates(self: SqliteStore, db: sqlite3.Connection,
                                       tables: set[str]) -> int:
        if not migrated:
            migrated.append(True)
            SqliteStore(path).close()  # another opener migrates the file meanwhile
        return read_version(self, db, tables)

    monkeypatch.setattr(SqliteStore, "_schema_version", version_after_another_migrates)
    with SqliteStore(path) as store:
        assert store.header("old").last_seq == 2
    assert migrated


# -- ownership across store objects and processes -------------------------------------------------


def owners_dir(path: Path) -> Path:
    return path.with_name(path.name + ".owners")


def _lock_file(path: Path, owner: str) -> Path:
    return owners_dir(path) / f"{owner}.lock"


def test_a_registered_owner_holds_a_lock_file_until_close(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.register_owner("rt-1")
    assert _lock_file(path, "rt-1").is_file()
    store.close()
    assert not _lock_file(path, "rt-1").exists()
    with SqliteStore(path) as other:
        assert other.owner_alive("rt-1") is False


def test_flock_makes_an_owner_alive_for_another_store_object_of_the_process(
    tmp_path: Path,
) -> None:
    # flock locks belong to the open file, not the process: a second open() of the lock file
    # in this process conflicts with the first, so a second store object sees the owner alive.
    path = tmp_path / "s.db"
    with SqliteStore(path) as a, SqliteStore(path) as b:
        a.register_owner("rt-1")
        a.create(new_saga("s", owner="rt-1"))
        assert b.owner_alive("rt-1") is True
        b.register_owner("rt-2")
        assert b.adopt("rt-2") == []
        with pytest.raises(StoreUnavailable, match="already registered"):
            b.register_owner("rt-1")
        assert a.owner_alive("rt-1") is True  # b's failed attempt released nothing
        a.close()
        assert b.owner_alive("rt-1") is False
        assert b.adopt("rt-2") == ["s"]


def test_a_stale_lock_file_is_a_dead_owner_and_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        lock = _lock_file(path, "crashed")
        lock.parent.mkdir()
        lock.write_bytes(b"")  # left behind, unlocked
        store.create(new_saga("s", owner="crashed"))
        assert store.owner_alive("crashed") is False
        assert not lock.exists()
        lock.write_bytes(b"")
        store.register_owner("me")
        assert store.adopt("me") == ["s"]
        assert not lock.exists()
        store.register_owner("crashed")  # the id can be registered again
        assert store.owner_alive("crashed") is True


def test_an_owner_id_in_the_file_that_is_not_a_valid_id_is_dead(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.create(new_saga("s"))
    bystander = tmp_path / "s.db.lock"  # what "<db>.owners/../s.db" + ".lock" would name
    bystander.write_text("not ours")
    db = raw(path)
    db.execute("UPDATE sagas SET owner = '../s.db'")  # written by hand: never a file name
    db.close()
    with SqliteStore(path) as store:
        store.register_owner("me")  # makes <db>.owners/, so the path would resolve
        assert store.adopt("me") == ["s"]
    assert bystander.read_text() == "not ours"


OWNER_PROCESS = """
import sys
from sagas.stores import SqliteStore

store = SqliteStore(sys.argv[1])
store.register_owner(sys.argv[2])
print("registered", flush=True)
sys.stdin.readline()
store.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def _read_line(proc: subprocess.Popen[str], timeout: float = JOIN_TIMEOUT) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the owner process said nothing"
    return proc.stdout.readline().strip()


@contextmanager
def owner_process(path: Path, owner: str) -> Iterator[subprocess.Popen[str]]:
    """Another process with a store on ``path`` that registered ``owner`` (said ``registered``).

    Its store closes when it reads a line; it exits when it reads another (or is killed).
    """
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER_PROCESS, str(path), owner],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        line = _read_line(proc)
        if line != "registered":
            proc.kill()
            _, err = proc.communicate(timeout=JOIN_TIMEOUT)
            pytest.fail(f"the owner process did not register: {line!r} {err}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=JOIN_TIMEOUT)


def test_an_owner_killed_by_sigkill_is_dead_and_its_sagas_adoptable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.create(new_saga("theirs", owner="child"))
        store.create(new_saga("finished", owner="child", status="completed"))
        store.register_owner("me")
        with owner_process(path, "child") as proc:
            assert store.owner_alive("child") is True
            assert store.adopt("me") == []
            assert store.adopt("me", ["theirs"]) == []
            assert store.header("theirs").owner == "child"
            proc.kill()  # SIGKILL: no cleanup runs in the child
            proc.wait(timeout=JOIN_TIMEOUT)
            assert _lock_file(path, "child").exists()  # the file stays, its lock is gone
            assert store.owner_alive("child") is False
            assert not _lock_file(path, "child").exists()
            assert store.adopt("me") == ["theirs"]
        assert store.header("theirs").owner == "me"
        assert store.header("finished").owner == "child"


def test_an_owner_that_closes_its_store_is_dead(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store, owner_process(path, "child") as proc:
        assert proc.stdin is not None
        assert store.owner_alive("child") is True
        with pytest.raises(StoreUnavailable, match="already registered"):
            store.register_owner("child")
        proc.stdin.write("close\n")
        proc.stdin.flush()
        assert _read_line(proc) == "closed"
        assert not _lock_file(path, "child").exists()
        assert store.owner_alive("child") is False
        store.register_owner("child")  # free again
        assert store.owner_alive("child") is True


def _lose(path: Path, lost: str, owner: str) -> None:
    """Delete the owners directory, or only ``owner``'s lock file, behind the store's back."""
    if lost == "the owners directory":
        shutil.rmtree(owners_dir(path))
    else:
        _lock_file(path, owner).unlink()


LOST = ["the owners directory", "its lock file"]


@pytest.mark.parametrize("lost", LOST)
def test_an_owner_in_another_process_keeps_its_sagas_when_its_lock_files_are_deleted(
    tmp_path: Path, lost: str
) -> None:
    # issue 13: `saga resume` after `rm -r <db>.owners` took the sagas of a running batch
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.create(new_saga("theirs", started_at=1.0, owner="child"))
        store.create(new_saga("orphan", started_at=2.0, owner="crashed"))
        with owner_process(path, "child") as proc:
            _lose(path, lost, "child")
            with SqliteStore(path) as resumer:
                resumer.register_owner("resume")
                assert resumer.owner_alive("child") is True
                assert resumer.adopt("resume") == ["orphan"]
                assert resumer.adopt("resume", ["theirs"], include_failed=True) == []
                with pytest.raises(StoreUnavailable, match="already registered"):
                    resumer.register_owner("child")
                assert not _lock_file(path, "child").exists()  # the refused one's, removed
            assert store.header("theirs").owner == "child"
            proc.kill()  # SIGKILL: really dead now, and no lock file says anything
            proc.wait(timeout=JOIN_TIMEOUT)
            assert store.owner_alive("child") is False
            store.register_owner("me")
            assert store.adopt("me", ["theirs"]) == ["theirs"]


@pytest.mark.parametrize("lost", LOST)
def test_an_owner_that_closes_its_store_after_its_lock_file_was_deleted_is_dead(
    tmp_path: Path, lost: str
) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store, owner_process(path, "child") as proc:
        assert proc.stdin is not None
        store.create(new_saga("theirs", owner="child"))
        _lose(path, lost, "child")
        assert store.owner_alive("child") is True
        proc.stdin.write("close\n")
        proc.stdin.flush()
        assert _read_line(proc) == "closed"
        assert proc.poll() is None  # its process runs on: its registration is what ended
        assert store.owner_alive("child") is False
        assert store.adopt("me") == ["theirs"]


def _zombie(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` and wait until it is a zombie (exited, not reaped)."""
    proc.send_signal(signal.SIGKILL)
    eventually(lambda: Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0]
               == "Z", JOIN_TIMEOUT, what="the owner process exiting")


def test_an_owner_whose_process_exited_but_is_not_reaped_is_dead(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store, owner_process(path, "child") as proc:
        store.create(new_saga("theirs", owner="child"))
        shutil.rmtree(owners_dir(path))
        _zombie(proc)
        assert store.owner_alive("child") is False
        assert store.adopt("me") == ["theirs"]


def _registrations(path: Path) -> dict[str, tuple[object, ...]]:
    db = raw(path)
    try:
        rows = db.execute("SELECT owner, pid, started, boot, pidns FROM owners").fetchall()
    finally:
        db.close()
    return {owner: tuple(rest) for owner, *rest in rows}


def _register_by_hand(
    path: Path, owner: str, process: ProcessIdentity | tuple[object, ...]
) -> None:
    """A registration as a runtime that did not close its store leaves it."""
    db = raw(path)
    db.execute("INSERT INTO owners VALUES (?, ?, ?, ?, ?, 0.0)", (owner, *process))
    db.close()


def test_a_registration_records_the_process_and_close_deletes_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.register_owner("rt-1")
        assert _registrations(path) == {"rt-1": tuple(this_process())}
        assert this_process().pid == os.getpid() and this_process().started is not None
    assert _registrations(path) == {}


def _gone(process: ProcessIdentity) -> dict[str, ProcessIdentity]:
    """Registrations of processes that are not running, each in its own way."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(timeout=JOIN_TIMEOUT)
    assert process.started is not None
    return {
        "ended": process._replace(pid=ended.pid),
        "pid-reused": process._replace(started=process.started + 1),
        "before-boot": process._replace(boot="an-earlier-boot"),
    }


def test_registrations_of_processes_that_are_gone_are_dead_and_forgotten(tmp_path: Path) -> None:
    # a crashed runtime leaves its registration; its lock file may be gone too
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        gone = _gone(this_process())
        for n, (owner, process) in enumerate(gone.items()):
            _register_by_hand(path, owner, process)
            store.create(new_saga(f"s-{owner}", started_at=float(n), owner=owner))
        for owner in gone:
            assert store.owner_alive(owner) is False, owner
        assert store.adopt("me", ["s-ended"]) == ["s-ended"]
        assert set(_registrations(path)) == {"pid-reused", "before-boot"}
        store.register_owner("me")  # forgets the registrations of processes that are gone
        assert set(_registrations(path)) == {"me"}
        assert store.adopt("me") == ["s-pid-reused", "s-before-boot"]


def test_an_owner_whose_process_cannot_be_seen_is_dead_only_if_its_lock_file_is_free(
    tmp_path: Path,
) -> None:
    # another pid namespace (a container sharing the store's directory): its pids mean
    # nothing here, so the lock file decides; if it was deleted, nobody can be sure: kept
    path = tmp_path / "s.db"
    elsewhere = this_process()._replace(pid=1, pidns="pid:[1]")
    with SqliteStore(path) as store:
        for owner in ("missing", "free"):
            _register_by_hand(path, owner, elsewhere)
            store.create(new_saga(owner, owner=owner))
        _stale_lock_file(path, "free")
        assert store.adopt("me") == ["free"]
        assert store.owner_alive("missing") is True
        assert set(_registrations(path)) == {"missing"}


@pytest.mark.parametrize(
    "row", [("one", 5, "b", "n"), (-1, 5, "b", "n"), (0, 5, "b", "n"), (1, "soon", "b", "n")]
)
def test_a_registration_written_by_hand_proves_nothing(
    tmp_path: Path, row: tuple[object, ...]
) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        _register_by_hand(path, "forged", row)
        store.create(new_saga("s", owner="forged"))
        assert store.owner_alive("forged") is False
        assert store.adopt("me") == ["s"]
        store.register_owner("forged")
        assert _registrations(path)["forged"] == tuple(this_process())


def test_an_id_registered_in_this_process_cannot_be_registered_again_without_its_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as first, SqliteStore(path) as second:
        first.register_owner("rt")
        shutil.rmtree(owners_dir(path))
        with pytest.raises(StoreUnavailable, match="already registered"):
            second.register_owner("rt")
        assert first.owner_alive("rt") is True and second.owner_alive("rt") is True
        first.close()
        assert second.owner_alive("rt") is False
        second.register_owner("rt")
        assert _lock_file(path, "rt").exists()


def _stale_lock_file(path: Path, owner: str) -> None:
    """The lock file of an owner that died without cleaning up: present, unlocked."""
    lock = _lock_file(path, owner)
    lock.parent.mkdir(exist_ok=True)
    lock.write_bytes(b"")


def _after_first_open(
    monkeypatch: pytest.MonkeyPatch, creating: bool, action: Callable[[], None]
) -> list[bool]:
    """Run ``action`` right after the next ``os.open`` of a lock file by a registrant
    (``creating``) or a check: between that open and the ``flock``. Returns ``[ran]``."""
    real_open = os.open
    ran = [False]

    def open_then_act(file: str | os.PathLike[str], how: int, *args: int) -> int:
        fd = real_open(file, how, *args)
        if not ran[0] and bool(how & os.O_CREAT) == creating and str(file).endswith(".lock"):
            ran[0] = True
            action()
        return fd

    monkeypatch.setattr(os, "open", open_then_act)
    return ran


def test_a_registrant_that_opened_a_stale_file_being_removed_locks_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registrant opens the stale file; a check removes it (under its lock); the registrant
    # then gets the lock of a file no path names. It must notice and lock a new file, or every
    # later check would find no file and call the live owner dead.
    path = tmp_path / "s.db"
    with SqliteStore(path) as checker, SqliteStore(path) as owner:
        _stale_lock_file(path, "rt")

        def remove_stale() -> None:
            assert checker.owner_alive("rt") is False
            assert not _lock_file(path, "rt").exists()

        ran = _after_first_open(monkeypatch, True, remove_stale)
        owner.register_owner("rt")
        monkeypatch.undo()
        assert ran == [True]
        assert _lock_file(path, "rt").exists()
        assert checker.owner_alive("rt") is True


def test_a_check_that_opened_a_stale_file_replaced_meanwhile_looks_at_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check opens the stale file; another check removes it and a runtime registers the id
    # anew; the first check then locks the old file. It must look at the new file (alive),
    # not call the owner dead, let alone remove the live owner's file.
    path = tmp_path / "s.db"
    with SqliteStore(path) as checker, SqliteStore(path) as other, SqliteStore(path) as owner:
        _stale_lock_file(path, "rt")

        def replace() -> None:
            assert other.owner_alive("rt") is False
            owner.register_owner("rt")

        ran = _after_first_open(monkeypatch, False, replace)
        alive = checker.owner_alive("rt")
        monkeypatch.undo()
        assert ran == [True]
        assert alive is True
        assert _lock_file(path, "rt").exists()
        assert other.owner_alive("rt") is True


# -- the durable inbox and requests ---------------------------------------------------------------


def test_the_inbox_survives_reopen_and_is_shared_by_store_objects(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    reply = StoredReply("succeeded", {"id": "r-1", "lines": [1, 2]}, None)
    with SqliteStore(path) as a, SqliteStore(path) as b:
        assert isinstance(a.inbox, SqliteInbox)
        a.inbox.put("s:reserve", reply)
        a.inbox.tombstone("s:pay")
        assert b.inbox.get("s:reserve") == reply
        assert b.inbox.is_tombstoned("s:pay") is True
        b.inbox.put("s:ship", StoredReply("rejected", None, "no truck"))
    with SqliteStore(path) as store:
        assert store.inbox.get("s:reserve") == reply
        assert store.inbox.get("s:ship") == StoredReply("rejected", None, "no truck")
        assert store.inbox.is_tombstoned("s:pay") is True
        assert store.inbox.is_tombstoned("s:reserve") is False


def test_an_inbox_write_is_committed_when_put_returns(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.inbox.put("k", StoredReply("succeeded", {"a": 1}, None))
        store.inbox.tombstone("t")
        db = raw(path)  # another connection sees both while the store is still open
        try:
            assert db.execute("SELECT outcome, output, error FROM inbox").fetchall() == [
                ("succeeded", '{"a":1}', None)
            ]
            assert db.execute("SELECT key FROM tombstones").fetchall() == [("t",)]
        finally:
            db.close()


def test_a_closed_stores_inbox_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    inbox = store.inbox
    store.close()
    with pytest.raises(StoreUnavailable):
        inbox.get("k")
    with pytest.raises(StoreUnavailable):
        inbox.put("k", StoredReply("succeeded", {}, None))
    with pytest.raises(StoreUnavailable):
        inbox.tombstone("k")
    with pytest.raises(StoreUnavailable):
        inbox.is_tombstoned("k")


class _Counter(Service):
    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    @handles("reserve")
    def reserve(self, command: Command) -> dict[str, int]:
        self.runs += 1
        return {"run": self.runs}


def test_a_redelivered_command_is_answered_from_the_durable_inbox_after_reopen(
    tmp_path: Path,
) -> None:
    command = Command("c-1", "s", "reserve", "action", "reserve", 1, "s:reserve", {"qty": 1})
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        first = _Counter()
        (reply,) = Dispatcher(first, service_name="inv", instance=0, inbox=store.inbox).process(
            command
        )
        assert (reply.outcome, reply.output, reply.replayed, first.runs) == (
            "succeeded",
            {"run": 1},
            False,
            1,
        )
    with SqliteStore(path) as store:  # a new process, after a crash, would see the same
        again = _Counter()
        (reply,) = Dispatcher(again, service_name="inv", instance=0, inbox=store.inbox).process(
            command
        )
        assert (reply.outcome, reply.output, reply.replayed, again.runs) == (
            "succeeded",
            {"run": 1},
            True,
            0,
        )


def test_requests_survive_reopen_and_ids_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.create(new_saga("s", owner="me"))
        first = store.request("s", "retry", {"from": "cli"})
        second = store.request("s", "cancel")
        store.complete_request(second)
    with SqliteStore(path) as store:
        (pending,) = store.requests("me")
        assert (pending.request_id, pending.kind, pending.data) == (first, "retry", {"from": "cli"})
        assert store.request("s", "cancel") > second


def test_polling_requests_reads_only_the_pending_ones(tmp_path: Path) -> None:
    # An owner polls often; it may own many sagas and the file keeps every handled request.
    with SqliteStore(tmp_path / "s.db") as store:
        assert store._db is not None
        plan = store._db.execute(f"EXPLAIN QUERY PLAN {_SELECT_REQUESTS_OF_OWNER}", (0, "me"))
        steps = [row[3] for row in plan]
        assert any("r USING INDEX requests_pending" in step for step in steps), steps
        assert not any("sagas_by_owner" in step for step in steps), steps


# -- external events across store objects and reopen ----------------------------------------------


def test_external_events_survive_reopen_and_are_shared_by_store_objects(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as sender, SqliteStore(path) as owner:
        sent, _ = sender.send_event("Paid", "o-1", {"amount": 3}, event_id="pay-1", sent_at=1.0)
        assert owner.events_after() == [sent]  # the owner's poller sees another's send
        taken = owner.claim_event("Paid", "o-1", "s1", at=2.0)
        assert taken is not None and taken.position == sent.position
        assert sender.send_event("Paid", "o-1", event_id="pay-1", sent_at=3.0) == (taken, False)
        assert sender.claim_event("Paid", "o-1", "s2", at=4.0) is None
        assert sender.claim_event("Paid", "o-1", "s1", at=5.0) == taken
    with SqliteStore(path) as store:
        assert store.events_after() == [taken]
        later, _ = store.send_event("Paid", "o-1", sent_at=6.0)
        assert later.position > taken.position


def test_a_claim_that_cannot_get_the_write_lock_takes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path, busy_timeout=0.05) as store:
        store.send_event("Paid", "o-1", sent_at=1.0)
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="locked"):
                store.claim_event("Paid", "o-1", "s1", at=2.0)
            with pytest.raises(StoreUnavailable, match="locked"):
                store.send_event("Paid", "o-1", sent_at=3.0)
            assert [e.consumed_by for e in store.events_after()] == [None]  # reads go on
        finally:
            other.execute("ROLLBACK")
            other.close()
        taken = store.claim_event("Paid", "o-1", "s1", at=4.0)
        assert taken is not None and taken.consumed_at == 4.0


def test_claims_find_their_event_through_the_index(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        assert store._db is not None
        for sql, params in (
            (_SELECT_CLAIMED, ("Paid", "o-1", "s")),
            (_SELECT_UNCLAIMED, ("Paid", "o-1")),
        ):
            plan = store._db.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            steps = [row[3] for row in plan]
            assert any("USING INDEX external_events_by_match" in step for step in steps), steps
            assert not any("TEMP B-TREE" in step for step in steps), steps
