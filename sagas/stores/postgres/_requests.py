"""The PostgreSQL store's requests (:class:`~sagas.stores.Requests`): table ``requests``,
whose pending rows are indexed by saga."""

from __future__ import annotations

import time
from typing import Any

from sagas.errors import UnknownSaga
from sagas.stores._checks import request_json as _request_json
from sagas.stores._port import Request
from sagas.stores._rows import REQUEST_COLUMNS
from sagas.stores._rows import request as _request

from ._connection import _Connection

_INSERT_REQUEST = (  # the saga's existence is checked in the same statement
    "INSERT INTO requests (saga_id, kind, data, created_at) "
    "SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM sagas WHERE saga_id = %s) "
    "RETURNING request_id"
)
# Polled by every owner: the pending requests (few, on their partial index) joined to their
# sagas, never the owner's sagas (many) nor the handled requests (all of history).
_SELECT_REQUESTS_OF_OWNER = (
    "SELECT r.request_id, r.saga_id, r.kind, r.data, r.created_at "
    "FROM requests AS r JOIN sagas AS s ON s.saga_id = r.saga_id "
    "WHERE NOT r.handled AND r.request_id > %s AND s.owner = %s ORDER BY r.request_id"
)
_SELECT_REQUESTS_FOR = (
    f"SELECT {REQUEST_COLUMNS} FROM requests WHERE saga_id = %s AND NOT handled "
    "ORDER BY request_id"
)
_COMPLETE_REQUEST = "UPDATE requests SET handled = true WHERE request_id = %s AND NOT handled"


class _Requests(_Connection):
    """Each write is one statement in autocommit; reads on a read connection."""

    def request(self, saga_id: str, kind: str, data: dict[str, Any] | None = None) -> int:
        data_json = _request_json(kind, data)
        _, rows = self._write(_INSERT_REQUEST, (saga_id, kind, data_json, time.time(), saga_id))
        if not rows:
            raise UnknownSaga(saga_id)
        return int(rows[0][0])

    def requests(self, owner: str, after: int = 0) -> list[Request]:
        return [_request(row) for row in self._fetch(_SELECT_REQUESTS_OF_OWNER, (after, owner))]

    def requests_for(self, saga_id: str) -> list[Request]:
        return [_request(row) for row in self._fetch(_SELECT_REQUESTS_FOR, (saga_id,))]

    def complete_request(self, request_id: int) -> None:
        self._write(_COMPLETE_REQUEST, (request_id,))
