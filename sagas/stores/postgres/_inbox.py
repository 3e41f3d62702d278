"""The PostgreSQL store's service inbox: :class:`PostgresInbox`, tables ``inbox`` and
``tombstones``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from actors import StoredReply
from sagas.stores._rows import inbox_rows, reply_row, stored_reply

if TYPE_CHECKING:
    from ._connection import _Connection

__all__ = ["PostgresInbox"]

_SELECT_REPLY = "SELECT outcome, output, error FROM inbox WHERE key = %s"
# read_many: the replies and the tombstones asked for, in one statement (so one snapshot)
_SELECT_MANY = (
    "SELECT true, key, outcome, output, error FROM inbox WHERE key = ANY(%s) "
    "UNION ALL SELECT false, key, NULL, NULL, NULL FROM tombstones WHERE key = ANY(%s)"
)
_PUT_REPLY = (
    "INSERT INTO inbox (key, outcome, output, error) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (key) DO UPDATE SET outcome = excluded.outcome, output = excluded.output, "
    "error = excluded.error"
)
_SELECT_TOMBSTONE = "SELECT 1 FROM tombstones WHERE key = %s"
_PUT_TOMBSTONE = "INSERT INTO tombstones (key) VALUES (%s) ON CONFLICT (key) DO NOTHING"
# write_many: the replies, then the tombstones, one statement each, their rows as arrays in
# binary format (see _log); the replies one per key (ON CONFLICT DO UPDATE takes a key once)
_PUT_REPLIES = (
    "INSERT INTO inbox (key, outcome, output, error) SELECT * FROM unnest(%b::text[], "
    "%b::text[], %b::text[], %b::text[]) ON CONFLICT (key) DO UPDATE SET "
    "outcome = excluded.outcome, output = excluded.output, error = excluded.error"
)
_PUT_TOMBSTONES = (
    "INSERT INTO tombstones (key) SELECT unnest(%b::text[]) ON CONFLICT (key) DO NOTHING"
)


def _texts(rows: list[tuple[Any, ...]], keys: list[tuple[str]]) -> bool:
    """Whether every value of ``rows`` (``key, outcome, output, error``) and ``keys`` is a
    ``str`` (output and error may be ``None``): what the arrays of ``write_many`` take. Others
    go one row per statement, as ``put`` sends them, so that what psycopg or the server says of
    them is the same."""
    for key, outcome, output, error in rows:
        if (type(key) is not str or type(outcome) is not str
                or (output is not None and type(output) is not str)
                or (error is not None and type(error) is not str)):
            return False
    return all(type(key) is str for (key,) in keys)


class PostgresInbox:
    """The durable :class:`actors.InboxStore` of a :class:`PostgresStore` (its ``inbox``).

    Replies live in table ``inbox``, tombstones in ``tombstones``, in the store's database, so
    they survive a crash and are shared by every store object and process using it. Each
    write is committed before it returns: ``put`` and ``tombstone`` are one statement each,
    ``write_many`` one transaction of two statements at most (sent with its ``BEGIN`` in one
    round trip), on a connection of the inbox's own (opened when first used), so they do not
    wait for the store's writes of sagas, nor these for them. ``get``,
    ``is_tombstoned`` and ``read_many`` run on a read connection.
    Thread-safe; raises ``StoreUnavailable`` once the store is closed.
    """

    __slots__ = ("_store",)

    def __init__(self, store: _Connection) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"PostgresInbox({self._store.url!r})"

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
        self._store._write(_PUT_REPLY, reply_row("PostgresInbox", key, reply, "put"),
                          inbox=True)

    def tombstone(self, action_key: str) -> None:
        """Record that ``action_key``'s compensation has started; committed on return."""
        self._store._write(_PUT_TOMBSTONE, (action_key,), inbox=True)

    def is_tombstoned(self, action_key: str) -> bool:
        """Whether :meth:`tombstone` was called for ``action_key`` (by anyone using the store)."""
        return bool(self._store._fetch(_SELECT_TOMBSTONE, (action_key,)))

    def read_many(
        self, keys: Sequence[str], action_keys: Sequence[str]
    ) -> tuple[dict[str, StoredReply], set[str]]:
        """What :meth:`get` gives for each of ``keys`` (only those with a stored reply) and
        which of ``action_keys`` are tombstoned, read in one statement, so one snapshot (a
        service actor looks up a whole batch of commands at once)."""
        keys, action_keys = list(dict.fromkeys(keys)), list(dict.fromkeys(action_keys))
        if not keys and not action_keys:
            return {}, set()
        replies: dict[str, StoredReply] = {}
        tombstoned: set[str] = set()
        for is_reply, key, outcome, output, error in self._store._fetch(_SELECT_MANY,
                                                                        (keys, action_keys)):
            if is_reply:
                replies[key] = stored_reply(outcome, output, error)
            else:
                tombstoned.add(key)
        return replies, tombstoned

    def write_many(
        self, replies: Sequence[tuple[str, StoredReply]], tombstones: Sequence[str]
    ) -> None:
        """Store every ``(key, reply)`` of ``replies`` (as :meth:`put`, in order: a later reply
        for a key replaces an earlier one) and every tombstone (as :meth:`tombstone`), in one
        transaction committed before it returns: all of them or none.

        ``TypeError`` (nothing written) for a reply that is not a :class:`actors.StoredReply`
        with JSON output, for ``replies`` given as a mapping or ``tombstones`` as one string.
        """
        rows, keys = inbox_rows("PostgresInbox", replies, tombstones)
        if not _texts(rows, keys):
            self._store._write_many(((_PUT_REPLY, rows), (_PUT_TOMBSTONE, keys)), inbox=True)
            return
        last = {row[0]: row for row in rows}  # a later reply for a key replaces an earlier one
        # in key order, so that two writers lock the rows they share in one order
        ordered = [last[key] for key in sorted(last)]
        statements: list[tuple[str, Any]] = []
        if ordered:
            statements.append((_PUT_REPLIES, [[row[i] for row in ordered] for i in range(4)]))
        if keys:
            statements.append((_PUT_TOMBSTONES, (sorted({key for (key,) in keys}),)))
        self._store._write_round(statements, inbox=True)
