"""The memory store's external events (:class:`~sagas.stores.ExternalEvents`).

Each event is one tuple of plain values in a log of frozen chunks, like the sagas' global log;
who consumed it lives in dicts from position to saga id and time, and the queue of unclaimed
events of each (type, key) is a chain of positions in dicts of strings and ints (the next event
of the same type and key, and the first unclaimed one of each), never tracked by the garbage
collector either. Positions count from 1 with no gaps.
"""

from __future__ import annotations

from typing import Any

from sagas.stores._checks import check_claim, external_event_fields, new_event_id
from sagas.stores._json import decode as _decode
from sagas.stores._port import ExternalEvent

from ._state import _CHUNK, _slice, _State

# An external event as kept: (position, event_id, type, key, data JSON, sent_at).
_Sent = tuple[int, str, str, str, str, float]


# An external event with who consumed it and when: (row, consumed_by, consumed_at).
_Taken = tuple[_Sent, "str | None", "float | None"]


def _external(taken: _Taken) -> ExternalEvent:
    """The external event of ``taken``, with a fresh copy of its data."""
    (position, event_id, type_, key, data, sent_at), consumed_by, consumed_at = taken
    return ExternalEvent(position, event_id, type_, key, _decode(data), sent_at, consumed_by,
                         consumed_at)


def _match(type_: str, key: str) -> str:
    """The one string naming an external event's (type, key): a type has no NUL in it."""
    return f"{type_}\0{key}"


def _claim(type_: str, key: str, saga_id: str) -> str:
    """The one string naming (type, key, saga_id): the key's length tells where it ends."""
    return f"{type_}\0{len(key)}\0{key}{saga_id}"


class _ExternalEvents(_State):
    """The external events' log and the indexes of who took which."""

    def __init__(self) -> None:
        super().__init__()
        # The log as the global one (position p at index p - 1), the ids (event_id ->
        # position), who took which (position -> saga id, position -> time) and which a saga
        # took (_claim(type, key, saga_id) -> position). The unclaimed events of one (type,
        # key) are the end of a chain: _first_unclaimed[_match(type, key)], then
        # _next_same[position]... up to _last_sent[_match(type, key)].
        self._sent_chunks: list[tuple[_Sent, ...]] = []
        self._sent_tail: list[_Sent] = []
        self._last_sent_position = 0
        self._event_ids: dict[str, int] = {}
        self._consumed_by: dict[int, str] = {}
        self._consumed_at: dict[int, float] = {}
        self._claimed: dict[str, int] = {}
        self._first_unclaimed: dict[str, int] = {}
        self._last_sent: dict[str, int] = {}
        self._next_same: dict[int, int] = {}

    def _forget(self) -> None:
        super()._forget()
        self._sent_chunks.clear()
        self._sent_tail.clear()
        self._last_sent_position = 0
        for index in (self._event_ids, self._consumed_by, self._consumed_at, self._claimed,
                      self._first_unclaimed, self._last_sent, self._next_same):
            index.clear()

    def send_event(
        self,
        type: str,
        key: str,
        data: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        sent_at: float,
    ) -> tuple[ExternalEvent, bool]:
        generated = event_id is None
        fields = external_event_fields(type, key, data, event_id, sent_at)
        with self._lock:
            self._check_open()
            event_ids = self._event_ids
            if not generated and fields[0] in event_ids:
                existing: _Taken | None = self._consumed(self._sent_row(event_ids[fields[0]]))
            else:
                existing = None
                while fields[0] in event_ids:  # a uuid4 collision: never, in practice
                    fields = (new_event_id(), *fields[1:])
                row = self._add_sent(fields)
        if existing is not None:
            return _external(existing), False
        return _external((row, None, None)), True

    def _add_sent(self, fields: tuple[str, str, str, str, float]) -> _Sent:
        """Put an external event (``(event_id, type, key, data JSON, sent_at)``, its id new)
        at the end of the external events' log, unclaimed; its row."""
        position = self._last_sent_position + 1
        event_id, type_, key, data, sent_at = fields
        row: _Sent = (position, event_id, type_, key, data, sent_at)
        self._last_sent_position = position
        tail = self._sent_tail
        tail.append(row)
        if len(tail) == _CHUNK:
            self._sent_chunks.append(tuple(tail))
            tail.clear()
        self._event_ids[event_id] = position
        match = _match(type_, key)
        last = self._last_sent.get(match)
        if last is None:
            self._first_unclaimed[match] = position
        else:
            self._next_same[last] = position
        self._last_sent[match] = position
        return row

    def events_after(self, position: int = 0, limit: int = 1000) -> list[ExternalEvent]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        start = max(position, 0)
        with self._lock:
            self._check_open()
            stop = min(start + limit, self._last_sent_position)
            rows = _slice(self._sent_chunks, self._sent_tail, start, stop)
            taken = [self._consumed(row) for row in rows]
        return [_external(t) for t in taken]

    def last_event_position(self) -> int:
        with self._lock:
            self._check_open()
            return self._last_sent_position

    def claim_event(self, type: str, key: str, saga_id: str, *, at: float) -> ExternalEvent | None:
        at = check_claim(type, key, saga_id, at)
        claim = _claim(type, key, saga_id)
        with self._lock:
            self._check_open()
            position = self._claimed.get(claim)
            if position is None:
                match = _match(type, key)
                position = self._first_unclaimed.get(match)
                if position is None:
                    return None
                following = self._next_same.pop(position, None)
                if following is None:  # it was the last of the chain
                    del self._first_unclaimed[match], self._last_sent[match]
                else:
                    self._first_unclaimed[match] = following
                self._consumed_by[position] = saga_id
                self._consumed_at[position] = at
                self._claimed[claim] = position
            taken = self._consumed(self._sent_row(position))
        return _external(taken)

    def _sent_row(self, position: int) -> _Sent:
        """The external event at ``position`` (which exists), as kept."""
        index = position - 1
        frozen = len(self._sent_chunks) * _CHUNK
        if index >= frozen:
            return self._sent_tail[index - frozen]
        return self._sent_chunks[index // _CHUNK][index % _CHUNK]

    def _consumed(self, row: _Sent) -> _Taken:
        """``row`` with who consumed it and when (under the lock)."""
        position = row[0]
        return row, self._consumed_by.get(position), self._consumed_at.get(position)
