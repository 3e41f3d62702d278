"""The memory store's requests (:class:`~sagas.stores.Requests`): pending ones in a dict by
id, in id order; ids count from 1 with no gaps."""

from __future__ import annotations

import time
from typing import Any

from sagas.stores._checks import request_json as _request_json
from sagas.stores._json import decode as _decode
from sagas.stores._port import Request

from ._state import _OWNER, _State

# A pending request as kept: (saga_id, kind, data JSON, created_at).
_PendingRequest = tuple[str, str, str, float]


def _request(request_id: int, pending: _PendingRequest) -> Request:
    saga_id, kind, data, created_at = pending
    return Request(request_id, saga_id, kind, _decode(data), created_at)


class _Requests(_State):
    """The pending requests, by id (a completed one is dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[int, _PendingRequest] = {}  # request_id -> request, in id order
        self._last_request_id = 0

    def _forget(self) -> None:
        super()._forget()
        self._pending.clear()

    def request(self, saga_id: str, kind: str, data: dict[str, Any] | None = None) -> int:
        data_json = _request_json(kind, data)
        created_at = time.time()
        with self._lock:
            self._entry(saga_id)
            self._last_request_id += 1
            self._pending[self._last_request_id] = (saga_id, kind, data_json, created_at)
            return self._last_request_id

    def requests(self, owner: str, after: int = 0) -> list[Request]:
        with self._lock:
            self._check_open()
            sagas = self._sagas
            found = [
                (request_id, pending)
                for request_id, pending in self._pending.items()
                if request_id > after and sagas[pending[0]][_OWNER] == owner
            ]
        return [_request(request_id, pending) for request_id, pending in found]

    def requests_for(self, saga_id: str) -> list[Request]:
        with self._lock:
            self._check_open()
            found = [(i, p) for i, p in self._pending.items() if p[0] == saga_id]
        return [_request(request_id, pending) for request_id, pending in found]

    def complete_request(self, request_id: int) -> None:
        with self._lock:
            self._check_open()
            self._pending.pop(request_id, None)
