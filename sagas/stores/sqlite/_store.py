"""The SQLite store, made of its facets (one module each) over their shared connections."""

from __future__ import annotations

import os
import sqlite3

from ._external import _ExternalEvents
from ._inbox import SqliteInbox
from ._leases import _Leases
from ._log import _EventLog
from ._ownership import _Ownership
from ._reader import _LogReader
from ._requests import _Requests

__all__ = ["SqliteStore"]


class SqliteStore(_EventLog, _LogReader, _Ownership, _Leases, _Requests, _ExternalEvents):
    """A :class:`~sagas.stores.SagaStore` in one SQLite file.

    Opening creates the missing directories and file (private: see :mod:`sagas.stores.sqlite`)
    and, for a new or empty file, the schema; with ``create=False`` it creates nothing and
    raises ``StoreMissing`` when there is no store (no file, or an empty one). An existing file
    must be a sagactor store of a schema this code supports, else ``StoreUnavailable`` (the file
    is left untouched), except that an older schema is migrated forward. ``busy_timeout``
    (seconds) is how long an operation waits for another connection's lock before giving up
    with ``StoreUnavailable``. ``partitions`` is the number of partitions of a store created
    (or migrated to schema 6) now, default 64, and the number an existing one must have
    (else ``StoreUnavailable``); ``None`` takes whatever it has.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        synchronous: str = "normal",
        *,
        busy_timeout: float = 5.0,
        create: bool = True,
        partitions: int | None = None,
    ) -> None:
        super().__init__(path, synchronous, busy_timeout=busy_timeout, create=create,
                         partitions=partitions)
        self._owners_dir = self.path.with_name(self.path.name + ".owners")
        self._owner_fds = {}
        self._inbox = SqliteInbox(self)

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r})"

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def inbox(self) -> SqliteInbox:
        """This store's durable service inbox (always the same object)."""
        return self._inbox

    def close(self) -> None:
        """Once the reads under way are done: close the read connections, release the owners
        registered here (their registrations are deleted, then their lock files removed), then
        close the write connection."""
        self._close_readers()
        with self._lock:
            db, self._db = self._db, None
            owner_fds, self._owner_fds = self._owner_fds, {}
        if db is not None and owner_fds:
            self._unregister(db, list(owner_fds))
        for owner, fd in owner_fds.items():
            self._unlock_owner(owner, fd)
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as err:
                raise self._translate(err) from err
