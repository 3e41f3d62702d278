"""The PostgreSQL store, made of its facets (one module each) over their shared connections."""

from __future__ import annotations

import contextlib

import psycopg

from ._external import _ExternalEvents
from ._inbox import PostgresInbox
from ._leases import _Leases
from ._log import _EventLog
from ._ownership import _Ownership
from ._reader import _LogReader
from ._requests import _Requests

__all__ = ["PostgresStore"]


class PostgresStore(_EventLog, _LogReader, _Ownership, _Leases, _Requests, _ExternalEvents):
    """A :class:`~sagas.stores.SagaStore` in a PostgreSQL database (schema ``sagactor``).

    The keyword arguments are libpq's connection parameters, as
    :func:`sagas.stores.open_store` takes them from a ``postgresql://`` URL: ``user``,
    ``dbname``, ``host`` (a name, an address, or a unix socket directory), ``port``,
    ``password`` (``None``: libpq's ``PGPASSWORD`` or ``~/.pgpass``) and the options
    ``sslmode``, ``sslrootcert``, ``connect_timeout`` (seconds, default 5) and
    ``application_name`` (default ``sagactor``).

    Opening creates the schema in a database that has none, and the database itself if it is
    missing and the user may create one; with ``create=False`` it creates nothing and raises
    ``StoreMissing`` when there is no store (no database, or no schema in it). A schema of an
    older version is migrated forward; one of a newer version, or that is no sagactor store,
    is ``StoreUnavailable`` (and left untouched). ``lock_timeout`` (seconds) is how long a
    write waits for another session's locks before giving up with ``StoreUnavailable``.
    ``partitions`` is the number of partitions of a store created (or migrated to schema 2)
    now, default 64, and the number an existing one must have (else ``StoreUnavailable``);
    ``None`` takes whatever it has.
    """

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
        super().__init__(user=user, dbname=dbname, host=host, port=port, password=password,
                         create=create, lock_timeout=lock_timeout, partitions=partitions,
                         **options)
        self._owners = set()
        self._inbox = PostgresInbox(self)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def inbox(self) -> PostgresInbox:
        """This store's durable service inbox (always the same object)."""
        return self._inbox

    def close(self) -> None:
        """Once the reads under way are done: close the read connections; once the inbox write
        under way is done, the inbox's connection; delete the rows of the owners registered
        here, then close the write connection (which lets their locks go: they are dead from
        then on)."""
        self._close_readers()
        with self._lock:
            db, self._db = self._db, None
            owners, self._owners = self._owners, set()
        self._close_inbox()
        if db is None:
            return
        if owners and not (db.closed or db.broken):
            self._unregister(db, sorted(owners))
        with contextlib.suppress(psycopg.Error):
            db.close()
