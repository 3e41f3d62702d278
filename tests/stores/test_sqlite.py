"""The SQLite store: the store contract, plus what only a file can do wrong."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import sagas.stores
from sagas.errors import BadStoreUrl, SeqConflict, StoreUnavailable
from sagas.stores import Append, MemoryStore, SqliteStore, open_store

from .contract import (
    StoreContract,
    append,
    event,
    new_saga,
    race_appends,
    race_creates,
    run_pair,
    snapshot,
)


class TestSqliteStore(StoreContract):
    def make_store(self, tmp_path: Path) -> SqliteStore:
        return SqliteStore(tmp_path / "sagas.db")


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


def test_two_store_objects_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as a, SqliteStore(tmp_path / "s.db") as b:
        a.create(new_saga("s"))
        assert b.header("s").last_seq == 1
        b.append([append("s", 2, status="completed")])
        assert a.header("s").status == "completed"
        with pytest.raises(SeqConflict):
            a.append([append("s", 2)])
        assert a.create(new_saga("s"))[0] is False


def test_two_store_objects_racing_appends_exactly_one_wins(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as a, SqliteStore(tmp_path / "s.db") as b:
        race_appends(a, b)


def test_two_store_objects_racing_creates_exactly_one_wins(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as a, SqliteStore(tmp_path / "s.db") as b:
        race_creates(a, b)


def test_two_stores_opening_a_new_file_at_once_both_work(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    stores = run_pair(lambda: SqliteStore(path), lambda: SqliteStore(path))
    assert all(isinstance(s, SqliteStore) for s in stores), stores
    for n, store in enumerate(stores):
        store.create(new_saga(f"s{n}"))
    assert [h.saga_id for h in stores[0].list()] == ["s1", "s0"]
    for store in stores:
        store.close()


# -- schema and settings --------------------------------------------------------------------------


def test_schema_is_version_1_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    SqliteStore(path).close()
    db = raw(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "1",
        )
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"meta", "definitions", "sagas", "events"} <= tables
        indexed = {
            r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE type = 'index'") if r[0]
        }
        assert any("(status)" in sql for sql in indexed)
        assert any("(started_at" in sql for sql in indexed)
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
        "schema version 99 is newer than this sagactor supports (1)",
    ),
    "older schema": (_schema_version("0"), "unknown schema version 0"),
    "unreadable schema version": (_schema_version("one"), "schema version"),
    "a table missing": (_missing_table, "events missing"),
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_file_that_is_not_a_usable_store_is_unavailable_and_left_alone(
    tmp_path: Path, kind: str
) -> None:
    make, message = DAMAGED[kind]
    path = tmp_path / "damaged.db"
    make(path)
    before = path.read_bytes()
    for opener in (lambda: SqliteStore(path), lambda: open_store(f"sqlite:///{path}")):
        with pytest.raises(StoreUnavailable) as caught:
            opener()
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


# -- open_store -----------------------------------------------------------------------------------


def test_open_store_memory() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    assert open_store("MEMORY://") is not store


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


@pytest.mark.parametrize("url", ["postgresql://localhost/sagas", "x.db", "redis://"])
def test_an_unknown_scheme_lists_the_supported_ones(url: str) -> None:
    with pytest.raises(BadStoreUrl) as caught:
        open_store(url)
    assert "memory://" in str(caught.value) and "sqlite:///" in str(caught.value)
    assert "sqlite:////" in str(caught.value)


def test_public_exports() -> None:
    assert sorted(sagas.stores.__all__) == sorted(
        [
            "TERMINAL",
            "Append",
            "MemoryStore",
            "NewSaga",
            "SagaHeader",
            "SagaRecord",
            "SagaStore",
            "SqliteStore",
            "StoredEvent",
            "open_store",
        ]
    )
    for name in sagas.stores.__all__:
        assert getattr(sagas.stores, name) is not None
