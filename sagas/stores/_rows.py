"""Rows and records, as both SQL backends (SQLite, PostgreSQL) turn one into the other: what a
write sends (the rows of a saga's header and of its events, of the service inbox's replies,
checked), and what a read gives back (headers, events, whole records, log entries, requests,
external events, stored replies) from the tuples a statement returns.

Only the shape of the data lives here, none of the SQL: each backend's statements select the
columns named below, in that order (:data:`HEADER_COLUMNS`, :data:`EVENT_COLUMNS`), and insert
the tuples built here, in their order. Each function raises what the port promises for what it
checks (``ValueError`` / ``TypeError`` before anything is written, ``SeqConflict``,
``UnknownSaga``), with one-line messages.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from actors import StoredReply
from sagas.errors import SeqConflict, UnknownSaga

from ._checks import FencePlan, check_fence
from ._checks import check_owner as _check_owner
from ._json import decode as _decode
from ._json import encode as _encode
from ._messages import missing_definition
from ._port import (
    Append,
    ExternalEvent,
    Fence,
    LogEntry,
    NewSaga,
    Request,
    SagaHeader,
    SagaRecord,
    StoredEvent,
)

__all__ = [
    "EVENT_COLUMNS",
    "EXTERNAL_COLUMNS",
    "HEADER_COLUMNS",
    "REQUEST_COLUMNS",
    "UNFENCED",
    "Create",
    "EventRow",
    "WrittenBy",
    "add_events",
    "append_failure",
    "append_rows",
    "create_rows",
    "event",
    "event_rows",
    "external_event",
    "header",
    "inbox_rows",
    "log_entries",
    "record",
    "records",
    "reply_row",
    "request",
    "saga_events",
    "stored_reply",
    "write_rows",
    "written_by",
]

HEADER_COLUMNS = (
    "saga_id, flow, version, definition, input, status, reason, started_at, updated_at, last_seq, "
    "owner"
)
"""The columns of a saga's header, in the order :func:`header` reads them (and a create's row
has them, :func:`create_rows`)."""

EVENT_COLUMNS = "position, seq, type, step, attempt, at, event_id, causation_id, data"
"""The columns of an event as read back, in the order :func:`event` reads them."""

REQUEST_COLUMNS = "request_id, saga_id, kind, data, created_at"
"""The columns of a request, in the order :func:`request` reads them."""

EXTERNAL_COLUMNS = "position, event_id, type, key, data, sent_at, consumed_by, consumed_at"
"""The columns of an external event, in the order :func:`external_event` reads them."""

# An event row as built for a write: (saga_id, seq, type, step, attempt, at, event_id,
# causation_id, data, member, epoch), the last two those of a fenced write (else None).
EventRow = tuple[str, int, str, "str | None", "int | None", float, str, "str | None", str,
                 "str | None", "int | None"]
# Who writes: (member, epoch of the saga's partition) under a fence, else (None, None).
WrittenBy = tuple["str | None", "int | None"]
UNFENCED: WrittenBy = (None, None)

# A create as built: the saga, its row of HEADER_COLUMNS and its events' rows.
Create = tuple[NewSaga, tuple[Any, ...], builtins.list[EventRow]]


# -- reading -------------------------------------------------------------------------------


def header(row: Sequence[Any]) -> SagaHeader:
    """A header from a row of :data:`HEADER_COLUMNS` (``input`` is the fifth)."""
    return SagaHeader(*row[:4], _decode(row[4]), *row[5:])


def event(row: Sequence[Any]) -> StoredEvent:
    """An event from a row of :data:`EVENT_COLUMNS`."""
    position, seq, type_, step, attempt, at, event_id, causation_id, data = row
    data_ = _decode(data)
    return StoredEvent(seq, type_, step, attempt, at, event_id, causation_id, data_, position)


def saga_events(rows: Iterable[Sequence[Any]]) -> list[tuple[str, StoredEvent]]:
    """``(saga_id, event)`` of each of ``rows``: a saga id, then :data:`EVENT_COLUMNS`."""
    return [(row[0], event(row[1:])) for row in rows]


def log_entries(rows: Iterable[Sequence[Any]]) -> list[LogEntry]:
    """The log entry of each of ``rows``: a saga id, its flow, then :data:`EVENT_COLUMNS`."""
    return [LogEntry(row[0], row[1], event(row[2:])) for row in rows]


def record(store: object, row: Sequence[Any], text: str | None,
           events: Iterable[Sequence[Any]]) -> SagaRecord:
    """The record of the saga whose header is ``row`` (:data:`HEADER_COLUMNS`), flow text
    ``text`` and events ``events`` (rows of :data:`EVENT_COLUMNS`); ``StoreUnavailable``
    naming ``store`` if its definition is missing (``text`` is ``None``)."""
    if text is None:
        raise missing_definition(store, row[0], row[3])
    return SagaRecord(header(row), text, tuple(event(r) for r in events))


def add_events(logs: dict[str, list[StoredEvent]], rows: Iterable[Sequence[Any]]) -> None:
    """Add the events of ``rows`` (a saga id, then :data:`EVENT_COLUMNS`, each saga's in seq
    order) to their sagas' logs in ``logs``."""
    for saga_id, position, seq, type_, step, attempt, at, event_id, cause, data in rows:
        event = StoredEvent(seq, type_, step, attempt, at, event_id, cause,
                            _decode(data), position)  # fmt: skip
        log = logs.get(saga_id)
        if log is None:
            logs[saga_id] = [event]
        else:
            log.append(event)


def records(store: object, wanted: Sequence[str], headers: Iterable[Sequence[Any]],
            texts: dict[str, str], logs: dict[str, list[StoredEvent]]) -> list[SagaRecord]:
    """The records of the sagas of ``wanted`` that have a header among ``headers`` (rows of
    :data:`HEADER_COLUMNS`), in that order, with their flow texts (by sha256) and their logs
    (:func:`add_events`); ``StoreUnavailable`` naming ``store`` for a definition missing."""
    by_id = {row[0]: row for row in headers}
    found = []
    for saga_id in wanted:
        row = by_id.get(saga_id)
        if row is None:
            continue
        text = texts.get(row[3])
        if text is None:
            raise missing_definition(store, row[0], row[3])
        found.append(SagaRecord(header(row), text, tuple(logs.get(saga_id, ()))))
    return found


def request(row: Sequence[Any]) -> Request:
    """A request from a row of :data:`REQUEST_COLUMNS`."""
    request_id, saga_id, kind, data, created_at = row
    return Request(request_id, saga_id, kind, _decode(data), created_at)


def external_event(row: Sequence[Any]) -> ExternalEvent:
    """An external event from a row of :data:`EXTERNAL_COLUMNS`."""
    position, event_id, type_, key, data, sent_at, consumed_by, consumed_at = row
    return ExternalEvent(
        position, event_id, type_, key, _decode(data), sent_at, consumed_by, consumed_at
    )


# -- writing -------------------------------------------------------------------------------


def written_by(plan: FencePlan | None, saga_id: str) -> WrittenBy:
    """Who writes the events of ``saga_id`` (under ``plan``'s fence, if any)."""
    return UNFENCED if plan is None else (plan.member, plan.epochs[saga_id])


def event_rows(
    saga_id: str, events: Sequence[StoredEvent], first: int, into: builtins.list[EventRow],
    writer: WrittenBy = UNFENCED,
) -> None:
    """Add the rows of ``events`` to ``into``, written by ``writer``; ``ValueError`` unless
    their seqs run from first."""
    member, epoch = writer
    seq = first
    for e in events:
        if e.seq != seq:
            raise ValueError(
                f"saga {saga_id!r}: events must have consecutive seqs from {first}, "
                f"got {[e.seq for e in events]}"
            )
        seq += 1
        into.append(
            (
                saga_id,
                e.seq,
                e.type,
                e.step,
                e.attempt,
                e.at,
                e.event_id,
                e.causation_id,
                _encode(e.data),
                member,
                epoch,
            )
        )


def create_rows(saga: NewSaga, plan: FencePlan | None) -> Create:
    """What ``saga`` writes (under ``plan``'s fence, if any); ``ValueError`` / ``TypeError``
    for what a create refuses (an invalid owner, seqs that are not 1..n, an input or data that
    is not JSON)."""
    if saga.owner is not None:
        _check_owner(saga.owner)
    rows: builtins.list[EventRow] = []
    event_rows(saga.saga_id, saga.events, 1, rows, written_by(plan, saga.saga_id))
    params = (saga.saga_id, saga.flow, saga.version, saga.definition, _encode(saga.input),
              saga.status, saga.reason, saga.started_at, saga.started_at, len(rows), saga.owner)
    return saga, params, rows


def append_rows(
    appends: Sequence[Append], plan: FencePlan | None = None
) -> tuple[builtins.list[EventRow], dict[str, builtins.list[Any]]]:
    """The event rows of ``appends`` and, per saga, the parameters of its header's update:
    ``[new last_seq, status, reason, updated_at, saga_id, expected last_seq]``.

    ``ValueError`` for an append without events or with non-consecutive seqs, ``TypeError`` /
    ``ValueError`` for data that is not JSON, ``SeqConflict`` for an append that does not
    follow the previous append of its saga here (the call conflicts with itself).
    """
    rows: builtins.list[EventRow] = []
    updates: dict[str, builtins.list[Any]] = {}
    for append in appends:
        saga_id, events = append.saga_id, append.events
        if not events:
            raise ValueError(f"saga {saga_id!r}: an append needs at least one event")
        first = events[0].seq
        event_rows(saga_id, events, first, rows, written_by(plan, saga_id))
        last = first + len(events) - 1
        update = updates.get(saga_id)
        if update is None:
            updates[saga_id] = [last, append.status, append.reason, append.updated_at, saga_id,
                                first - 1]
        elif first != update[0] + 1:
            raise SeqConflict(saga_id, first)
        else:
            update[:4] = (last, append.status, append.reason, append.updated_at)
    return rows, updates


def write_rows(
    creates: Sequence[NewSaga], appends: Sequence[Append], fence: Fence | None, count: int
) -> tuple[FencePlan | None, builtins.list[Create], builtins.list[EventRow],
           dict[str, builtins.list[Any]]]:
    """Everything a ``write`` of ``creates`` and ``appends`` (fenced with ``fence``, if any)
    checks and builds before the store is asked, in a store of ``count`` partitions: the
    fence's plan (``None`` unfenced, or when the call writes nothing), each create's rows
    (:func:`create_rows`), and the appends' event rows and header updates
    (:func:`append_rows`). Raises what those refuse, and what
    :func:`~sagas.stores._checks.check_fence` does."""
    plan = None
    if fence is not None and (creates or appends):
        plan = check_fence(fence, [saga.saga_id for saga in creates] +
                           [append.saga_id for append in appends], count)
    new = [create_rows(saga, plan) for saga in creates]
    rows, updates = append_rows(appends, plan)
    return plan, new, rows, updates


def append_failure(
    store: object,
    batch: Sequence[Append],
    last_seq_of: Callable[[str], int | None],
    taken: Callable[[str, int, int], bool],
    refused: str | None,
) -> Exception:
    """Why the appends of ``batch`` failed, as the store (named ``store``) is now: the first
    unknown saga or seq conflict, in order, given each saga's ``last_seq`` (``None`` for an
    unknown one; asked once per saga) and whether any of seqs ``first`` to ``last`` of a saga
    is ``taken``. Failing those, the store refused a value (``refused``, its reason:
    ``ValueError``) or the conflicting writer went on meanwhile (``SeqConflict`` for the
    first append)."""
    last_seq: dict[str, int] = {}
    for append in batch:
        saga_id = append.saga_id
        if saga_id not in last_seq:
            found = last_seq_of(saga_id)
            if found is None:
                return UnknownSaga(saga_id)
            last_seq[saga_id] = found
        first = append.events[0].seq
        last = first + len(append.events) - 1
        if taken(saga_id, first, last) or first != last_seq[saga_id] + 1:
            return SeqConflict(saga_id, first)
        last_seq[saga_id] = last
    if refused is not None:  # no conflict: a value the schema refuses (e.g. a NULL type)
        return ValueError(f"batch refused by saga store {store}: {refused}")
    first_append = batch[0]  # the conflicting writer went on meanwhile
    return SeqConflict(first_append.saga_id, first_append.events[0].seq)


# -- the service inbox ---------------------------------------------------------------------


def stored_reply(outcome: str, output: str | None, error: str | None) -> StoredReply:
    """The reply of a row of the ``inbox`` table (``outcome, output, error``), its output
    decoded (a fresh copy)."""
    return StoredReply(outcome, None if output is None else _decode(output), error)


def _plain(obj: object) -> object:
    """JSON encoding of what ``json`` does not know: read-only mappings (``actors.freeze``)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode_output = json.JSONEncoder(
    separators=(",", ":"), allow_nan=False, ensure_ascii=False, default=_plain
).encode


def reply_row(inbox: str, key: str, reply: StoredReply, method: str) -> tuple[Any, ...]:
    """The ``inbox`` row of ``reply`` (``key, outcome, output, error``); ``TypeError`` unless
    it is a :class:`actors.StoredReply` with JSON output (``ValueError`` for NaN or infinity),
    its message naming the ``inbox`` class and its ``method``."""
    if not isinstance(reply, StoredReply):
        raise TypeError(f"{inbox}.{method} expects a StoredReply, got {type(reply).__name__}")
    output = None if reply.output is None else _encode_output(reply.output)
    return (key, reply.outcome, output, reply.error)


def inbox_rows(
    inbox: str, replies: Sequence[tuple[str, StoredReply]], tombstones: Sequence[str]
) -> tuple[builtins.list[tuple[Any, ...]], builtins.list[tuple[str]]]:
    """The rows ``write_many`` of ``inbox`` (its class's name) writes: those of ``replies``
    (:func:`reply_row`) and of ``tombstones`` (``(action_key,)``); ``TypeError`` for a reply
    that is not a :class:`actors.StoredReply` with JSON output, for ``replies`` given as a
    mapping or ``tombstones`` as one string."""
    if isinstance(replies, (str, Mapping)):
        raise TypeError("replies is a sequence of (key, reply) pairs")
    if isinstance(tombstones, str):
        raise TypeError("tombstones is a sequence of action keys, not one key")
    rows = [reply_row(inbox, key, reply, "write_many") for key, reply in replies]
    return rows, [(action_key,) for action_key in tombstones]
