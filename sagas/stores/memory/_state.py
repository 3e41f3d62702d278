"""What every facet of the memory store shares: the lock, the sagas and the global log.

Each facet (a mixin over :class:`_State`, one module each) adds the state of its own in its
``__init__`` and drops it in its ``_forget`` (both call ``super()``), so :meth:`_State.close`
clears everything, under the lock, whatever facets the store is made of.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from sagas.errors import StoreUnavailable, UnknownSaga
from sagas.stores._checks import FencePlan
from sagas.stores._json import decode as _decode
from sagas.stores._port import DEFAULT_PARTITIONS, SagaHeader, StoredEvent

# An event as kept: (position, seq, type, step, attempt, at, event_id, causation_id, data JSON,
# member, epoch), the last two those of a fenced write (else None).
_Row = tuple[int, int, str, "str | None", "int | None", float, str, "str | None", str,
             "str | None", "int | None"]
_MEMBER, _EPOCH = 9, 10

# A partition's lease as kept: (member, epoch, expires_at, renewed_at); a partition never held
# has none (as (None, 0, None, None)).
_Lease = tuple["str | None", int, "float | None", "float | None"]
_NEVER_HELD: _Lease = (None, 0, None, None)

# An event of the global log: (saga_id, *row), the row being the one the saga keeps. Flat, so
# the collector stops tracking it at its first pass (a (saga_id, row) pair could stay tracked
# until an older-generation pass, which then had a million of them to walk in S1).
_Entry = tuple[Any, ...]

# A saga as kept, replaced whole on each change (its last seq is the number of its events):
# (saga_id, flow, version, definition, input JSON, status, reason, started_at, updated_at, owner,
# events in seq order).
_Saga = tuple[
    str, str, int, str, str, str, "str | None", float, float, "str | None", tuple[_Row, ...]
]
_SAGA_ID, _FLOW, _DEFINITION, _STATUS, _STARTED_AT, _OWNER, _EVENTS = 0, 1, 3, 5, 7, 9, 10

_CHUNK = 1024
"""Events per frozen chunk of the global log (and of the external events' log)."""


def _slice(chunks: list[tuple[Any, ...]], tail: list[Any], start: int, stop: int) -> list[Any]:
    """Items ``start`` to ``stop`` (excluded) of the concatenation of ``chunks`` (frozen,
    :data:`_CHUNK` items each) and ``tail``; ``stop`` is at most their total length."""
    frozen = len(chunks) * _CHUNK
    if start >= frozen:  # all in the tail (a reader keeping up with the writers)
        return tail[start - frozen : stop - frozen]
    items: list[Any] = []
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
    position, seq, type_, step, attempt, at, event_id, causation_id, data, _, _ = row
    data_ = _decode(data)
    return StoredEvent(seq, type_, step, attempt, at, event_id, causation_id, data_, position)


def _ids(saga_ids: Sequence[str]) -> Sequence[str]:
    """``saga_ids``, refusing a lone string (a common slip for ``[saga_id]``)."""
    if isinstance(saga_ids, str):
        raise TypeError("saga_ids is a sequence of ids, not one id")
    return saga_ids


class _State:
    """The lock that serialises every operation (so each one is atomic), the sagas, the
    global log: position ``p`` at index ``p - 1`` of the concatenation of the frozen chunks
    (:data:`_CHUNK` events each) and of the tail being filled (fewer than :data:`_CHUNK`),
    and the partitions' leases, which fenced writes check (a dict from partition to
    :data:`_Lease`, holding the partitions ever held)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._partition_count = DEFAULT_PARTITIONS
        self._leases: dict[int, _Lease] = {}
        self._sagas: dict[str, _Saga] = {}
        # status -> ids of the sagas in it (dicts as ordered sets: of strings, never tracked)
        self._by_status: dict[str, dict[str, None]] = {}
        self._definitions: dict[str, str] = {}
        self._chunks: list[tuple[_Entry, ...]] = []
        self._tail: list[_Entry] = []
        self._last_position = 0

    def close(self) -> None:
        """Drop everything, owner registrations included (the inbox, being an
        :class:`actors.MemoryInbox`, keeps working). Closing twice is fine."""
        with self._lock:
            self._closed = True
            self._forget()

    def _forget(self) -> None:
        """Drop what this part of the store keeps (under the lock, on close)."""
        self._sagas.clear()
        self._by_status.clear()
        self._definitions.clear()
        self._chunks.clear()
        self._tail.clear()
        self._last_position = 0
        self._leases.clear()

    def _check_fence(self, plan: FencePlan) -> None:
        """``LeaseLost`` for the first partition of ``plan`` whose lease its member does not
        hold, unexpired, at its epoch (under the lock)."""
        now = time.time()
        leases = self._leases
        member = plan.member
        for partition, (epoch, _) in plan.partitions.items():
            holder, held_epoch, expires_at, _ = leases.get(partition, _NEVER_HELD)
            if holder != member or held_epoch != epoch or expires_at is None or expires_at <= now:
                raise plan.lost(partition)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory:// store is closed")

    def _entry(self, saga_id: str) -> _Saga:
        self._check_open()
        entry = self._sagas.get(saga_id)
        if entry is None:
            raise UnknownSaga(saga_id)
        return entry
