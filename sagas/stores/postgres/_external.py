"""The PostgreSQL store's external events (:class:`~sagas.stores.ExternalEvents`): table
``external_events``, indexed by (type, key, consumed_by, position), and the
``external_events`` counter of ``counters``.

A send takes its position from the counter in the transaction that inserts the event, so, as
for the sagas' events (``_log``), positions are given out one transaction at a time and become
visible in order. A claim runs in one transaction holding an advisory lock on its (type, key):
the claims of one type and key, in any session, take turns, so the oldest unclaimed event goes
to exactly one saga, and a saga that claims again gets the event it took.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from sagas.stores._checks import check_claim, check_limit, external_event_fields, new_event_id
from sagas.stores._port import ExternalEvent
from sagas.stores._rows import EXTERNAL_COLUMNS
from sagas.stores._rows import external_event as _external

from ._connection import _Connection

_TAKE_POSITION = (
    "UPDATE counters SET value = value + 1 WHERE name = 'external_events' RETURNING value"
)
_INSERT_EXTERNAL = (
    "INSERT INTO external_events (position, event_id, type, key, data, sent_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING"
)
_SELECT_EXTERNAL_BY_ID = f"SELECT {EXTERNAL_COLUMNS} FROM external_events WHERE event_id = %s"
_SELECT_EXTERNAL_AFTER = (
    f"SELECT {EXTERNAL_COLUMNS} FROM external_events WHERE position > %s "
    "ORDER BY position LIMIT %s"
)
_CLAIM_LOCK = 0x53414741  # the advisory locks of claims: (this, a hash of the type and key)
_LOCK_CLAIMS = "SELECT pg_advisory_xact_lock(%s, %s)"
_SELECT_CLAIMED = (
    f"SELECT {EXTERNAL_COLUMNS} FROM external_events "
    "WHERE type = %s AND key = %s AND consumed_by = %s ORDER BY position LIMIT 1"
)
_SELECT_UNCLAIMED = (
    f"SELECT {EXTERNAL_COLUMNS} FROM external_events "
    "WHERE type = %s AND key = %s AND consumed_by IS NULL ORDER BY position LIMIT 1"
)
_CLAIM = (
    "UPDATE external_events SET consumed_by = %s, consumed_at = %s "
    "WHERE position = %s AND consumed_by IS NULL"
)


def _claim_key(type: str, key: str) -> int:
    """The second half of the advisory lock of the claims of (type, key): a signed int4."""
    digest = hashlib.sha256(f"{type}\0{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


class _Duplicate(Exception):
    """The event id is taken: the send's transaction is rolled back (its position given back)."""


class _ExternalEvents(_Connection):
    """Sends and claims in a transaction each on the write connection; reads on a read
    connection."""

    def send_event(
        self,
        type: str,
        key: str,
        data: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        sent_at: float,
    ) -> tuple[ExternalEvent, bool]:
        """One transaction: the position, then the insert, which the unique event id lets
        through for exactly one of concurrent sends of one id (the others wait for it, then
        insert nothing and are rolled back)."""
        generated = event_id is None
        params = external_event_fields(type, key, data, event_id, sent_at)

        def send(db: psycopg.Connection[Any]) -> int:
            (position,) = db.execute(_TAKE_POSITION).fetchone()  # type: ignore[misc]
            if db.execute(_INSERT_EXTERNAL, (position, *params)).rowcount == 0:
                raise _Duplicate
            return int(position)

        while True:
            try:
                position = self._transaction(send)
            except _Duplicate:
                if generated:  # a uuid4 collision: never, in practice
                    params = (new_event_id(), *params[1:])
                    continue
                existing = self._fetch(_SELECT_EXTERNAL_BY_ID, (params[0],))
                return _external(existing[0]), False
            return _external((position, *params, None, None)), True

    def events_after(self, position: int = 0, limit: int = 1000) -> list[ExternalEvent]:
        rows = self._fetch(_SELECT_EXTERNAL_AFTER, (position, check_limit(limit)))
        return [_external(row) for row in rows]

    def last_event_position(self) -> int:
        rows = self._fetch("SELECT COALESCE(MAX(position), 0) FROM external_events", ())
        return int(rows[0][0])

    def claim_event(self, type: str, key: str, saga_id: str, *, at: float) -> ExternalEvent | None:
        """One transaction under the (type, key) advisory lock: the event is found and marked
        while no other claim of that type and key runs."""
        at = check_claim(type, key, saga_id, at)

        def claim(db: psycopg.Connection[Any]) -> Any:
            db.execute(_LOCK_CLAIMS, (_CLAIM_LOCK, _claim_key(type, key)))
            row = db.execute(_SELECT_CLAIMED, (type, key, saga_id)).fetchone()
            if row is None:
                row = db.execute(_SELECT_UNCLAIMED, (type, key)).fetchone()
                if row is not None:
                    db.execute(_CLAIM, (saga_id, at, row[0]))
                    row = (*row[:6], saga_id, at)
            return row

        row = self._transaction(claim)
        return None if row is None else _external(row)
