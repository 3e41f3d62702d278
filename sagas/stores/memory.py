"""The in-memory saga store (``memory://``): for tests and throwaway runs.

Everything lives in dicts guarded by one lock, and nothing survives the process. The store keeps
the contract of the durable stores to the letter, JSON round trip included: event data and saga
input are kept as JSON text, so every read returns a fresh copy, later changes to the objects
given to :meth:`MemoryStore.create` / :meth:`MemoryStore.append` do not reach the log, and data
that is not JSON is refused when written (as the SQLite store refuses it).

Ownership lives in the store object too: an owner is alive while it is registered on this object
(:meth:`MemoryStore.register_owner`) and until :meth:`MemoryStore.close`; any other owner is dead.
The service inbox is an :class:`actors.MemoryInbox`.
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
    NewSaga,
    Request,
    SagaHeader,
    SagaRecord,
    StoredEvent,
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

# An event to write, with its data as JSON text.
_Encoded = tuple[StoredEvent, str]


class _Saga:
    """A saga's header fields (input as JSON text) and its log, mutated under the store's lock."""

    __slots__ = (
        "definition",
        "events",
        "flow",
        "input",
        "last_seq",
        "owner",
        "reason",
        "saga_id",
        "started_at",
        "status",
        "updated_at",
        "version",
    )

    def __init__(self, saga: NewSaga, input_json: str) -> None:
        self.saga_id = saga.saga_id
        self.flow = saga.flow
        self.version = saga.version
        self.definition = saga.definition
        self.input = input_json
        self.status = saga.status
        self.reason = saga.reason
        self.started_at = saga.started_at
        self.updated_at = saga.started_at
        self.last_seq = 0
        self.owner = saga.owner
        self.events: builtins.list[_Row] = []

    def header(self) -> SagaHeader:
        return SagaHeader(
            saga_id=self.saga_id,
            flow=self.flow,
            version=self.version,
            definition=self.definition,
            input=_decode(self.input),
            status=self.status,
            reason=self.reason,
            started_at=self.started_at,
            updated_at=self.updated_at,
            last_seq=self.last_seq,
            owner=self.owner,
        )


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
        self._by_status: dict[str, set[str]] = {}
        self._definitions: dict[str, str] = {}
        self._log: builtins.list[tuple[str, _Row]] = []  # position - 1 -> (saga_id, row)
        self._owners: set[str] = set()
        self._pending: dict[int, _PendingRequest] = {}  # request_id -> request, in id order
        self._last_request_id = 0
        self._inbox = MemoryInbox()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._sagas)} sagas, {len(self._log)} events)"

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
                    expected = entry.last_seq + 1
                first = append.events[0].seq
                if first != expected:
                    raise SeqConflict(saga_id, first)
                next_seq[saga_id] = first + len(append.events)
            results: builtins.list[tuple[bool, SagaHeader]] = []
            for saga, input_json, events in new:
                entry = sagas.get(saga.saga_id)
                if entry is not None:
                    results.append((False, entry.header()))
                    continue
                entry = _Saga(saga, input_json)
                sagas[saga.saga_id] = entry
                self._by_status.setdefault(entry.status, set()).add(entry.saga_id)
                self._definitions.setdefault(saga.definition, saga.definition_text)
                self._write(entry, events)
                results.append((True, entry.header()))
            for append, events in added:
                entry = sagas[append.saga_id]
                self._write(entry, events)
                if entry.status != append.status:
                    self._by_status[entry.status].discard(entry.saga_id)
                    self._by_status.setdefault(append.status, set()).add(entry.saga_id)
                    entry.status = append.status
                entry.reason = append.reason
                entry.updated_at = append.updated_at
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

    def _write(self, entry: _Saga, events: builtins.list[_Encoded]) -> None:
        log = self._log
        for event, data in events:
            row: _Row = (
                len(log) + 1,
                event.seq,
                event.type,
                event.step,
                event.attempt,
                event.at,
                event.event_id,
                event.causation_id,
                data,
            )
            log.append((entry.saga_id, row))
            entry.events.append(row)
        if events:
            entry.last_seq = events[-1][0].seq

    # -- reading ------------------------------------------------------------------------------

    def load(self, saga_id: str) -> SagaRecord:
        """The saga's header, definition text and whole log (in seq order), as one snapshot."""
        with self._lock:
            entry = self._entry(saga_id)
            header = entry.header()
            rows = tuple(entry.events)
            text = self._definitions[entry.definition]
        return SagaRecord(header, text, tuple(_event(row) for row in rows))

    def load_many(self, saga_ids: Sequence[str]) -> builtins.list[SagaRecord]:
        """The records of the sagas in ``saga_ids``, as one snapshot: in the order of
        ``saga_ids``, each saga once (at its first place); ids that do not exist are left out.

        ``TypeError`` for a lone string (a slip for ``[saga_id]``).
        """
        wanted = dict.fromkeys(_ids(saga_ids))
        with self._lock:
            self._check_open()
            found = []
            for saga_id in wanted:
                entry = self._sagas.get(saga_id)
                if entry is not None:
                    text = self._definitions[entry.definition]
                    found.append((entry.header(), text, tuple(entry.events)))
        return [
            SagaRecord(header, text, tuple(_event(row) for row in rows))
            for header, text, rows in found
        ]

    def header(self, saga_id: str) -> SagaHeader:
        """The saga's header; ``UnknownSaga`` if absent."""
        with self._lock:
            return self._entry(saga_id).header()

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
                entries = [self._sagas[i] for i in self._by_status.get(status, ())]
            if flow is not None:
                entries = [e for e in entries if e.flow == flow]

            def key(e: _Saga) -> tuple[float, str]:
                return (e.started_at, e.saga_id)

            if limit is None:
                entries.sort(key=key, reverse=True)
            else:
                entries = heapq.nlargest(limit, entries, key=key)
            return [e.header() for e in entries]

    def in_flight(self) -> builtins.list[str]:
        """Ids of every saga whose status is not terminal, oldest first."""
        with self._lock:
            self._check_open()
            entries = [
                self._sagas[saga_id]
                for status, ids in self._by_status.items()
                if status not in TERMINAL
                for saga_id in ids
            ]
        entries.sort(key=lambda e: (e.started_at, e.saga_id))
        return [e.saga_id for e in entries]

    def read_all(self, after: int = 0, limit: int = 1000) -> builtins.list[tuple[str, StoredEvent]]:
        """Up to ``limit`` events of all sagas with ``position > after``, in position order."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        start = max(after, 0)
        with self._lock:
            self._check_open()
            rows = self._log[start : start + limit]
        return [(saga_id, _event(row)) for saga_id, row in rows]

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
            adopted: builtins.list[_Saga] = []
            for status, ids in self._by_status.items():
                if status in TERMINAL and not (include_failed and status == "failed"):
                    continue
                for saga_id in ids if wanted is None else ids & wanted:
                    entry = self._sagas[saga_id]
                    if entry.owner is None or entry.owner not in live:
                        entry.owner = owner
                        adopted.append(entry)
        adopted.sort(key=lambda e: (e.started_at, e.saga_id))
        return [e.saga_id for e in adopted]

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
                if request_id > after and sagas[pending[0]].owner == owner
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
            self._log.clear()
            self._owners.clear()
            self._pending.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory:// store is closed")

    def _entry(self, saga_id: str) -> _Saga:
        self._check_open()
        entry = self._sagas.get(saga_id)
        if entry is None:
            raise UnknownSaga(saga_id)
        return entry
