"""The in-memory saga store (``memory://``): for tests and throwaway runs.

Everything lives in dicts guarded by one lock, and nothing survives the process. The store keeps
the contract of the durable stores to the letter, JSON round trip included: event data and saga
input are kept as JSON text, so every read returns a fresh copy, later changes to the objects
given to :meth:`MemoryStore.create` / :meth:`MemoryStore.append` do not reach the log, and data
that is not JSON is refused when written (as the SQLite store refuses it).

The store is built so that Python's cyclic garbage collector has next to nothing to do with it,
however many sagas it holds: a full collection visits every tracked container, and every item
of those, each time it runs. So the store keeps plain tuples of strings, numbers and such tuples
(CPython untracks them once a collection has seen them, and visits them no more) and dicts of
strings (never tracked), not lists, sets or instances: a saga is one tuple of its header fields
and of the tuple of its events, replaced whole on each change, and the global log is a list of
frozen chunks of :data:`_CHUNK` events each, plus one list filling the next chunk. The price is
that each append to a saga copies its events, a cost quadratic in the length of a saga's log:
nothing for the tens of events a saga usually has, felt from thousands of events on one saga,
which this store (for tests and throwaway runs) does not expect.

External events (``saga send``) follow the same rule: each is one tuple of plain values in a
log of frozen chunks, like the sagas' global log; who consumed it lives in dicts from position
to saga id and time, and the queue of unclaimed events of each (type, key) is a chain of
positions in dicts of strings and ints (the next event of the same type and key, and the first
unclaimed one of each), never tracked either.

Ownership lives in the store object too: an owner is alive while it is registered on this object
(:meth:`MemoryStore.register_owner`) and until :meth:`MemoryStore.close`; any other owner is dead.
The service inbox is an :class:`actors.MemoryInbox`. The event bus's cursors are a dict from
subscriber name to position.
"""

from __future__ import annotations

import builtins
import heapq
import threading
import time
from collections.abc import Sequence
from typing import Any

from actors import MemoryInbox
from sagas.errors import SeqConflict, StoreUnavailable, UnknownSaga
from sagas.stores._base import (
    TERMINAL,
    Append,
    ExternalEvent,
    LogEntry,
    NewSaga,
    Request,
    SagaHeader,
    SagaRecord,
    StoredEvent,
    check_claim,
    check_position,
    check_subscriber,
    external_event_fields,
    new_event_id,
)
from sagas.stores._common import check_owner as _check_owner
from sagas.stores._common import decode as _decode
from sagas.stores._common import encode as _encode
from sagas.stores._common import request_json as _request_json

__all__ = ["MemoryStore"]


# A pending request as kept: (saga_id, kind, data JSON, created_at).
_PendingRequest = tuple[str, str, str, float]

# An event as kept: (position, seq, type, step, attempt, at, event_id, causation_id, data JSON).
_Row = tuple[int, int, str, "str | None", "int | None", float, str, "str | None", str]

# An event of the global log: (saga_id, row), the row being the one the saga keeps.
_Entry = tuple[str, _Row]

# A saga as kept, replaced whole on each change (its last seq is the number of its events):
# (saga_id, flow, version, definition, input JSON, status, reason, started_at, updated_at, owner,
# events in seq order).
_Saga = tuple[
    str, str, int, str, str, str, "str | None", float, float, "str | None", tuple[_Row, ...]
]
_SAGA_ID, _FLOW, _DEFINITION, _STATUS, _STARTED_AT, _OWNER, _EVENTS = 0, 1, 3, 5, 7, 9, 10

# An event to write, with its data as JSON text.
_Encoded = tuple[StoredEvent, str]

# An external event as kept: (position, event_id, type, key, data JSON, sent_at).
_Sent = tuple[int, str, str, str, str, float]

_CHUNK = 1024
"""Events per frozen chunk of the global log (and of the external events' log)."""


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


def _slice(chunks: builtins.list[tuple[Any, ...]], tail: builtins.list[Any], start: int,
           stop: int) -> builtins.list[Any]:
    """Items ``start`` to ``stop`` (excluded) of the concatenation of ``chunks`` (frozen,
    :data:`_CHUNK` items each) and ``tail``; ``stop`` is at most their total length."""
    frozen = len(chunks) * _CHUNK
    if start >= frozen:  # all in the tail (a reader keeping up with the writers)
        return tail[start - frozen : stop - frozen]
    items: builtins.list[Any] = []
    index = start
    while index < min(stop, frozen):
        chunk, offset = divmod(index, _CHUNK)
        end = min(stop - chunk * _CHUNK, _CHUNK)
        items += chunks[chunk][offset:end]
        index = chunk * _CHUNK + end
    if index < stop:
        items += tail[index - frozen : stop - frozen]
    return items


def _header(saga: _Saga) -> SagaHeader:
    """The header of ``saga``, with a fresh copy of its input."""
    (saga_id, flow, version, definition, input_json, status, reason, started_at, updated_at,
     owner, events) = saga
    return SagaHeader(
        saga_id=saga_id,
        flow=flow,
        version=version,
        definition=definition,
        input=_decode(input_json),
        status=status,
        reason=reason,
        started_at=started_at,
        updated_at=updated_at,
        last_seq=len(events),
        owner=owner,
    )


def _with_owner(saga: _Saga, owner: str) -> _Saga:
    """``saga`` with another owner."""
    (saga_id, flow, version, definition, input_json, status, reason, started_at, updated_at,
     _, events) = saga
    return (saga_id, flow, version, definition, input_json, status, reason, started_at,
            updated_at, owner, events)


def _age(saga: _Saga) -> tuple[float, str]:
    """The key that orders sagas oldest first: ``started_at``, then id."""
    return (saga[_STARTED_AT], saga[_SAGA_ID])


def _event(row: _Row) -> StoredEvent:
    position, seq, type_, step, attempt, at, event_id, causation_id, data = row
    data_ = _decode(data)
    return StoredEvent(seq, type_, step, attempt, at, event_id, causation_id, data_, position)


def _ids(saga_ids: Sequence[str]) -> Sequence[str]:
    """``saga_ids``, refusing a lone string (a common slip for ``[saga_id]``)."""
    if isinstance(saga_ids, str):
        raise TypeError("saga_ids is a sequence of ids, not one id")
    return saga_ids


def _request(request_id: int, pending: _PendingRequest) -> Request:
    saga_id, kind, data, created_at = pending
    return Request(request_id, saga_id, kind, _decode(data), created_at)


def _prepared_create(saga: NewSaga) -> tuple[NewSaga, str, builtins.list[_Encoded]]:
    """``saga`` checked, with its input and events' data as JSON text (``ValueError`` /
    ``TypeError`` for what a create refuses)."""
    _check_seqs(saga.saga_id, saga.events, 1)
    if saga.owner is not None:
        _check_owner(saga.owner)
    return saga, _encode(saga.input), [(e, _encode(e.data)) for e in saga.events]


def _prepared_append(append: Append) -> tuple[Append, builtins.list[_Encoded]]:
    """``append`` checked, with its events' data as JSON text (``ValueError`` / ``TypeError``
    for what an append refuses)."""
    if not append.events:
        raise ValueError(f"saga {append.saga_id!r}: an append needs at least one event")
    _check_seqs(append.saga_id, append.events, append.events[0].seq)
    return append, [(e, _encode(e.data)) for e in append.events]


def _check_seqs(saga_id: str, events: Sequence[StoredEvent], first: int) -> None:
    for offset, event in enumerate(events):
        if event.seq != first + offset:
            raise ValueError(
                f"saga {saga_id!r}: events must have consecutive seqs from {first}, "
                f"got {[e.seq for e in events]}"
            )


class MemoryStore:
    """A :class:`~sagas.stores.SagaStore` in dicts; each instance is a fresh, empty store.

    Thread-safe: one lock serialises every operation, so each one is atomic. Positions and
    request ids count from 1 with no gaps.
    """

    url = "memory://"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._sagas: dict[str, _Saga] = {}
        # status -> ids of the sagas in it (dicts as ordered sets: of strings, never tracked)
        self._by_status: dict[str, dict[str, None]] = {}
        self._definitions: dict[str, str] = {}
        # The global log, position p at index p - 1 of the concatenation of the frozen chunks
        # (_CHUNK events each) and of the tail being filled (fewer than _CHUNK events).
        self._chunks: builtins.list[tuple[_Entry, ...]] = []
        self._tail: builtins.list[_Entry] = []
        self._last_position = 0
        self._owners: set[str] = set()
        self._pending: dict[int, _PendingRequest] = {}  # request_id -> request, in id order
        self._last_request_id = 0
        # External events: the log as the global one (position p at index p - 1), the ids
        # (event_id -> position), who took which (position -> saga id, position -> time) and
        # which a saga took (_claim(type, key, saga_id) -> position). The unclaimed events of
        # one (type, key) are the end of a chain: _first_unclaimed[_match(type, key)], then
        # _next_same[position]... up to _last_sent[_match(type, key)].
        self._sent_chunks: builtins.list[tuple[_Sent, ...]] = []
        self._sent_tail: builtins.list[_Sent] = []
        self._last_sent_position = 0
        self._event_ids: dict[str, int] = {}
        self._consumed_by: dict[int, str] = {}
        self._consumed_at: dict[int, float] = {}
        self._claimed: dict[str, int] = {}
        self._first_unclaimed: dict[str, int] = {}
        self._last_sent: dict[str, int] = {}
        self._next_same: dict[int, int] = {}
        self._cursors: dict[str, int] = {}  # subscriber -> position (never tracked)
        self._inbox = MemoryInbox()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._sagas)} sagas, {self._last_position} events)"

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------

    def write(
        self, creates: Sequence[NewSaga], appends: Sequence[Append]
    ) -> builtins.list[tuple[bool, SagaHeader]]:
        """Create sagas, then append to sagas, atomically: all of it is written or none of it.

        Each create returns ``(True, header)`` when created and ``(False, existing_header)``
        when the id exists (already, or by an earlier create of this call), in which case
        nothing of that create is written (not even the definition) and the call goes on.
        The headers are those right after the creates. Then each append's first seq must be
        its saga's next one (counting this call's creates and earlier appends to the same
        saga), else ``SeqConflict``; an unknown saga raises ``UnknownSaga``. Each saga's
        status, reason and ``updated_at`` become those of its last append in the call.

        Refused, with nothing of the call written: a create whose events' seqs are not 1..n or
        whose ``owner`` is invalid and an append without events or with non-consecutive seqs
        (``ValueError``), an input or event data that is not JSON (``TypeError`` /
        ``ValueError``), and any append that fails as above.
        """
        new = [_prepared_create(saga) for saga in creates]
        added = [_prepared_append(append) for append in appends]
        with self._lock:
            self._check_open()
            sagas = self._sagas
            by_status = self._by_status
            # First decide everything (nothing changes if an append fails), then apply it.
            next_seq: dict[str, int] = {}
            for saga, _, _ in new:
                if saga.saga_id not in sagas and saga.saga_id not in next_seq:
                    next_seq[saga.saga_id] = len(saga.events) + 1
            for append, _ in added:
                saga_id = append.saga_id
                expected = next_seq.get(saga_id)
                if expected is None:
                    entry = sagas.get(saga_id)
                    if entry is None:
                        raise UnknownSaga(saga_id)
                    expected = len(entry[_EVENTS]) + 1
                first = append.events[0].seq
                if first != expected:
                    raise SeqConflict(saga_id, first)
                next_seq[saga_id] = first + len(append.events)
            results: builtins.list[tuple[bool, SagaHeader]] = []
            for saga, input_json, events in new:
                saga_id = saga.saga_id
                entry = sagas.get(saga_id)
                if entry is not None:
                    results.append((False, _header(entry)))
                    continue
                entry = (
                    saga_id,
                    saga.flow,
                    saga.version,
                    saga.definition,
                    input_json,
                    saga.status,
                    saga.reason,
                    saga.started_at,
                    saga.started_at,
                    saga.owner,
                    self._rows(saga_id, events),
                )
                sagas[saga_id] = entry
                by_status.setdefault(saga.status, {})[saga_id] = None
                self._definitions.setdefault(saga.definition, saga.definition_text)
                results.append((True, _header(entry)))
            for append, events in added:
                saga_id = append.saga_id
                (_, flow, version, definition, input_json, status, _, started_at, _, owner,
                 rows) = sagas[saga_id]
                if status != append.status:
                    del by_status[status][saga_id]
                    by_status.setdefault(append.status, {})[saga_id] = None
                sagas[saga_id] = (
                    saga_id,
                    flow,
                    version,
                    definition,
                    input_json,
                    append.status,
                    append.reason,
                    started_at,
                    append.updated_at,
                    owner,
                    rows + self._rows(saga_id, events),
                )
            return results

    def create(self, saga: NewSaga) -> tuple[bool, SagaHeader]:
        """Create the saga with its first events (seqs 1..n), atomically: ``write([saga], [])``.

        Returns ``(True, header)`` when created and ``(False, existing_header)`` when the id
        exists, in which case nothing is written (not even the definition). Raises
        ``ValueError`` if the events' seqs are not 1..n and ``TypeError`` / ``ValueError`` if
        the input or an event's data is not JSON, ``ValueError`` for an invalid ``owner``;
        nothing is written then.
        """
        return self.write((saga,), ())[0]

    def append(self, batch: Sequence[Append]) -> None:
        """Append to several sagas atomically (``write([], batch)``): all of the batch is
        written, or none of it.

        Each append's first seq must be its saga's next one (counting earlier appends to the
        same saga in this batch), else ``SeqConflict``; an unknown saga raises ``UnknownSaga``.
        Raises ``ValueError`` for an append without events or with non-consecutive seqs and
        ``TypeError`` / ``ValueError`` for data that is not JSON. Each saga's status, reason
        and ``updated_at`` become those of its last append in the batch.
        """
        self.write((), batch)

    def _rows(self, saga_id: str, events: builtins.list[_Encoded]) -> tuple[_Row, ...]:
        """The rows of ``events`` (of saga ``saga_id``), put at the end of the global log."""
        position = self._last_position
        tail = self._tail
        rows: builtins.list[_Row] = []
        for event, data in events:
            position += 1
            row: _Row = (
                position,
                event.seq,
                event.type,
                event.step,
                event.attempt,
                event.at,
                event.event_id,
                event.causation_id,
                data,
            )
            rows.append(row)
            tail.append((saga_id, row))
            if len(tail) == _CHUNK:
                self._chunks.append(tuple(tail))
                tail.clear()
        self._last_position = position
        return tuple(rows)

    # -- reading ------------------------------------------------------------------------------

    def load(self, saga_id: str) -> SagaRecord:
        """The saga's header, definition text and whole log (in seq order), as one snapshot."""
        with self._lock:
            entry = self._entry(saga_id)
            text = self._definitions[entry[_DEFINITION]]
        # The entry is immutable: what follows reads the snapshot taken under the lock.
        return SagaRecord(_header(entry), text, tuple(_event(row) for row in entry[_EVENTS]))

    def load_many(self, saga_ids: Sequence[str]) -> builtins.list[SagaRecord]:
        """The records of the sagas in ``saga_ids``, as one snapshot: in the order of
        ``saga_ids``, each saga once (at its first place); ids that do not exist are left out.

        ``TypeError`` for a lone string (a slip for ``[saga_id]``).
        """
        wanted = dict.fromkeys(_ids(saga_ids))
        with self._lock:
            self._check_open()
            sagas = self._sagas
            definitions = self._definitions
            found = [
                (entry, definitions[entry[_DEFINITION]])
                for entry in map(sagas.get, wanted)
                if entry is not None
            ]
        return [
            SagaRecord(_header(entry), text, tuple(_event(row) for row in entry[_EVENTS]))
            for entry, text in found
        ]

    def header(self, saga_id: str) -> SagaHeader:
        """The saga's header; ``UnknownSaga`` if absent."""
        with self._lock:
            entry = self._entry(saga_id)
        return _header(entry)

    def list(
        self, *, status: str | None = None, flow: str | None = None, limit: int | None = None
    ) -> builtins.list[SagaHeader]:
        """Sagas newest first (``started_at`` then id, both descending), filtered; at most
        ``limit`` of them (all if ``None``)."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        with self._lock:
            self._check_open()
            if status is None:
                entries = builtins.list(self._sagas.values())
            else:
                sagas = self._sagas
                entries = [sagas[i] for i in self._by_status.get(status, ())]
        if flow is not None:
            entries = [e for e in entries if e[_FLOW] == flow]
        if limit is None:
            entries.sort(key=_age, reverse=True)
        else:
            entries = heapq.nlargest(limit, entries, key=_age)
        return [_header(e) for e in entries]

    def in_flight(self) -> builtins.list[str]:
        """Ids of every saga whose status is not terminal, oldest first."""
        with self._lock:
            self._check_open()
            sagas = self._sagas
            entries = [
                sagas[saga_id]
                for status, ids in self._by_status.items()
                if status not in TERMINAL
                for saga_id in ids
            ]
        entries.sort(key=_age)
        return [e[_SAGA_ID] for e in entries]

    def read_all(self, after: int = 0, limit: int = 1000) -> builtins.list[tuple[str, StoredEvent]]:
        """Up to ``limit`` events of all sagas with ``position > after``, in position order."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        start = max(after, 0)
        with self._lock:
            self._check_open()
            entries = self._log_slice(start, min(start + limit, self._last_position))
        return [(saga_id, _event(row)) for saga_id, row in entries]

    def read_log(self, after: int = 0, limit: int = 1000) -> builtins.list[LogEntry]:
        """Up to ``limit`` events with ``position > after``, in position order, each with its
        saga's id and flow name. Appends take the store's lock, so positions become visible
        in order."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        start = max(after, 0)
        with self._lock:
            self._check_open()
            entries = self._log_slice(start, min(start + limit, self._last_position))
            sagas = self._sagas
            flows = [sagas[saga_id][_FLOW] for saga_id, _ in entries]
        return [LogEntry(saga_id, flow, _event(row))
                for (saga_id, row), flow in zip(entries, flows, strict=True)]

    def last_position(self) -> int:
        """The position of the newest saga event (0 if none)."""
        with self._lock:
            self._check_open()
            return self._last_position

    def _log_slice(self, start: int, stop: int) -> builtins.list[_Entry]:
        """The global log's events at indices ``start`` to ``stop`` (excluded): positions
        ``start + 1`` to ``stop``; ``stop`` is at most the last position."""
        return _slice(self._chunks, self._tail, start, stop)

    def definition(self, sha256: str) -> str:
        """The flow text stored under that sha256; ``KeyError`` if absent."""
        with self._lock:
            self._check_open()
            return self._definitions[sha256]

    # -- ownership ----------------------------------------------------------------------------

    def register_owner(self, owner: str) -> None:
        """Declare ``owner`` alive until this store is closed (registering twice is fine).

        Raises ``ValueError`` for an id that is not ``[A-Za-z0-9_.-]{1,128}``.
        """
        _check_owner(owner)
        with self._lock:
            self._check_open()
            self._owners.add(owner)

    def owner_alive(self, owner: str) -> bool:
        """Whether ``owner`` is registered on this store (``ValueError`` for an invalid id)."""
        _check_owner(owner)
        with self._lock:
            self._check_open()
            return owner in self._owners

    def adopt(self, owner: str, saga_ids: Sequence[str] | None = None, *,
              include_failed: bool = False) -> builtins.list[str]:
        """Make ``owner`` the owner of every non-terminal saga (of ``saga_ids`` only, if given)
        that has no owner or an owner not registered here; returns their ids, oldest first.

        ``owner`` itself counts as alive (its sagas are not returned). Ids in ``saga_ids``
        that do not exist are ignored. Atomic: of concurrent adopters, one takes each saga.
        """
        _check_owner(owner)
        wanted = None if saga_ids is None else set(_ids(saga_ids))
        with self._lock:
            self._check_open()
            live = self._owners | {owner}
            sagas = self._sagas
            adopted: builtins.list[_Saga] = []
            for status, ids in self._by_status.items():
                if status in TERMINAL and not (include_failed and status == "failed"):
                    continue
                for saga_id in ids if wanted is None else ids.keys() & wanted:
                    entry = sagas[saga_id]
                    if entry[_OWNER] is None or entry[_OWNER] not in live:
                        sagas[saga_id] = _with_owner(entry, owner)
                        adopted.append(entry)
        adopted.sort(key=_age)
        return [e[_SAGA_ID] for e in adopted]

    # -- requests -----------------------------------------------------------------------------

    def request(self, saga_id: str, kind: str, data: dict[str, Any] | None = None) -> int:
        """Record a pending request for the saga and return its id (ids increase, from 1).

        ``data`` (``None`` means ``{}``) must be a JSON object: ``TypeError`` / ``ValueError``
        otherwise, as for an empty ``kind``; ``UnknownSaga`` if the saga does not exist.
        """
        data_json = _request_json(kind, data)
        created_at = time.time()
        with self._lock:
            self._entry(saga_id)
            self._last_request_id += 1
            self._pending[self._last_request_id] = (saga_id, kind, data_json, created_at)
            return self._last_request_id

    def requests(self, owner: str, after: int = 0) -> builtins.list[Request]:
        """Pending requests with ``request_id > after`` for the sagas ``owner`` owns now, in
        id order."""
        with self._lock:
            self._check_open()
            sagas = self._sagas
            found = [
                (request_id, pending)
                for request_id, pending in self._pending.items()
                if request_id > after and sagas[pending[0]][_OWNER] == owner
            ]
        return [_request(request_id, pending) for request_id, pending in found]

    def requests_for(self, saga_id: str) -> builtins.list[Request]:
        """Pending requests for one saga, in id order (none for an unknown saga)."""
        with self._lock:
            self._check_open()
            found = [(i, p) for i, p in self._pending.items() if p[0] == saga_id]
        return [_request(request_id, pending) for request_id, pending in found]

    def complete_request(self, request_id: int) -> None:
        """Mark the request handled: it is no longer pending. An unknown or already completed
        id is ignored."""
        with self._lock:
            self._check_open()
            self._pending.pop(request_id, None)

    # -- external events ----------------------------------------------------------------------

    def send_event(
        self,
        type: str,
        key: str,
        data: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        sent_at: float,
    ) -> tuple[ExternalEvent, bool]:
        """Record an external event: ``(event, True)``, or ``(the existing event, False)``
        when one with that ``event_id`` exists (nothing is written then, whatever the other
        arguments). Without ``event_id`` a uuid4 hex one is made.

        ``ValueError`` / ``TypeError`` (nothing written) for an invalid type, key, id,
        ``sent_at`` or data that is not a JSON object (``None`` means ``{}``).
        """
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

    def events_after(self, position: int = 0, limit: int = 1000) -> builtins.list[ExternalEvent]:
        """Up to ``limit`` external events with a position above ``position``, in position
        order."""
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
        """The position of the newest external event (0 if none)."""
        with self._lock:
            self._check_open()
            return self._last_sent_position

    def claim_event(self, type: str, key: str, saga_id: str, *, at: float) -> ExternalEvent | None:
        """The external event of that type and key ``saga_id`` took already, if any; else the
        oldest unclaimed one, taken now (``consumed_by=saga_id``, ``consumed_at=at``); else
        ``None``. Atomic: of concurrent claimers, one takes each event.

        ``ValueError`` / ``TypeError`` for an invalid type, key, saga id or ``at``.
        """
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

    # -- subscribers' cursors -----------------------------------------------------------------

    def cursor(self, subscriber: str) -> int | None:
        """The position of the last event ``subscriber`` handled, or ``None`` if it has none."""
        check_subscriber(subscriber)
        with self._lock:
            self._check_open()
            return self._cursors.get(subscriber)

    def save_cursor(self, subscriber: str, position: int) -> None:
        """Set ``subscriber``'s cursor to ``position`` (as given, even below its value)."""
        check_subscriber(subscriber)
        check_position(position)
        with self._lock:
            self._check_open()
            self._cursors[subscriber] = position

    def cursors(self) -> dict[str, int]:
        """Every subscriber's cursor, by name."""
        with self._lock:
            self._check_open()
            return dict(self._cursors)

    def delete_cursor(self, subscriber: str) -> None:
        """Forget ``subscriber``'s cursor; an unknown name is ignored."""
        check_subscriber(subscriber)
        with self._lock:
            self._check_open()
            self._cursors.pop(subscriber, None)

    # -- the service inbox --------------------------------------------------------------------

    @property
    def inbox(self) -> MemoryInbox:
        """This store's service inbox: an :class:`actors.MemoryInbox` (always the same one)."""
        return self._inbox

    def close(self) -> None:
        """Drop everything, owner registrations included; further use raises
        ``StoreUnavailable`` (the inbox, being an ``actors.MemoryInbox``, keeps working).
        Closing twice is fine."""
        with self._lock:
            self._closed = True
            self._sagas.clear()
            self._by_status.clear()
            self._definitions.clear()
            self._chunks.clear()
            self._tail.clear()
            self._last_position = 0
            self._owners.clear()
            self._pending.clear()
            self._cursors.clear()
            self._sent_chunks.clear()
            self._sent_tail.clear()
            self._last_sent_position = 0
            for index in (self._event_ids, self._consumed_by, self._consumed_at, self._claimed,
                          self._first_unclaimed, self._last_sent, self._next_same):
                index.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory:// store is closed")

    def _entry(self, saga_id: str) -> _Saga:
        self._check_open()
        entry = self._sagas.get(saga_id)
        if entry is None:
            raise UnknownSaga(saga_id)
        return entry
