"""The SQLite store's external events (:class:`~sagas.stores.ExternalEvents`): table
``external_events``, indexed by (type, key, consumed_by, position)."""

from __future__ import annotations

import sqlite3
from typing import Any

from sagas.stores._checks import check_claim, check_limit, external_event_fields, new_event_id
from sagas.stores._port import ExternalEvent
from sagas.stores._rows import EXTERNAL_COLUMNS
from sagas.stores._rows import external_event as _external

from ._connection import _Connection, _rollback

_INSERT_EXTERNAL = (
    "INSERT INTO external_events (event_id, type, key, data, sent_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_SELECT_EXTERNAL_BY_ID = f"SELECT {EXTERNAL_COLUMNS} FROM external_events WHERE event_id = ?"
_SELECT_EXTERNAL_AFTER = (
    f"SELECT {EXTERNAL_COLUMNS} FROM external_events WHERE position > ? ORDER BY position LIMIT ?"
)
# claim_event: what the saga took already, else the oldest unclaimed (both on the index)
_SELECT_CLAIMED = (
    f"SELECT {EXTERNAL_COLUMNS} FROM external_events "
    "WHERE type = ? AND key = ? AND consumed_by = ? ORDER BY position LIMIT 1"
)
_SELECT_UNCLAIMED = (
    f"SELECT {EXTERNAL_COLUMNS} FROM external_events "
    "WHERE type = ? AND key = ? AND consumed_by IS NULL ORDER BY position LIMIT 1"
)
_CLAIM = (
    "UPDATE external_events SET consumed_by = ?, consumed_at = ? "
    "WHERE position = ? AND consumed_by IS NULL"
)


class _ExternalEvents(_Connection):
    """Sends and claims on the write connection; reads on the thread's read connection."""

    def send_event(
        self,
        type: str,
        key: str,
        data: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        sent_at: float,
    ) -> tuple[ExternalEvent, bool]:
        """One statement in autocommit: the ``UNIQUE`` event id decides which of concurrent sends
        of one id (any connection or process) records it."""
        generated = event_id is None
        params = external_event_fields(type, key, data, event_id, sent_at)
        with self._lock:
            db = self._connection()
            try:
                while True:
                    # one statement, in autocommit; the existing row is read after it, on
                    # the same connection (an event is never deleted, only marked consumed)
                    cursor = db.execute(_INSERT_EXTERNAL, params)
                    if cursor.rowcount == 1:
                        position = cursor.lastrowid
                        break
                    if not generated:
                        existing = db.execute(_SELECT_EXTERNAL_BY_ID, (params[0],)).fetchone()
                        return _external(existing), False
                    params = (new_event_id(), *params[1:])  # a uuid4 collision: never, in practice
            except sqlite3.Error as err:
                raise self._translate(err) from err
        return _external((position, *params, None, None)), True

    def events_after(self, position: int = 0, limit: int = 1000) -> list[ExternalEvent]:
        rows = self._fetch(_SELECT_EXTERNAL_AFTER, (position, check_limit(limit)))
        return [_external(row) for row in rows]

    def last_event_position(self) -> int:
        rows = self._fetch("SELECT COALESCE(MAX(position), 0) FROM external_events", ())
        return int(rows[0][0])

    def claim_event(self, type: str, key: str, saga_id: str, *, at: float) -> ExternalEvent | None:
        """One ``BEGIN IMMEDIATE`` transaction: the event is found and marked under SQLite's
        write lock, whatever connection or process claims."""
        at = check_claim(type, key, saga_id, at)
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute(_SELECT_CLAIMED, (type, key, saga_id)).fetchone()
                    if row is None:
                        row = db.execute(_SELECT_UNCLAIMED, (type, key)).fetchone()
                        if row is not None:
                            db.execute(_CLAIM, (saga_id, at, row[0]))
                            row = (*row[:6], saga_id, at)
                    db.execute("COMMIT")
                finally:
                    _rollback(db)
            except sqlite3.Error as err:
                raise self._translate(err) from err
        return None if row is None else _external(row)
