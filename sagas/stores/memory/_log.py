"""The memory store's event log (:class:`~sagas.stores.EventLog`): sagas, written and read."""

from __future__ import annotations

import builtins
import heapq
from collections.abc import Sequence

from sagas.errors import SeqConflict, UnknownSaga
from sagas.stores._checks import FencePlan, check_fence
from sagas.stores._checks import check_owner as _check_owner
from sagas.stores._json import encode as _encode
from sagas.stores._port import (
    TERMINAL,
    Append,
    Fence,
    NewSaga,
    SagaHeader,
    SagaRecord,
    StoredEvent,
)

from ._state import (
    _CHUNK,
    _DEFINITION,
    _EVENTS,
    _FLOW,
    _SAGA_ID,
    _age,
    _event,
    _header,
    _ids,
    _Row,
    _State,
)

# An event to write, with its data as JSON text.
_Encoded = tuple[StoredEvent, str]


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


class _EventLog(_State):
    """Sagas as tuples in ``_sagas`` (replaced whole on each change), indexed by status; their
    events at the end of the global log as they are written."""

    def write(
        self, creates: Sequence[NewSaga], appends: Sequence[Append], *,
        fence: Fence | None = None,
    ) -> builtins.list[tuple[bool, SagaHeader]]:
        new = [_prepared_create(saga) for saga in creates]
        added = [_prepared_append(append) for append in appends]
        plan = None
        if fence is not None and (new or added):
            plan = check_fence(fence, [s.saga_id for s, _, _ in new] +
                               [a.saga_id for a, _ in added], self._partition_count)
        with self._lock:
            self._check_open()
            if plan is not None:
                self._check_fence(plan)
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
                    self._rows(saga_id, events, plan),
                )
                sagas[saga_id] = entry
                by_status.setdefault(saga.status, {})[saga_id] = None
                self._definitions.setdefault(saga.definition, saga.definition_text)
                results.append((True, SagaHeader(
                    saga_id, saga.flow, saga.version, saga.definition, saga.input, saga.status,
                    saga.reason, saga.started_at, saga.started_at, len(events), saga.owner)))
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
                    rows + self._rows(saga_id, events, plan),
                )
            return results

    def create(self, saga: NewSaga, *, fence: Fence | None = None) -> tuple[bool, SagaHeader]:
        if fence is None:
            return self.write((saga,), ())[0]
        return self.write((saga,), (), fence=fence)[0]

    def append(self, batch: Sequence[Append], *, fence: Fence | None = None) -> None:
        if fence is not None:
            self.write((), batch, fence=fence)
            return
        self.write((), batch)

    def _rows(self, saga_id: str, events: builtins.list[_Encoded], plan: FencePlan | None
              ) -> tuple[_Row, ...]:
        """The rows of ``events`` (of saga ``saga_id``, written under ``plan``'s fence if
        any), put at the end of the global log."""
        position = self._last_position
        tail = self._tail
        member, epoch = (None, None) if plan is None else (plan.member, plan.epochs[saga_id])
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
                member,
                epoch,
            )
            rows.append(row)
            tail.append((saga_id, *row))  # flat: of strings and numbers, never tracked
            if len(tail) == _CHUNK:
                self._chunks.append(tuple(tail))
                tail.clear()
        self._last_position = position
        return tuple(rows)

    def load(self, saga_id: str) -> SagaRecord:
        with self._lock:
            entry = self._entry(saga_id)
            text = self._definitions[entry[_DEFINITION]]
        # The entry is immutable: what follows reads the snapshot taken under the lock.
        return SagaRecord(_header(entry), text, tuple(_event(row) for row in entry[_EVENTS]))

    def load_many(self, saga_ids: Sequence[str]) -> builtins.list[SagaRecord]:
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
        with self._lock:
            entry = self._entry(saga_id)
        return _header(entry)

    def list(
        self, *, status: str | None = None, flow: str | None = None, limit: int | None = None
    ) -> builtins.list[SagaHeader]:
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

    def definition(self, sha256: str) -> str:
        with self._lock:
            self._check_open()
            return self._definitions[sha256]
