"""The PostgreSQL store: the store contract against a real server, plus what only a server can
do wrong (URLs and passwords, databases and schemas, owners in other processes, lost
connections, locks held elsewhere)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from sagas.errors import BadStoreUrl, StoreMissing, StoreUnavailable
from sagas.stores import Fence, Lease, SagaStore, display_url, open_store, partition_of
from sagas.stores.contract import (
    JOIN_TIMEOUT,
    StoreContract,
    append,
    new_saga,
    run_pair,
    saga_in_partition,
)
from tests.postgres_server import (  # noqa: F401 - fixtures
    PostgresServer,
    postgres_server,
    postgres_store_url,
    postgres_url,
    require_postgres,
)
from tests.support import eventually

pytestmark = pytest.mark.slow  # a real PostgreSQL server: CI runs these (and never skips them)

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-Pa55"


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, postgres_store_url: str) -> Iterator[SagaStore]:  # noqa: F811
        self.url = postgres_store_url
        store = open_store(postgres_store_url, create=False)
        yield store
        store.close()

    def open_again(self, store: SagaStore) -> SagaStore:
        return open_store(self.url, create=False)


@pytest.fixture
def psycopg() -> Any:
    """psycopg, for the tests that need the driver but no server."""
    try:
        import psycopg
    except ImportError:
        require_postgres("psycopg is not installed (pip install 'sagactor[postgres]')")
    return psycopg


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and SECRET not in text, text
    return text


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- URLs, and passwords never shown --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://saga:pw@db.example:5433/sagas", "postgresql://saga:***@db.example:5433/sagas"),
        ("postgres://saga@db/sagas", "postgres://saga@db/sagas"),
        ("postgresql://u:p@ss:w/rd@h/db", "postgresql://u:***@h/db"),  # unencoded @ and /
        ("postgresql://u@h/db?password=x&sslmode=require",
         "postgresql://u@h/db?password=***&sslmode=require"),
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("sqlite:///.saga/sagas.db", "sqlite:///.saga/sagas.db"),
        ("memory://", "memory://"),
        ("user:pw@host", "user:***@host"),
        ("", ""),
    ],
)
def test_display_url_masks_the_password(url: str, shown: str) -> None:
    assert display_url(url) == shown


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"postgresql://localhost:{SECRET}@/sagas", "no host named"),
        (f"postgresql://:{SECRET}@localhost/sagas", "no user named"),
        ("postgresql://localhost/sagas", "no user named"),
        (f"postgresql://u:{SECRET}@localhost", "no database named"),
        (f"postgresql://u:{SECRET}@localhost/", "no database named"),
        (f"postgresql://u:{SECRET}@localhost:99999/db", "the port is a number"),
        (f"postgresql://u:{SECRET}@localhost:x/db", "the port is a number"),
        (f"postgresql://u:{SECRET}@[::1/db", "malformed host"),
        (f"postgresql://u:{SECRET}@h/db?color=red", "unknown option 'color'"),
        (f"postgresql://u:x@h/db?password={SECRET}", "unknown option 'password'"),
        (f"postgresql://u:{SECRET}@h/db?sslmode=a&sslmode=b", "given twice"),
        (f"postgresql://u:{SECRET}@h/db?sslmode", "malformed options"),
        (f"postgresql://u:{SECRET}@h/db?connect_timeout=0", "connect_timeout"),
        (f"postgresql://u:{SECRET}%ff@h/db", "not percent-encoded UTF-8"),
        (f"postgresql://u:{SECRET}@h/db#frag", "fragment"),
        (f"postgresql://u:{SECRET}@h/db?host=/run/pg", "named twice"),
        (f"mysql://u:{SECRET}@h/db", "unsupported store URL"),
    ],
)
def test_a_malformed_postgres_url_is_refused_without_showing_its_password(
    url: str, why: str
) -> None:
    with pytest.raises(BadStoreUrl) as caught:
        open_store(url)
    text = _one_line(caught.value)
    assert why in text


def test_the_url_forms_are_parsed_into_connection_parameters() -> None:
    from sagas.stores import _postgres_parts

    assert _postgres_parts("x", "saga:p%40ss%3Aw@db.example:5433/my%20db?sslmode=require") == {
        "user": "saga", "password": "p@ss:w", "host": "db.example", "port": 5433,
        "dbname": "my db", "sslmode": "require",
    }  # fmt: skip
    assert _postgres_parts("x", "saga@[::1]/sagas") == {
        "user": "saga", "password": None, "host": "::1", "port": None, "dbname": "sagas",
    }  # fmt: skip
    assert _postgres_parts("x", "saga@/sagas?host=/run/postgresql&connect_timeout=2") == {
        "user": "saga", "password": None, "host": "/run/postgresql", "port": None,
        "dbname": "sagas", "connect_timeout": "2",
    }  # fmt: skip
    assert _postgres_parts("x", "saga:@h/db")["password"] == ""


def test_without_psycopg_opening_says_which_extra_to_install_in_one_line() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from sagas.errors import StoreUnavailable\n"
        "from sagas.stores import open_store\n"
        "try:\n"
        f"    open_store('postgresql://saga:{SECRET}@127.0.0.1/sagas')\n"
        "except StoreUnavailable as err:\n"
        "    print(err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=JOIN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "saga store postgresql://saga:***@127.0.0.1/sagas needs psycopg 3, which is not "
        "installed here: pip install 'sagactor[postgres]'"
    ]


def test_an_unreachable_server_is_one_line_without_the_password(psycopg: Any) -> None:
    port = _closed_port()
    for create in (True, False):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            open_store(f"postgresql://saga:{SECRET}@127.0.0.1:{port}/sagas", create=create)
        assert not isinstance(caught.value, StoreMissing)
        text = _one_line(caught.value)
        assert text.startswith(f"saga store postgresql://saga:***@127.0.0.1:{port}/sagas "
                               "cannot be reached: ")
        assert "refused" in text.lower()
        assert time.monotonic() - started < 10


def test_a_store_shows_its_url_with_the_password_masked(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    url = postgres_server.url(name, password=SECRET)  # trust authentication takes any password
    for scheme_url in (url, url.replace("postgresql://", "postgres://")):
        with open_store(scheme_url) as store:
            shown = f"postgresql://postgres:***@127.0.0.1:{postgres_server.port}/{name}"
            assert store.url == shown
            assert repr(store) == f"PostgresStore({shown!r})"
            assert repr(store.inbox) == f"PostgresInbox({shown!r})"
            assert SECRET not in repr(vars(store).get("url"))
    store.close()
    with pytest.raises(StoreUnavailable) as caught:
        store.list()
    assert _one_line(caught.value) == f"saga store {shown} is closed"


def test_a_store_over_a_unix_socket(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    url = f"postgresql://postgres@:{postgres_server.port}/{name}?host={postgres_server.sockets}"
    with open_store(url) as store:
        store.create(new_saga("s"))
        assert store.url == url
    with open_store(postgres_url, create=False) as store:
        assert [h.saga_id for h in store.list()] == ["s"]


def test_the_write_session_notices_a_dead_client_soon(postgres_url: str) -> None:  # noqa: F811
    """The write connection holds the owners' locks: the server is told to probe an idle
    client after 10 s (3 probes 5 s apart), to drop one that leaves data unacknowledged for
    20 s, and to check for a client gone every second during a statement."""
    from sagas.stores.postgres import PostgresStore

    with open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        with store._lock:
            db = store._connection()
            shown = {name: db.execute(f"SHOW {name}").fetchone()[0] for name in (  # type: ignore[index]
                "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                "tcp_user_timeout", "client_connection_check_interval", "lock_timeout")}
    assert shown == {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
                     "tcp_keepalives_count": "3", "tcp_user_timeout": "20000",
                     "client_connection_check_interval": "1s", "lock_timeout": "5s"}


# -- databases and schemas ------------------------------------------------------------------------


def _schemas(server: PostgresServer, name: str) -> set[str]:
    with server.admin(name) as db:
        return {n for (n,) in db.execute("SELECT nspname FROM pg_namespace")}


def test_create_false_on_a_missing_database_is_missing_and_creates_nothing(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    name = postgres_server.new_name()
    url = postgres_server.url(name, password=SECRET)
    with pytest.raises(StoreMissing) as caught:
        open_store(url, create=False)
    shown = f"postgresql://postgres:***@127.0.0.1:{postgres_server.port}/{name}"
    assert _one_line(caught.value) == f"no saga store at {shown}"
    assert name not in postgres_server.databases()


def test_create_false_on_a_database_without_the_schema_is_missing_and_creates_nothing(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    before = _schemas(postgres_server, name)
    with pytest.raises(StoreMissing):
        open_store(postgres_url, create=False)
    with postgres_server.admin(name) as db:
        db.execute("CREATE SCHEMA sagactor")  # an empty schema is no store either
    with pytest.raises(StoreMissing):
        open_store(postgres_url, create=False)
    assert _schemas(postgres_server, name) == before | {"sagactor"}


def test_opening_creates_a_missing_database_and_the_schema(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    name = postgres_server.new_name()
    try:
        with open_store(postgres_server.url(name)) as store:
            store.create(new_saga("s"))
        assert name in postgres_server.databases()
        with open_store(postgres_server.url(name), create=False) as store:
            assert [h.saga_id for h in store.list()] == ["s"]
    finally:
        postgres_server.drop_database(name)


def test_a_database_that_cannot_be_created_says_how_in_one_line(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    with postgres_server.admin() as db:
        db.execute("DROP ROLE IF EXISTS plain")
        db.execute("CREATE ROLE plain LOGIN NOCREATEDB")
    name = postgres_server.new_name()
    url = f"postgresql://plain:{SECRET}@127.0.0.1:{postgres_server.port}/{name}"
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)
    text = _one_line(caught.value)
    assert f"database {name!r} does not exist and cannot be created" in text
    assert f"createdb {name}" in text
    assert name not in postgres_server.databases()


def test_several_processes_opening_a_new_database_at_once_share_one_schema(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    code = ("import sys; from sagas.stores import open_store\n"
            "store = open_store(sys.argv[1]); store.create(__import__('sagas.stores.contract', "
            "fromlist=['x']).new_saga(sys.argv[2])); store.close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, postgres_url, f"s{n}"], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for n in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=JOIN_TIMEOUT)
        assert proc.returncode == 0, err
    with open_store(postgres_url, create=False) as store:
        assert sorted(h.saga_id for h in store.list()) == ["s0", "s1", "s2", "s3"]
        assert [e.position for _, e in store.read_all()] == [1, 2, 3, 4]


def test_a_store_keeps_the_partitions_it_was_created_with(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    with open_store(f"{postgres_url}?partitions=8") as store:
        assert store.partitions() == 8 and len(store.leases()) == 8
    with open_store(postgres_url, create=False) as store:
        assert store.partitions() == 8
    with open_store(postgres_url, partitions=8) as store:
        assert store.partitions() == 8
    with open_store(postgres_url) as store:  # no number asked for: the one it has
        assert store.partitions() == 8
    for reopen in (lambda: open_store(f"{postgres_url}?partitions=64"),
                   lambda: open_store(postgres_url, create=False, partitions=16)):
        with pytest.raises(StoreUnavailable) as caught:
            reopen()
        assert "has 8 partitions, not " in _one_line(caught.value)
    with postgres_server.admin(postgres_url.rsplit("/", 1)[1]) as db:
        assert db.execute("SELECT count(*) FROM sagactor.leases").fetchall() == [(8,)]


def test_a_newer_schema_is_refused_in_one_line_and_left_alone(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    with open_store(postgres_url) as store:
        store.create(new_saga("s"))
    name = postgres_url.rsplit("/", 1)[1]
    with postgres_server.admin(name) as db:
        db.execute("UPDATE sagactor.meta SET value = '99' WHERE key = 'schema_version'")
    for create in (True, False):
        with pytest.raises(StoreUnavailable) as caught:
            open_store(postgres_url, create=create)
        assert "schema version 99 is newer than this sagactor supports (3)" in _one_line(
            caught.value)
    with postgres_server.admin(name) as db:
        assert db.execute("SELECT value FROM sagactor.meta WHERE key = 'schema_version'"
                          ).fetchall() == [("99",)]
        assert db.execute("SELECT saga_id FROM sagactor.sagas").fetchall() == [("s",)]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("DROP TABLE sagactor.owners", "is damaged: table(s) owners missing"),
        ("DROP TABLE sagactor.meta", "is not a sagactor store"),
        ("DELETE FROM sagactor.meta", "is not a sagactor store"),
        ("UPDATE sagactor.meta SET value = 'x' WHERE key = 'schema_version'",
         "unreadable schema version 'x'"),
        ("UPDATE sagactor.meta SET value = '0' WHERE key = 'schema_version'",
         "unknown schema version 0"),
        ("UPDATE sagactor.meta SET value = 'many' WHERE key = 'partitions'",
         "is damaged: its number of partitions is 'many'"),
        ("DELETE FROM sagactor.meta WHERE key = 'partitions'",
         "is damaged: its number of partitions is 'missing'"),
        ("DROP TABLE sagactor.leases", "is damaged: table(s) leases missing"),
    ],
)
def test_a_foreign_or_damaged_schema_is_refused_in_one_line(
    postgres_server: PostgresServer, postgres_url: str, damage: str, message: str  # noqa: F811
) -> None:
    open_store(postgres_url).close()
    with postgres_server.admin(postgres_url.rsplit("/", 1)[1]) as db:
        db.execute(damage)
    with pytest.raises(StoreUnavailable) as caught:
        open_store(postgres_url)
    assert message in _one_line(caught.value)


def test_an_older_schema_is_migrated_forward_in_place(
    postgres_server: PostgresServer, postgres_url: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    from sagas.stores.postgres import _schema

    with open_store(postgres_url) as store:
        store.create(new_saga("kept"))
    # a version 4 of the schema that this test makes up: one more table
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", 4)
    monkeypatch.setitem(_schema._TABLES, 4, _schema._TABLES[3] | {"extra"})
    monkeypatch.setitem(_schema._MIGRATIONS, 3, ("CREATE TABLE extra (x integer)",))
    name = postgres_url.rsplit("/", 1)[1]
    version = "SELECT value FROM sagactor.meta WHERE key = 'schema_version'"
    for _ in range(10):  # two processes open it at once: one migrates, the other finds it done
        results = run_pair(lambda: open_store(postgres_url), lambda: open_store(postgres_url))
        assert all(isinstance(r, SagaStore) for r in results), results
        for store in results:
            assert [h.saga_id for h in store.list()] == ["kept"]
            store.close()
        with postgres_server.admin(name) as db:
            assert db.execute(version).fetchall() == [("4",)]
            assert db.execute("SELECT count(*) FROM sagactor.extra").fetchall() == [(0,)]
            db.execute("DROP TABLE sagactor.extra")  # back to version 3 for the next round
            db.execute("UPDATE sagactor.meta SET value = '3' WHERE key = 'schema_version'")


def _columns(server: PostgresServer, name: str) -> dict[str, list[tuple[str, str]]]:
    """Every table of the store's schema: its columns' names and types, in order."""
    with server.admin(name) as db:
        rows = db.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'sagactor' ORDER BY table_name, ordinal_position").fetchall()
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        columns.setdefault(table, []).append((column, kind))
    return columns


def _indexes(server: PostgresServer, name: str) -> list[tuple[str, Any]]:
    """Every index of the store's schema (its name and definition), then every table's
    storage parameters."""
    with server.admin(name) as db:
        return db.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'sagactor' "
            "ORDER BY indexname").fetchall() + db.execute(
            "SELECT c.relname, c.reloptions FROM pg_class AS c JOIN pg_namespace AS n ON "
            "n.oid = c.relnamespace WHERE n.nspname = 'sagactor' AND c.relkind = 'r' "
            "ORDER BY c.relname").fetchall()


def _downgrade_to_version_2(server: PostgresServer, name: str) -> None:
    """Make the store in ``name`` one of schema version 2, as sagactor wrote it before the
    index of the sagas in flight."""
    with server.admin(name) as db:
        db.execute("DROP INDEX sagactor.sagas_in_flight")
        db.execute("ALTER TABLE sagactor.sagas RESET (fillfactor)")
        db.execute("UPDATE sagactor.meta SET value = '2' WHERE key = 'schema_version'")


def _downgrade_to_version_1(server: PostgresServer, name: str) -> None:
    """Make the store in ``name`` one of schema version 1, as sagactor wrote it before the
    partitions: no leases, no members, no writers of events, no number of partitions."""
    _downgrade_to_version_2(server, name)
    with server.admin(name) as db:
        db.execute("DROP TABLE sagactor.leases, sagactor.members")
        db.execute("ALTER TABLE sagactor.events DROP COLUMN member, DROP COLUMN epoch")
        db.execute("DELETE FROM sagactor.meta WHERE key = 'partitions'")
        db.execute("UPDATE sagactor.meta SET value = '1' WHERE key = 'schema_version'")


def test_a_version_1_store_is_migrated_in_place_keeping_its_data(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    fresh_url = postgres_url
    name = postgres_server.create_database()
    try:
        url = postgres_server.url(name)
        with open_store(url) as store:
            store.create(new_saga("old", n_events=2))
        _downgrade_to_version_1(postgres_server, name)
        results = run_pair(lambda: open_store(url, partitions=16),
                           lambda: open_store(url, partitions=16))
        assert all(isinstance(r, SagaStore) for r in results), results
        store, other = results
        other.close()
        with store:
            assert store.partitions() == 16 and len(store.leases()) == 16
            assert store.writers("old") == [(1, None, None), (2, None, None)]
            (lease,) = store.acquire("m-1", [partition_of("old", 16)], 60.0)
            store.append([append("old", 3)], fence=Fence.of("m-1", [lease]))
            assert store.writers("old")[-1] == (3, "m-1", 1)
        open_store(fresh_url).close()
        assert _columns(postgres_server, name) == _columns(
            postgres_server, fresh_url.rsplit("/", 1)[1])
        assert _indexes(postgres_server, name) == _indexes(
            postgres_server, fresh_url.rsplit("/", 1)[1])
        with postgres_server.admin(name) as db:
            assert db.execute("SELECT key, value FROM sagactor.meta ORDER BY key").fetchall() == [
                ("partitions", "16"), ("schema_version", "3")]
    finally:
        postgres_server.drop_database(name)


def test_a_version_1_process_goes_on_writing_while_another_migrates(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    """A rolling upgrade: the events' new columns are nullable, and a version-1 writer names
    the columns it inserts, so its writes go on, unfenced, after the migration."""
    name = postgres_url.rsplit("/", 1)[1]
    with open_store(postgres_url) as store:
        store.create(new_saga("s"))
    _downgrade_to_version_1(postgres_server, name)
    with postgres_server.admin(name) as db:
        columns = [c for (c,) in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'sagactor' AND table_name = 'events' ORDER BY ordinal_position")]
    old = ", ".join(columns)  # what version 1 inserted: these columns, by name
    assert "member" not in columns
    open_store(postgres_url).close()  # another process migrates
    with postgres_server.admin(name) as db:
        db.execute(f"INSERT INTO sagactor.events ({old}) SELECT saga_id, 2, 2, type, step, "
                   "attempt, at, 's-2', causation_id, data FROM sagactor.events WHERE seq = 1")
    with open_store(postgres_url) as store:
        assert store.writers("s") == [(1, None, None), (2, None, None)]


def test_a_version_2_store_gains_the_index_of_the_sagas_in_flight(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    """Version 3 adds an index and a storage parameter, nothing else: a version-2 store keeps
    its data, and a version-2 process still running (its statements unchanged) goes on reading
    and writing."""
    name = postgres_url.rsplit("/", 1)[1]
    with open_store(postgres_url) as store:
        store.create(new_saga("s"))
    fresh = _indexes(postgres_server, name)
    _downgrade_to_version_2(postgres_server, name)
    with postgres_server.admin(name) as db:
        old = db.execute("SELECT pg_backend_pid()").fetchone()
        assert old is not None
        assert _indexes(postgres_server, name) != fresh
        assert "sagas_in_flight" not in [n for n, _ in _indexes(postgres_server, name)]
        assert ("sagas", ["fillfactor=70"]) in fresh
        results = run_pair(lambda: open_store(postgres_url), lambda: open_store(postgres_url))
        assert all(isinstance(r, SagaStore) for r in results), results
        for store in results:
            assert store.in_flight() == ["s"]
            store.close()
        assert _indexes(postgres_server, name) == fresh
        assert db.execute("SELECT value FROM sagactor.meta WHERE key = 'schema_version'"
                          ).fetchall() == [("3",)]
        # a version-2 writer's statements, on a session opened before the migration
        db.execute("UPDATE sagactor.sagas SET status = 'completed' WHERE saga_id = 's'")
        assert db.execute("SELECT saga_id FROM sagactor.sagas WHERE status <> ALL(%s)",
                          (["completed", "compensated", "failed"],)).fetchall() == []
    with open_store(postgres_url) as store:
        assert store.in_flight() == []


def test_the_sagas_in_flight_are_read_by_their_index(
    postgres_server: PostgresServer, postgres_store_url: str  # noqa: F811
) -> None:
    """``in_flight`` and a member's ``claim`` read the sagas not terminal through the partial
    index (its predicate is the terminal statuses, which the statements repeat), not every
    saga ever run."""
    from sagas.stores import TERMINAL
    from sagas.stores.postgres import _leases, _log, _schema

    assert set(re.findall(r"'(\w+)'", _schema.TERMINAL_SQL)) == TERMINAL
    name = postgres_store_url.rsplit("/", 1)[1]
    with open_store(postgres_store_url, create=False) as store:
        store.create(new_saga("late"))
        with postgres_server.admin(name) as db:
            db.execute("INSERT INTO sagactor.sagas (saga_id, flow, version, definition, input, "
                       "status, started_at, updated_at, last_seq) SELECT 'done-' || n, 'f', 1, "
                       "'x', '{}', (ARRAY['completed', 'compensated', 'failed'])[n % 3 + 1], n, "
                       "n, 1 FROM generate_series(1, 20000) AS n")
            db.execute("ANALYZE sagactor.sagas")
            db.execute("SET search_path = sagactor")
            for query in (_log._SELECT_IN_FLIGHT, _leases._SELECT_UNFINISHED):
                plan = "\n".join(row[0] for row in db.execute(f"EXPLAIN {query}"))
                assert "sagas_in_flight" in plan and "Seq Scan" not in plan, plan
        assert store.in_flight() == ["late"]


# -- the server's side of things ------------------------------------------------------------------


def test_positions_become_visible_in_order_across_writers(postgres_url: str) -> None:  # noqa: F811
    """Two store objects (two sessions) append at once while a reader pages through the log
    with a cursor, as the event bus does: it misses nothing (a position visible before a
    smaller one would be skipped for good)."""
    writers = [open_store(postgres_url), open_store(postgres_url)]
    reader = open_store(postgres_url)
    try:
        ids = [[f"{w}-{n}" for n in range(30)] for w in ("a", "b")]
        for store, mine in zip(writers, ids, strict=True):
            store.write([new_saga(saga_id) for saga_id in mine], [])
        after = reader.last_position()
        first = after

        def write(store: SagaStore, mine: list[str]) -> None:
            for seq in range(2, 30):
                store.append([append(saga_id, seq) for saga_id in mine])

        threads = [threading.Thread(target=write, args=pair)
                   for pair in zip(writers, ids, strict=True)]
        for thread in threads:
            thread.start()
        seen: list[int] = []
        while True:
            running = any(thread.is_alive() for thread in threads)
            while page := reader.read_all(after, 250):
                seen += [event.position for _, event in page]
                after = page[-1][1].position
            if not running:
                break
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        assert seen == list(range(first + 1, first + 1 + 2 * 30 * 28))
    finally:
        for store in (*writers, reader):
            store.close()


def _take_over_once_expired(server: PostgresServer, url: str, b: SagaStore,
                            pool: ThreadPoolExecutor) -> Future[list[Lease]]:
    """Once the lease of partition 0 has expired, ``m-b`` acquires it (on ``b``, in ``pool``):
    its future, returned when it is done or waits for a lock (a session of the store's
    database waits for one)."""
    eventually(lambda: not b.leases()[0].held, what="the lease expiring")
    acquires = pool.submit(b.acquire, "m-b", [0], 60.0)
    with server.admin(url.rsplit("/", 1)[1]) as db:
        eventually(lambda: acquires.done() or db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'").fetchone()[0] == 1, what="the acquirer waiting")
    return acquires


def test_a_takeover_waits_for_a_fenced_write_under_way(
    postgres_server: PostgresServer, postgres_store_url: str  # noqa: F811
) -> None:
    """A fenced write locks the leases it checked until it ends: a member taking the partition
    over meanwhile (its lease expired while the write ran) waits for the write to commit, so
    the write lands before the new tenure begins, never after."""
    a, b = open_store(postgres_store_url), open_store(postgres_store_url)
    try:
        saga_id = saga_in_partition(0, a.partitions())
        (lease,) = a.acquire("m-a", [0], 60.0)
        a.create(new_saga(saga_id), fence=Fence.of("m-a", [lease]))
        checked, go_on = threading.Event(), threading.Event()
        appended = a._appended  # type: ignore[attr-defined]

        def paused(*args: Any) -> Any:  # runs in the write's transaction, after its fence check
            checked.set()
            assert go_on.wait(JOIN_TIMEOUT)
            return appended(*args)

        a._appended = paused  # type: ignore[attr-defined]
        pool = ThreadPoolExecutor(2)
        (lease,) = a.renew("m-a", [lease], 1.0)  # it expires while the write is under way
        writes = pool.submit(a.append, [append(saga_id, 2)], fence=Fence.of("m-a", [lease]))
        assert checked.wait(JOIN_TIMEOUT)
        acquires = _take_over_once_expired(postgres_server, postgres_store_url, b, pool)
        assert not acquires.done(), "the takeover did not wait for the fenced write"
        go_on.set()
        assert writes.result(JOIN_TIMEOUT) is None
        (taken,) = acquires.result(JOIN_TIMEOUT)
        assert taken.epoch == 2
        assert b.writers(saga_id) == [(1, "m-a", 1), (2, "m-a", 1)]
        pool.shutdown()
    finally:
        go_on.set()
        a.close()
        b.close()


def test_a_takeover_waits_for_a_claim_under_way(
    postgres_server: PostgresServer, postgres_store_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A claim locks the leases it checked until it ends, as a fenced write does: a member
    taking the partition over meanwhile (the lease expired while the claim ran) waits for the
    claim to commit, so the old holder's claim lands before the new tenure begins, and the
    new holder's claim takes the sagas after it."""
    from sagas.stores.postgres import _leases

    a, b = open_store(postgres_store_url), open_store(postgres_store_url)
    try:
        saga_id = saga_in_partition(0, a.partitions())
        a.create(new_saga(saga_id, owner="rt-1"))
        (lease,) = a.acquire("m-a", [0], 60.0)
        checked, go_on = threading.Event(), threading.Event()
        check = _leases._check_fence

        def paused(*args: Any) -> None:  # in the claim's transaction, after its lease check
            check(*args)
            checked.set()
            assert go_on.wait(JOIN_TIMEOUT)

        monkeypatch.setattr(_leases, "_check_fence", paused)
        pool = ThreadPoolExecutor(2)
        (lease,) = a.renew("m-a", [lease], 1.0)  # it expires while the claim is under way
        claims = pool.submit(a.claim, Fence.of("m-a", [lease]), [0])
        assert checked.wait(JOIN_TIMEOUT)
        acquires = _take_over_once_expired(postgres_server, postgres_store_url, b, pool)
        assert not acquires.done(), "the takeover did not wait for the claim"
        go_on.set()
        assert claims.result(JOIN_TIMEOUT) == [saga_id]
        (taken,) = acquires.result(JOIN_TIMEOUT)
        assert taken.epoch == 2
        assert b.header(saga_id).owner == "m-a"
        monkeypatch.undo()
        assert b.claim(Fence.of("m-b", [taken]), [0]) == [saga_id]
        assert a.header(saga_id).owner == "m-b"
        pool.shutdown()
    finally:
        go_on.set()
        a.close()
        b.close()


def test_writers_that_create_and_append_never_deadlock(
    postgres_url: str, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    """A write that creates sagas and appends to one another writer appends to: both lock
    the sagas' rows before the positions' counter, so neither holds the counter while it waits
    for the other (the server would end one after a second, and it would run again)."""
    caplog.set_level("INFO", logger="sagas.stores.postgres")
    first, second = open_store(postgres_url), open_store(postgres_url)
    try:
        first.create(new_saga("shared"))
        for n in range(20):
            seq = first.header("shared").last_seq + 1
            results = run_pair(
                partial(first.write, [new_saga(f"new-{n}")], [append("shared", seq, tag="a")]),
                partial(second.append, [append("shared", seq, tag="b")]),
            )
            assert [type(r).__name__ for r in results].count("SeqConflict") == 1, results
        assert not [r for r in caplog.records if "runs again" in r.getMessage()]
    finally:
        first.close()
        second.close()


def test_reads_share_a_few_connections(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    with open_store(postgres_url) as store:
        store.create(new_saga("s"))
        barrier = threading.Barrier(16, timeout=JOIN_TIMEOUT)
        errors: list[BaseException] = []

        def read() -> None:
            try:
                barrier.wait()
                for _ in range(20):
                    assert store.load("s").header.saga_id == "s"
            except BaseException as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=read) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        assert errors == []
        with postgres_server.admin() as db:
            (sessions,) = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
        assert sessions <= 1 + 4  # the write connection and at most four readers


def test_a_write_waiting_on_another_sessions_lock_gives_up(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    from sagas.stores.postgres import PostgresStore

    name = postgres_url.rsplit("/", 1)[1]
    open_store(postgres_url).close()
    params = {**postgres_server.params(name), "lock_timeout": 0.3}
    with PostgresStore(**params) as store, postgres_server.admin(name) as other:
        store.create(new_saga("s"))
        other.execute("BEGIN")
        other.execute("SELECT * FROM sagactor.counters FOR UPDATE")  # a writer that hangs
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            store.append([append("s", 2)])
        assert "is locked: another session held what this one needed for over 0.3s" in (
            _one_line(caught.value))
        assert time.monotonic() - started < 5
        other.execute("ROLLBACK")
        store.append([append("s", 2)])  # and then it goes on
        assert store.header("s").last_seq == 2


def _end_sessions(server: PostgresServer, application_name: str) -> None:
    """End the sessions of the stores opened with ``?application_name=...`` (as a server
    restart or an administrator would)."""
    with server.admin() as db:
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name = %s", (application_name,))


def test_a_lost_write_connection_is_one_line_and_its_owners_are_dead(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    with open_store(f"{postgres_url}?application_name=victim") as store, \
            open_store(postgres_url) as other:
        store.register_owner("cut")
        store.create(new_saga("s", owner="cut"))
        assert other.owner_alive("cut") is True
        _end_sessions(postgres_server, "victim")
        for _ in range(2):  # the first use finds the connection gone, the next knows it
            with pytest.raises(StoreUnavailable) as caught:
                store.append([append("s", 2)])
            assert _one_line(caught.value).startswith(f"saga store {store.url}")
        assert "open the store again" in str(caught.value)
        eventually(lambda: not other.owner_alive("cut"), what="the cut owner is dead")
        assert other.adopt("me") == ["s"]


def test_reads_go_on_after_the_server_ended_their_idle_connections(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    with open_store(postgres_url) as writer, \
            open_store(f"{postgres_url}?application_name=reader") as store:
        writer.create(new_saga("s"))
        assert store.header("s").last_seq == 1  # a read connection, now idle
        _end_sessions(postgres_server, "reader")
        writer.append([append("s", 2)])
        assert store.header("s").last_seq == 2
        assert store.load("s").header.last_seq == 2


# -- owners in other processes --------------------------------------------------------------------

_OWNER_PROCESS = """
import sys, time
from sagas.stores import open_store
from sagas.stores.contract import new_saga

store = open_store(sys.argv[1])
store.register_owner("child")
store.create(new_saga("theirs", owner="child"))
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def owner_process(postgres_url: str) -> Iterator[subprocess.Popen[str]]:  # noqa: F811
    """A process that registered the owner ``child`` and created a saga it owns, ``theirs``."""
    proc = subprocess.Popen([sys.executable, "-c", _OWNER_PROCESS, postgres_url], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ready\n", proc.stderr.read() if proc.stderr else line
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(JOIN_TIMEOUT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _state(pid: int) -> str:
    """A process's state letter in /proc (``T``: stopped)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rpartition(")")[2].split()[0]


def test_an_owner_in_another_process_is_alive_even_stopped_and_dead_once_killed(
    postgres_url: str, owner_process: subprocess.Popen[str]  # noqa: F811
) -> None:
    with open_store(postgres_url, create=False) as store:
        assert store.owner_alive("child") is True
        with pytest.raises(StoreUnavailable, match="already registered by a live runtime"):
            store.register_owner("child")
        assert store.adopt("me") == []
        os.kill(owner_process.pid, signal.SIGSTOP)  # stopped is not dead
        try:
            eventually(lambda: _state(owner_process.pid) == "T", what="the owner stopped")
            assert store.owner_alive("child") is True
            assert store.adopt("me") == []
        finally:
            os.kill(owner_process.pid, signal.SIGCONT)
        os.kill(owner_process.pid, signal.SIGKILL)
        owner_process.wait(JOIN_TIMEOUT)
        eventually(lambda: not store.owner_alive("child"), what="the killed owner is dead")
        assert store.adopt("me") == ["theirs"]
        assert store.header("theirs").owner == "me"
        store.register_owner("child")  # its id is free again
        assert store.owner_alive("child") is True


def test_an_owner_registered_on_a_closed_store_object_is_dead(postgres_url: str) -> None:  # noqa: F811
    with open_store(postgres_url) as other:
        first = open_store(postgres_url)
        first.register_owner("rt")
        first.create(new_saga("s", owner="rt"))
        assert other.owner_alive("rt") is True
        first.close()
        assert other.owner_alive("rt") is False
        assert other.adopt("me") == ["s"]


def test_a_members_store_connects_again_after_its_session_ended(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    """A member's writes are fenced by its leases, so its store object makes a new write
    connection when the old one is lost (a server restart), owners and all."""
    from sagas.stores import Fence

    with open_store(f"{postgres_url}?application_name=member") as store, \
            open_store(postgres_url) as other:
        store.register_owner("m1")
        leases = store.acquire("m1", list(range(store.partitions())), 30.0)
        fence = Fence.of("m1", leases)
        store.create(new_saga("s", owner="m1"), fence=fence)
        _end_sessions(postgres_server, "member")
        # the transaction that finds the connection gone had committed nothing: it runs
        # again on a new connection (its lease still held)
        store.append([append("s", 2)], fence=fence)
        assert other.header("s").last_seq == 2
        assert other.owner_alive("m1") is True  # its lock taken anew on the new session
        assert [w.member for w in other.writers("s")] == ["m1", "m1"]


# -- the service inbox's own connection -----------------------------------------------------------


def _sessions(server: PostgresServer, application_name: str) -> int:
    with server.admin() as db:
        (count,) = db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                              (application_name,)).fetchone()
    return int(count)


def test_the_inbox_writes_on_a_connection_of_its_own_opened_when_first_used(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    """The services' replies are committed without waiting for the write connection (a
    shard's group commit under way holds it), on a connection opened by the first of them and
    closed with the store."""
    from actors import StoredReply

    store = open_store(f"{postgres_url}?application_name=inboxed")
    try:
        store.create(new_saga("s"))
        assert _sessions(postgres_server, "inboxed") == 1
        with store._lock, ThreadPoolExecutor(1) as pool:  # type: ignore[attr-defined]
            # the write connection is busy meanwhile
            pool.submit(store.inbox.put, "k1", StoredReply("succeeded", {"n": 1}, None)).result(
                JOIN_TIMEOUT)
            pool.submit(store.inbox.write_many, [("k2", StoredReply("rejected", None, "no"))],
                        ["a1"]).result(JOIN_TIMEOUT)
            pool.submit(store.inbox.tombstone, "a2").result(JOIN_TIMEOUT)
        assert _sessions(postgres_server, "inboxed") == 2  # reads aside
        with open_store(postgres_url) as other:
            assert other.inbox.read_many(["k1", "k2"], ["a1", "a2"]) == (
                {"k1": StoredReply("succeeded", {"n": 1}, None),
                 "k2": StoredReply("rejected", None, "no")}, {"a1", "a2"})
    finally:
        store.close()
    eventually(lambda: _sessions(postgres_server, "inboxed") == 0,
               what="the store's sessions ending")  # the server's backends exit meanwhile
    for write in (lambda: store.inbox.put("k", StoredReply("succeeded", None, None)),
                  lambda: store.inbox.tombstone("a"), lambda: store.inbox.write_many([], [])):
        with pytest.raises(StoreUnavailable, match="is closed"):
            write()


def test_a_lost_inbox_connection_follows_the_write_connections_rules(
    postgres_server: PostgresServer, postgres_url: str  # noqa: F811
) -> None:
    """Once its session is lost, the inbox of a store object whose owners were registered on
    the lost write session refuses to write, as the store does (they are dead, their sagas
    may be adopted); a member's store connects again."""
    from actors import StoredReply

    reply = StoredReply("succeeded", None, None)
    with open_store(f"{postgres_url}?application_name=owned") as owned, \
            open_store(f"{postgres_url}?application_name=member") as member:
        owned.register_owner("rt")
        owned.inbox.put("k1", reply)
        member.register_owner("m1")
        member.acquire("m1", [0], 30.0)
        member.inbox.put("k2", reply)
        _end_sessions(postgres_server, "owned")
        _end_sessions(postgres_server, "member")
        for _ in range(2):  # the first use finds the connection gone, the next knows it
            with pytest.raises(StoreUnavailable) as caught:
                owned.inbox.write_many([("k3", reply)], [])
            assert _one_line(caught.value).startswith(f"saga store {owned.url}")
        assert "open the store again" in str(caught.value)
        # the transaction that finds the connection gone committed nothing: it runs again
        member.inbox.write_many([("k4", reply)], [])
        member.inbox.put("k5", reply)
        assert member.inbox.read_many(["k1", "k2", "k3", "k4", "k5"], [])[0].keys() == {
            "k1", "k2", "k4", "k5"}


# -- statements in one round trip -----------------------------------------------------------------


def test_a_round_reads_each_statement_as_if_it_had_run_on_its_own(
    postgres_url: str  # noqa: F811
) -> None:
    """``run_round``: the cursors of the statements that ran, up to the first that failed,
    and that one's error: the server's, or psycopg's for a value it cannot send (those before
    it still run); the statements after it do not run."""
    import psycopg
    from psycopg import errors as pg_errors

    from sagas.stores.postgres._connection import run_round

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE t (n integer PRIMARY KEY)")
        insert = "INSERT INTO t (n) VALUES (%s) RETURNING n"
        cursors, error = run_round(db, [("BEGIN", None), (insert, (1,)), (insert, (2,)),
                                        ("COMMIT", None)])
        assert error is None and [c.fetchall() for c in cursors[1:3]] == [[(1,)], [(2,)]]
        cursors, error = run_round(db, [("BEGIN", None), (insert, (3,)), (insert, (1,)),
                                        (insert, (4,))])
        assert len(cursors) == 2 and isinstance(error, pg_errors.UniqueViolation)
        db.execute("ROLLBACK")
        cursors, error = run_round(db, [("BEGIN", None), (insert, (5,)), (insert, (1,)),
                                        (insert, ([1, 2.5],))])  # cannot be sent, after one
        assert len(cursors) == 2 and isinstance(error, pg_errors.UniqueViolation)  # that failed
        db.execute("ROLLBACK")
        cursors, error = run_round(db, [("BEGIN", None), (insert, (6,)), (insert, ([1, 2.5],)),
                                        (insert, (7,))])
        assert len(cursors) == 2 and isinstance(error, psycopg.DataError)
        assert error.sqlstate is None and "mixed types" in str(error)
        assert db.execute("SELECT n FROM t ORDER BY n").fetchall() == [(1,), (2,), (6,)]
        db.execute("ROLLBACK")
        assert db.execute("SELECT n FROM t ORDER BY n").fetchall() == [(1,), (2,)]


def test_a_statement_skipped_in_a_failed_round_is_not_taken_for_prepared(
    postgres_url: str  # noqa: F811
) -> None:
    """psycopg prepares a statement run often (its 5th run) as it sends it, and in pipeline
    mode takes it for prepared then; one the server skipped (after a statement of its round
    failed) was not: run again, it must not be run by a name the server does not know."""
    import psycopg
    from psycopg import errors as pg_errors

    from sagas.stores.postgres._connection import run_round

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE t (n integer PRIMARY KEY)")
        db.execute("BEGIN")
        db.execute("ROLLBACK")  # seen before (a first ROLLBACK makes psycopg forget them)
        count = "SELECT count(*) FROM t WHERE n > %s"
        for n in range(5):
            db.execute(count, (n,))
        _, error = run_round(db, [("BEGIN", None), ("INSERT INTO t VALUES (1), (1)", None),
                                  (count, (0,))])  # prepared now, but skipped
        assert isinstance(error, pg_errors.UniqueViolation)
        db.execute("ROLLBACK")
        for n in range(7):
            assert db.execute(count, (n,)).fetchall() == [(0,)]


def test_a_nul_in_a_text_a_write_sends_is_refused_as_psycopg_refuses_it(
    postgres_store_url: str  # noqa: F811
) -> None:
    """The arrays go in binary format, where the server (not psycopg) finds a NUL: the error
    is the one psycopg gives in text format, and nothing is written."""
    with open_store(postgres_store_url, create=False) as store:
        store.create(new_saga("s"))
        for write in (lambda: store.create(new_saga("a\x00b")),
                      lambda: store.write([new_saga("t")], [append("s", 2, tag="\x00")])):
            with pytest.raises(StoreUnavailable) as caught:
                write()
            assert _one_line(caught.value).endswith(
                "cannot be used: PostgreSQL text fields cannot contain NUL (0x00) bytes")
        assert [h.saga_id for h in store.list()] == ["s"]
        assert store.header("s").last_seq == 1
