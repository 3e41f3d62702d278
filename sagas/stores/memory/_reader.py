"""The memory store's log reader (:class:`~sagas.stores.LogReader`): the global log in
position order, and the subscribers' cursors (a dict from name to position, never tracked by
the garbage collector)."""

from __future__ import annotations

from sagas.stores._checks import check_position, check_subscriber
from sagas.stores._port import LogEntry, StoredEvent

from ._state import _FLOW, _Entry, _event, _slice, _State


class _LogReader(_State):
    """Reads of the global log (appends take the store's lock, so positions become visible in
    order), and the cursors."""

    def __init__(self) -> None:
        super().__init__()
        self._cursors: dict[str, int] = {}  # subscriber -> position (never tracked)

    def _forget(self) -> None:
        super()._forget()
        self._cursors.clear()

    def read_all(self, after: int = 0, limit: int = 1000) -> list[tuple[str, StoredEvent]]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        start = max(after, 0)
        with self._lock:
            self._check_open()
            entries = self._log_slice(start, min(start + limit, self._last_position))
        return [(entry[0], _event(entry[1:])) for entry in entries]

    def read_log(self, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        start = max(after, 0)
        with self._lock:
            self._check_open()
            entries = self._log_slice(start, min(start + limit, self._last_position))
            sagas = self._sagas
            flows = [sagas[entry[0]][_FLOW] for entry in entries]
        return [LogEntry(entry[0], flow, _event(entry[1:]))
                for entry, flow in zip(entries, flows, strict=True)]

    def last_position(self) -> int:
        with self._lock:
            self._check_open()
            return self._last_position

    def _log_slice(self, start: int, stop: int) -> list[_Entry]:
        """The global log's events at indices ``start`` to ``stop`` (excluded): positions
        ``start + 1`` to ``stop``; ``stop`` is at most the last position."""
        return _slice(self._chunks, self._tail, start, stop)

    def cursor(self, subscriber: str) -> int | None:
        check_subscriber(subscriber)
        with self._lock:
            self._check_open()
            return self._cursors.get(subscriber)

    def save_cursor(self, subscriber: str, position: int) -> None:
        check_subscriber(subscriber)
        check_position(position)
        with self._lock:
            self._check_open()
            self._cursors[subscriber] = position

    def cursors(self) -> dict[str, int]:
        with self._lock:
            self._check_open()
            return dict(self._cursors)

    def delete_cursor(self, subscriber: str) -> None:
        check_subscriber(subscriber)
        with self._lock:
            self._check_open()
            self._cursors.pop(subscriber, None)
