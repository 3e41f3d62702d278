"""The PostgreSQL store's log reader (:class:`~sagas.stores.LogReader`): the ``events`` table
in ``position`` order, and the subscribers' ``cursors``.

Positions come from the ``events`` counter, whose row lock a writer holds from taking its
positions until it commits (``_log``): position ``p + 1`` cannot be given out before the
transaction holding ``p`` has committed or rolled back, whatever process writes. So positions
become visible to readers in order, never with a hole that fills later, as the port promises.
"""

from __future__ import annotations

from sagas.stores._checks import check_limit, check_position, check_subscriber
from sagas.stores._port import LogEntry, StoredEvent
from sagas.stores._rows import EVENT_COLUMNS, log_entries, saga_events

from ._connection import _Connection

_SELECT_ALL_EVENTS = (
    f"SELECT saga_id, {EVENT_COLUMNS} FROM events WHERE position > %s ORDER BY position LIMIT %s"
)
_SELECT_LOG = (  # one statement: the events joined to their sagas' headers
    "SELECT e.saga_id, s.flow, e.position, e.seq, e.type, e.step, e.attempt, e.at, e.event_id, "
    "e.causation_id, e.data FROM events AS e JOIN sagas AS s ON s.saga_id = e.saga_id "
    "WHERE e.position > %s ORDER BY e.position LIMIT %s"
)
_SELECT_CURSOR = "SELECT position FROM cursors WHERE subscriber = %s"
_SAVE_CURSOR = (
    "INSERT INTO cursors (subscriber, position) VALUES (%s, %s) "
    "ON CONFLICT (subscriber) DO UPDATE SET position = excluded.position"
)


class _LogReader(_Connection):
    """Reads on a read connection; cursors saved in one statement each, in autocommit, on the
    write connection."""

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
        self._write("DELETE FROM cursors WHERE subscriber = %s", (check_subscriber(subscriber),))
