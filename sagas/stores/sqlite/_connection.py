"""The SQLite store's connections: opening the file, the write connection, each thread's read
connection, and the translation of sqlite3's errors. Every facet of the store is a mixin over
:class:`_Connection`."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sagas.errors import BadStoreUrl, StoreMissing, StoreUnavailable
from sagas.stores._checks import check_partition_count
from sagas.stores._files import create_private_file, make_private_dirs
from sagas.stores._messages import closed

from ._schema import _rollback, _Schema

__all__ = ["SYNCHRONOUS"]

SYNCHRONOUS = ("normal", "full")
"""The accepted values of ``synchronous``."""

_T = TypeVar("_T")

_IDS_PER_QUERY = 500  # below SQLite's oldest limit on bound parameters (999)
_READ_CACHE_KIB = 16384
"""The page cache of a read connection, at most (SQLite's default is 2 MiB): a ``load_many``
of thousands of sagas walks the events index and table together, and thrashes a small cache."""


def _chunks(items: list[str]) -> list[list[str]]:
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


def _database_uri(path: Path) -> str:
    """The ``file:`` URI that opens the existing database at ``path`` and never creates one
    (``mode=rw``), whatever the working directory is later."""
    return f"file:{quote(os.path.abspath(path))}?mode=rw"


class _Connection(_Schema):
    """The file, its write connection (``_db``, shared by threads under ``_lock``) and the
    threads' read connections. Opening creates the missing directories and file, private, and
    checks or creates the schema (see :class:`SqliteStore`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        synchronous: str = "normal",
        *,
        busy_timeout: float = 5.0,
        create: bool = True,
        partitions: int | None = None,
    ) -> None:
        if not isinstance(synchronous, str) or synchronous.lower() not in SYNCHRONOUS:
            raise BadStoreUrl(
                f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {synchronous!r}"
            )
        self._wanted_partitions = None if partitions is None else check_partition_count(
            partitions)
        self.path = Path(path)
        self.synchronous = synchronous.lower()
        self.busy_timeout = busy_timeout
        query = "" if self.synchronous == "normal" else f"?synchronous={self.synchronous}"
        self.url = f"sqlite:///{os.path.abspath(self.path)}{query}"
        self._uri = _database_uri(self.path)
        self._lock = threading.Lock()  # the write connection's
        # Reads: each thread's _Reader in _local; _readers holds the finalizers of all the
        # read connections opened (to close them in close()), _reading counts the reads under
        # way (close() waits for them). _readers_lock guards the three and _reads_closed.
        self._local = threading.local()
        self._readers_lock = threading.Condition(threading.Lock())
        self._readers: set[weakref.finalize] = set()
        self._reading = 0
        self._reads_closed = False
        self._db: sqlite3.Connection | None = self._open(create)

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
        """Whether there is a file (a directory refused). The file is not opened here: closing
        any descriptor of it would drop the locks SQLite holds on it for this process's other
        connections (POSIX record locks belong to the process, not the descriptor), and a
        Runtime's store could then lose its WAL to another process's checkpoint. What is not
        a SQLite file is refused by SQLite itself when the store prepares it (``SQLITE_NOTADB``,
        before anything is written)."""
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            return False
        except OSError as err:
            raise StoreUnavailable(
                f"saga store {self.path} cannot be read ({err.strerror})"
            ) from err
        if stat.S_ISDIR(mode):
            raise StoreUnavailable(f"saga store {self.path} is a directory, not a file")
        return True

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
            raise closed(self.path)
        return self._db

    # -- reading and writing ------------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
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
                raise closed(self.path)
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

    def _transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work(db)`` in one ``BEGIN IMMEDIATE`` transaction on the write connection (so it
        holds SQLite's write lock throughout), committed before it returns; nothing of it if
        it raises."""
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(db)
                    db.execute("COMMIT")
                    return result
                finally:
                    _rollback(db)
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

    def _close_readers(self) -> None:
        """Close every read connection once the reads under way are done; reads raise
        ``StoreUnavailable`` from then on (the first half of ``close()``)."""
        with self._readers_lock:
            self._reads_closed = True
            while self._reading:
                self._readers_lock.wait()
            closers, self._readers = self._readers, set()
        for closer in closers:
            closer()
