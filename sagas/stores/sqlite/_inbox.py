"""The SQLite store's service inbox: :class:`SqliteInbox`, tables ``inbox`` and
``tombstones``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from actors import StoredReply
from sagas.stores._rows import inbox_rows, reply_row, stored_reply

from ._connection import _IDS_PER_QUERY

if TYPE_CHECKING:
    import sqlite3

    from ._connection import _Connection

__all__ = ["SqliteInbox"]

_SELECT_REPLY = "SELECT outcome, output, error FROM inbox WHERE key = ?"
_PUT_REPLY = "INSERT OR REPLACE INTO inbox (key, outcome, output, error) VALUES (?, ?, ?, ?)"
_SELECT_TOMBSTONE = "SELECT 1 FROM tombstones WHERE key = ?"
_PUT_TOMBSTONE = "INSERT OR IGNORE INTO tombstones (key) VALUES (?)"


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

    def __init__(self, store: _Connection) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"SqliteInbox({self._store.url!r})"

    def get(self, key: str) -> StoredReply | None:
        """The definitive reply stored under ``key`` (a fresh copy), or ``None``."""
        rows = self._store._fetch(_SELECT_REPLY, (key,))
        if not rows:
            return None
        return stored_reply(*rows[0])

    def put(self, key: str, reply: StoredReply) -> None:
        """Store ``reply`` under ``key``, replacing any earlier one; committed on return.

        ``TypeError`` unless ``reply`` is a :class:`actors.StoredReply` with JSON output.
        """
        self._store._write(_PUT_REPLY, reply_row("SqliteInbox", key, reply, "put"))

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
                    replies[key] = stored_reply(outcome, output, error)
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
        rows, keys = inbox_rows("SqliteInbox", replies, tombstones)
        self._store._write_many(((_PUT_REPLY, rows), (_PUT_TOMBSTONE, keys)))
