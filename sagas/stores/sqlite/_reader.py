"""The SQLite store's log reader (:class:`~sagas.stores.LogReader`): the ``events`` table in
``position`` order, and the subscribers' ``cursors``.

Positions (``events.position``) are given out by ``AUTOINCREMENT`` inside a write transaction,
which holds SQLite's one write lock (``BEGIN IMMEDIATE``) until it commits, whatever process
writes: position ``p + 1`` cannot be allocated before the transaction holding ``p`` has
committed or rolled back. So positions become visible to readers in order, never with a hole
that fills later, as the port promises.
"""

from __future__ import annotations

from sagas.stores._checks import check_limit, check_position, check_subscriber
from sagas.stores._port import LogEntry, StoredEvent
from sagas.stores._rows import EVENT_COLUMNS, log_entries, saga_events

from ._connection import _Connection

_SELECT_ALL_EVENTS = (
    f"SELECT saga_id, {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
)
_SELECT_LOG = (  # one query: the events joined to their sagas' headers
    "SELECT e.saga_id, s.flow, e.position, e.seq, e.type, e.step, e.attempt, e.at, e.event_id, "
    "e.causation_id, e.data FROM events AS e CROSS JOIN sagas AS s ON s.saga_id = e.saga_id "
    "WHERE e.position > ? ORDER BY e.position LIMIT ?"
)
_SELECT_CURSOR = "SELECT position FROM cursors WHERE subscriber = ?"
_SAVE_CURSOR = (
    "INSERT INTO cursors (subscriber, position) VALUES (?, ?) "
    "ON CONFLICT (subscriber) DO UPDATE SET position = excluded.position"
)


class _LogReader(_Connection):
    """Reads on the calling thread's read connection; cursors saved in one statement each, in
    autocommit, on the write connection."""

    def read_all(self, after: int = 0, limit: int = 1000) -> list[tuple[str, StoredEvent]]:
        return saga_events(self._fetch(_SELECT_ALL_EVENTS, (after, check_limit(limit))))

    def read_log(self, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        return log_entries(self._fetch(_SELECT_LOG, (after, check_limit(limit))))

    def last_position(self) -> int:
        rows = self._fetch("SELECT COALESCE(MAX(position), 0) FROM events", ())
        return int(rows[0][0])

    def cursor(self, subscriber: str) -> int | None:
        rows = self._fetch(_SELECT_CURSOR, (check_subscriber(subscriber),))
        return int(rows[0][0]) if rows else None

    def save_cursor(self, subscriber: str, position: int) -> None:
        self._write(_SAVE_CURSOR, (check_subscriber(subscriber), check_position(position)))

    def cursors(self) -> dict[str, int]:
        return dict(self._fetch("SELECT subscriber, position FROM cursors", ()))

    def delete_cursor(self, subscriber: str) -> None:
        self._write("DELETE FROM cursors WHERE subscriber = ?", (check_subscriber(subscriber),))
