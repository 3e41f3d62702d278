"""The PostgreSQL store's connections: opening the database, the write connection, the pool of
read connections, and the translation of psycopg's errors. Every facet of the store is a mixin
over :class:`_Connection`."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq, sql

from sagas.errors import StoreMissing, StoreUnavailable
from sagas.stores._checks import check_partition_count
from sagas.stores._messages import closed

from ._schema import SCHEMA, _Schema

_T = TypeVar("_T")

_logger = logging.getLogger("sagas.stores.postgres")

NOW = "extract(epoch FROM clock_timestamp())::float8"
"""The server's clock, in Unix seconds: the store's clock for leases and members."""

_CONNECT_TIMEOUT = 5
"""Seconds to wait for the server when connecting (the URL's ``connect_timeout`` overrides)."""
_MAX_READERS = 4
"""Read connections a store object opens at most; more concurrent reads wait for one."""
_RETRIES = 5
"""Times a transaction the server ended for a deadlock or a serialization failure is run
again before giving up (each time it wrote nothing)."""
_MAINTENANCE_DATABASES = ("postgres", "template1")
"""Where ``CREATE DATABASE`` is run from, when a store's database is to be created."""

NUL = "PostgreSQL text fields cannot contain NUL (0x00) bytes"
"""psycopg's message for a NUL in a text it sends in text format; in binary format the server
finds it instead (``CharacterNotInRepertoire``), and the store raises psycopg's error with this
message, so that the caller sees the same either way."""

_SESSION = (
    # The write connection holds its owners' advisory locks (``_ownership``): the server must
    # notice soon that its client has gone, even a client whose host died without a word.
    ("tcp_keepalives_idle", "10", 0),
    ("tcp_keepalives_interval", "5", 0),
    ("tcp_keepalives_count", "3", 0),
    ("tcp_user_timeout", "20000", 120000),
    ("client_connection_check_interval", "1000", 140000),
    ("idle_session_timeout", "0", 140000),
    ("idle_in_transaction_session_timeout", "0", 0),
)
"""``(setting, value, lowest server version)`` of the write connection's session."""


def _rollback(db: psycopg.Connection[Any]) -> None:
    """End the open transaction, if any, without writing it (a no-op after COMMIT)."""
    if db.info.transaction_status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
        with contextlib.suppress(psycopg.Error):
            db.execute("ROLLBACK")


def _shown_url(params: dict[str, Any]) -> str:
    """The store's URL as it is shown (its password masked)."""
    from urllib.parse import quote, urlencode

    user = quote(params["user"], safe="")
    secret = ":***" if params.get("password") is not None else ""
    host = params["host"]
    options = {k: v for k, v in params.items()
               if k not in ("user", "password", "host", "port", "dbname")}
    if host.startswith("/"):
        options = {"host": host, **options}
        host = ""
    elif ":" in host:
        host = f"[{host}]"
    else:
        host = quote(host, safe="")
    port = "" if params.get("port") is None else f":{params['port']}"
    query = f"?{urlencode(options, safe='/')}" if options else ""
    return f"postgresql://{user}{secret}@{host}{port}/{quote(params['dbname'], safe='')}{query}"


class _Connection(_Schema):
    """The write connection (``_db``, shared by threads under ``_lock``) and a pool of read
    connections. Opening connects, creating the database if it is missing and allowed, and
    checks or creates the schema (see :class:`PostgresStore`)."""

    def __init__(
        self,
        *,
        user: str,
        dbname: str,
        host: str,
        port: int | None = None,
        password: str | None = None,
        create: bool = True,
        lock_timeout: float = 5.0,
        partitions: int | None = None,
        **options: str,
    ) -> None:
        params: dict[str, Any] = {"user": user, "password": password, "host": host,
                                  "port": port, "dbname": dbname, **options}
        self.url = _shown_url(params)
        self._wanted_partitions = None if partitions is None else check_partition_count(
            partitions)
        self.dbname = dbname
        self.lock_timeout = lock_timeout
        self._params = {k: v for k, v in params.items() if v is not None}
        self._params.setdefault("connect_timeout", str(_CONNECT_TIMEOUT))
        self._params.setdefault("application_name", "sagactor")
        self._params["options"] = f"-c search_path={SCHEMA}"
        self._lock = threading.Lock()  # the write connection's
        # Reads: idle read connections in _idle, _open_readers of them open in all (idle or
        # lent), _reading the reads under way (close() waits for them). _readers guards them.
        self._readers = threading.Condition(threading.Lock())
        self._idle: list[psycopg.Connection[Any]] = []
        self._open_readers = 0
        self._reading = 0
        self._reads_closed = False
        self._member_use = False  # a member took leases through this object (it reconnects)
        # The service inbox's writes have a connection of their own, opened when first used
        # (see _inbox_connection), under a lock of its own.
        self._inbox_lock = threading.Lock()
        self._inbox_db: psycopg.Connection[Any] | None = None
        self._inbox_closed = False
        self._db: psycopg.Connection[Any] | None = self._open(create)

    # -- opening ------------------------------------------------------------------------------

    def _open(self, create: bool) -> psycopg.Connection[Any]:
        try:
            db = self._connect()
        except StoreMissing:
            if not create:
                raise
            self._create_database()
            db = self._connect()
        try:
            self._prepare(db, create)
            self._tune_session(db)
        except psycopg.Error as err:
            db.close()
            raise self._translate(err) from err
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        """A new connection in autocommit mode (we issue BEGIN / COMMIT) to the store's
        database (or ``dbname``); ``StoreMissing`` if the database does not exist."""
        params = self._params if dbname is None else {**self._params, "dbname": dbname}
        try:
            return psycopg.connect(**params, autocommit=True)
        except psycopg.Error as err:
            if dbname is None and _missing_database(err, self.dbname):
                raise StoreMissing(self.url) from None
            raise self._translate(err, "cannot be reached") from err

    def _create_database(self) -> None:
        """Create the store's missing database (from a maintenance database), or say in one
        line why it cannot be."""
        last: psycopg.Error | None = None
        for maintenance in _MAINTENANCE_DATABASES:
            try:
                db = psycopg.connect(**{**self._params, "dbname": maintenance}, autocommit=True)
            except psycopg.Error as err:
                last = err
                continue
            try:
                db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
                _logger.info("created database %r for saga store %s", self.dbname, self.url)
            except pg_errors.DuplicateDatabase:
                pass  # created meanwhile by another process
            except psycopg.Error as err:
                raise StoreUnavailable(
                    f"saga store {self.url}: database {self.dbname!r} does not exist and cannot "
                    f"be created ({self._reason(err)}); create it (createdb {self.dbname})"
                ) from err
            finally:
                db.close()
            return
        assert last is not None
        raise StoreUnavailable(
            f"saga store {self.url}: database {self.dbname!r} does not exist and cannot be "
            f"created ({self._reason(last)}); create it (createdb {self.dbname})"
        ) from last

    def _tune_session(self, db: psycopg.Connection[Any]) -> None:
        """Settings of the write connection's session (see ``_SESSION``), and how long it
        waits for another session's locks before giving up."""
        version = db.info.server_version
        for name, value, since in _SESSION:
            if version >= since:
                db.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        milliseconds = max(1, round(self.lock_timeout * 1000))
        db.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(milliseconds)))

    # -- errors -------------------------------------------------------------------------------

    def _reason(self, err: BaseException) -> str:
        """The first line of ``err``'s message, without the password should it appear."""
        lines = str(err).strip().splitlines()
        text = lines[0].strip() if lines else type(err).__name__
        password = self._params.get("password")
        if password:
            text = text.replace(password, "***")
        return text

    def _translate(self, err: psycopg.Error, doing: str = "cannot be used") -> Exception:
        """The sagactor error for a psycopg error: one line naming the store (its URL with the
        password masked)."""
        reason = self._reason(err)
        state = err.sqlstate or ""
        if state.startswith("22"):  # a value the server refuses (out of range, a NUL...)
            return ValueError(f"saga store {self.url}: {reason}")
        if not state and isinstance(err, psycopg.ProgrammingError):
            return TypeError(f"saga store {self.url}: {reason}")  # a value psycopg cannot send
        if isinstance(err, pg_errors.LockNotAvailable):
            return StoreUnavailable(
                f"saga store {self.url} is locked: another session held what this one needed "
                f"for over {self.lock_timeout:g}s"
            )
        if state.startswith("42") and not isinstance(err, pg_errors.InsufficientPrivilege):
            return StoreUnavailable(f"saga store {self.url} is damaged ({reason})")
        return StoreUnavailable(f"saga store {self.url} {doing}: {reason}")

    # -- the write connection -----------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        """The write connection (call under ``_lock``); ``StoreUnavailable`` once closed or
        lost."""
        db = self._db
        if db is None:
            raise closed(self.url)
        if db.closed or db.broken:
            db = self._reconnect(db)
        return db

    def _lost(self) -> StoreUnavailable:
        """The error of a write on a store object whose owners' session was lost."""
        return StoreUnavailable(f"saga store {self.url}: the connection to the server was "
                                "lost; open the store again")

    def _owners_lost(self) -> bool:
        """Whether owners were registered on a session that is lost, in a store object no
        member uses (it does not connect again: see :meth:`_reconnect`)."""
        return bool(getattr(self, "_owners", None)) and not self._member_use

    def _reconnect(self, lost: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        """A new write connection for one that was lost (the server restarted, the network
        dropped it): what was registered on the old session is taken anew on the new one
        (:meth:`_reopened`). ``StoreUnavailable`` with the reason while the server cannot be
        reached: the caller tries again later (a member every tick). Under ``_lock``.

        A store object whose owners were registered on the lost session and that no member
        uses does not connect again (one line, as before): those owners are dead, and their
        sagas may be adopted by now."""
        if self._owners_lost():
            # Its owners died with the session and an adopter may have taken their sagas:
            # their unfenced writes must not go on. (A member's writes are fenced by its leases
            # instead, so a member's store connects again.)
            raise self._lost()
        with contextlib.suppress(psycopg.Error):
            lost.close()
        try:
            db = self._open(create=False)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"saga store {self.url}: the connection to the server was "
                                   f"lost and cannot be made again yet ({exc})") from None
        try:
            self._reopened(db)
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                db.close()
            raise
        self._db = db
        _logger.warning("saga store %s: connected again after the connection was lost",
                        self.url)
        return db

    def _reopened(self, db: psycopg.Connection[Any]) -> None:
        """Take anew on a new write connection what the lost session held (its owners'
        locks: see ``_ownership``)."""

    # -- the service inbox's write connection -------------------------------------------------

    def _inbox_connection(self) -> psycopg.Connection[Any]:
        """The service inbox's write connection (call under ``_inbox_lock``), opened when
        first used, and again when lost: the services' replies are committed beside the
        writes of the write connection, without waiting for its lock. It follows the write
        connection: ``StoreUnavailable`` once the store is closed, and once the write
        connection is found lost in a store object whose owners were registered on it, or its
        own is found lost there (as :meth:`_reconnect`)."""
        main = self._db
        if main is None or self._inbox_closed:
            raise closed(self.url)
        db = self._inbox_db
        if db is not None and not (db.closed or db.broken):
            if (main.closed or main.broken) and self._owners_lost():
                raise self._lost()
            return db
        if db is not None:
            if self._owners_lost():
                raise self._lost()
            self._inbox_db = None
            with contextlib.suppress(psycopg.Error):
                db.close()
        try:
            db = self._connect()
        except StoreMissing as err:
            raise StoreUnavailable(f"saga store {self.url} cannot be reached: its database "
                                   "is gone") from err
        try:
            self._tune_session(db)
        except psycopg.Error as err:
            db.close()
            raise self._translate(err, "cannot be reached") from err
        self._inbox_db = db
        return db

    def _check_inbox_open(self) -> None:
        """``StoreUnavailable`` once the store is closed (for an inbox write of nothing)."""
        with self._inbox_lock:
            if self._db is None or self._inbox_closed:
                raise closed(self.url)

    def _close_inbox(self) -> None:
        """Close the inbox's connection once the write under way on it is done; inbox writes
        raise ``StoreUnavailable`` from then on (part of ``close()``)."""
        with self._inbox_lock:
            self._inbox_closed = True
            db, self._inbox_db = self._inbox_db, None
        if db is not None:
            with contextlib.suppress(psycopg.Error):
                db.close()

    def _line(self, inbox: bool) -> tuple[threading.Lock, Callable[[], psycopg.Connection[Any]]]:
        """The lock and the connection getter of the write connection, or of the inbox's."""
        if inbox:
            return self._inbox_lock, self._inbox_connection
        return self._lock, self._connection

    def _transaction(self, work: Callable[[psycopg.Connection[Any]], _T], *,
                     begun: bool = False, inbox: bool = False) -> _T:
        """Run ``work`` in one transaction on the write connection, committed before it
        returns (nothing of it if it raises). A transaction the server ends for a deadlock or
        a serialization failure wrote nothing, and runs again; so does, once, a member's
        transaction whose connection was found lost before its COMMIT was sent (on a new
        connection: :meth:`_reconnect`). ``begun``: ``work`` sends the ``BEGIN`` itself (with
        its first statements, in one round trip: :func:`run_round`). ``inbox``: on the
        inbox's connection (:meth:`_inbox_connection`)."""
        lock, connection = self._line(inbox)
        with lock:
            reconnected = False
            for attempt in itertools.count(1):
                db = connection()
                committing = False
                try:
                    if not begun:
                        db.execute("BEGIN")
                    try:
                        result = work(db)
                        committing = True
                        db.execute("COMMIT")
                        return result
                    finally:
                        _rollback(db)
                except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as err:
                    if attempt >= _RETRIES:
                        raise self._translate(err) from err
                    _logger.info("saga store %s: a transaction ended by the server (%s) runs "
                                 "again", self.url, self._reason(err))
                except psycopg.Error as err:
                    if db.broken and not committing and self._member_use and not reconnected:
                        reconnected = True  # nothing of it was committed: run it again
                        continue
                    raise self._translate(err) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, statement: str, params: Sequence[Any] | Mapping[str, Any], *,
               inbox: bool = False) -> tuple[int, list[Any]]:
        """Run one writing statement on its own, committed before it returns (autocommit):
        its rowcount and the rows it returned (``RETURNING``); ``params`` by position or by
        name. ``inbox``: on the inbox's connection."""
        lock, connection = self._line(inbox)
        with lock:
            db = connection()
            try:
                cursor = db.execute(statement, params)
                return cursor.rowcount, cursor.fetchall() if cursor.description else []
            except psycopg.Error as err:
                raise self._translate(err) from err

    def _write_many(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]], *,
                    inbox: bool = False) -> None:
        """Run each writing statement with each of its rows of parameters, all in one
        transaction committed before it returns (nothing of them on an error). Nothing to run
        is no transaction. ``inbox``: on the inbox's connection."""

        def work(db: psycopg.Connection[Any]) -> None:
            with db.cursor() as cursor:
                for statement, rows in statements:
                    if rows:
                        cursor.executemany(statement, rows)

        if not any(rows for _, rows in statements):
            if inbox:
                self._check_inbox_open()
            else:
                with self._lock:
                    self._connection()
            return
        self._transaction(work, inbox=inbox)

    def _write_round(self, statements: Sequence[tuple[str, Any]], *, inbox: bool = False
                     ) -> None:
        """Run ``statements`` (each a query and its parameters) in one transaction, sent with
        its ``BEGIN`` in one round trip (:func:`run_round`), committed before it returns
        (nothing of them on an error). Nothing to run is no transaction. ``inbox``: on the
        inbox's connection."""

        def work(db: psycopg.Connection[Any]) -> None:
            _, error = run_round(db, [("BEGIN", None), *statements])
            if isinstance(error, pg_errors.CharacterNotInRepertoire):
                raise psycopg.DataError(NUL) from error
            if error is not None:
                raise error

        if not statements:
            if inbox:
                self._check_inbox_open()
            else:
                with self._lock:
                    self._connection()
            return
        self._transaction(work, begun=True, inbox=inbox)

    # -- reads --------------------------------------------------------------------------------

    def _on_reader(self, read: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``read`` on a read connection lent for it (opened if none is idle and fewer
        than ``_MAX_READERS`` are open, else waited for). psycopg errors become store errors;
        a connection found broken is dropped, and a read that failed on an idle connection
        the server had ended (a restart, an idle timeout) runs once more on a new one."""
        for attempt in (1, 2):
            db, fresh = self._borrow()
            try:
                return read(db)
            except psycopg.Error as err:
                if attempt == 1 and not fresh and (db.closed or db.broken):
                    self._drop_idle()  # ended with it, most likely (a restart ends them all)
                    continue
                raise self._translate(err) from err
            finally:
                self._give_back(db)
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop_idle(self) -> None:
        """Close the idle read connections: the next read opens a new one."""
        with self._readers:
            idle, self._idle = self._idle, []
            self._open_readers -= len(idle)
            self._readers.notify_all()
        for db in idle:
            with contextlib.suppress(psycopg.Error):
                db.close()

    def _borrow(self) -> tuple[psycopg.Connection[Any], bool]:
        """A read connection, and whether it is new."""
        with self._readers:
            while True:
                if self._reads_closed:
                    raise closed(self.url)
                if self._idle:
                    self._reading += 1
                    return self._idle.pop(), False
                if self._open_readers < _MAX_READERS:
                    self._open_readers += 1
                    self._reading += 1
                    break
                self._readers.wait()
        try:
            return self._connect(), True
        except BaseException:
            with self._readers:
                self._open_readers -= 1
                self._reading -= 1
                self._readers.notify_all()
            raise

    def _give_back(self, db: psycopg.Connection[Any]) -> None:
        _rollback(db)
        usable = not (db.closed or db.broken)
        with self._readers:
            self._reading -= 1
            if usable and not self._reads_closed:
                self._idle.append(db)
            else:
                self._open_readers -= 1
            self._readers.notify_all()
        if not usable or self._reads_closed:
            with contextlib.suppress(psycopg.Error):
                db.close()

    def _check_readable(self) -> None:
        """``StoreUnavailable`` once the store is closed (for a read with nothing to read)."""
        with self._readers:
            if self._reads_closed:
                raise closed(self.url)

    def _fetch(self, query: str, params: Sequence[Any]) -> list[Any]:
        """The rows of one read statement (autocommit: it sees everything committed before
        it starts)."""
        return self._on_reader(lambda db: db.execute(query, params).fetchall())

    def _read(self, read: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``read`` in one read-only transaction, so that its statements read one
        snapshot."""

        def in_snapshot(db: psycopg.Connection[Any]) -> _T:
            db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            result = read(db)
            db.execute("COMMIT")
            return result

        return self._on_reader(in_snapshot)

    def _close_readers(self) -> None:
        """Close every read connection once the reads under way are done; reads raise
        ``StoreUnavailable`` from then on (the first half of ``close()``)."""
        with self._readers:
            self._reads_closed = True
            while self._reading:
                self._readers.wait()
            idle, self._idle = self._idle, []
            self._open_readers -= len(idle)
        for db in idle:
            with contextlib.suppress(psycopg.Error):
                db.close()


def run_round(
    db: psycopg.Connection[Any], statements: Sequence[tuple[str, Any]]
) -> tuple[list[psycopg.Cursor[Any]], psycopg.Error | None]:
    """Run ``statements`` (each a query and its parameters) in order in one round trip to the
    server (pipeline mode; in the open transaction, if any): the cursors of those that ran, up
    to the first that failed, and that one's error (``None`` if they all ran). Those after a
    failed one are not run (the server skips them). The error is the one the statement would
    have raised run on its own: the server's, or psycopg's if it could not send its
    parameters (the statements before it are still run, their results read)."""
    cursors: list[psycopg.Cursor[Any]] = []
    errors: list[psycopg.Error] = []
    try:
        with db.pipeline():
            for query, params in statements:
                try:
                    cursors.append(db.execute(query, params))
                except psycopg.Error as err:
                    # a parameter psycopg cannot send (this statement was not sent), or the
                    # error of one sent before, read meanwhile (this one is sent and skipped)
                    errors.append(err)
                    break
    except psycopg.Error as err:  # on the sync, the error of a statement, or of the connection
        errors.append(err)
    ran = 0
    while ran < len(cursors) and cursors[ran].pgresult is not None:
        ran += 1
    if not errors:
        return cursors, None
    _forget_prepared(db)
    if ran < len(cursors):  # one sent failed: the server's error, before psycopg's
        errors.sort(key=lambda err: (err.sqlstate is None,
                                     isinstance(err, pg_errors.PipelineAborted)))
    return cursors[:ran], errors[0]


def _forget_prepared(db: psycopg.Connection[Any]) -> None:
    """Make psycopg forget the statements it prepared on ``db``, after a round trip where one
    failed. In pipeline mode psycopg counts a statement it prepares (its 5th run) as prepared
    as soon as it sends it; if an earlier statement of the round failed, the server skipped
    it, and psycopg would run it by a name the server does not know from then on ("prepared
    statement ... does not exist"). It deallocates them all with the next statement, and
    prepares them again as they are run again."""
    prepared = getattr(db, "_prepared", None)
    if callable(getattr(prepared, "clear", None)):
        prepared.clear()  # type: ignore[union-attr]
    else:  # pragma: no cover - another psycopg: never prepare on this connection again
        db.prepare_threshold = None


def _missing_database(err: psycopg.Error, dbname: str) -> bool:
    """Whether a failed connection says that the database does not exist."""
    if err.sqlstate == "3D000":
        return True
    return f'database "{dbname}" does not exist' in str(err)
