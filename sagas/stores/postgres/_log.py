"""The PostgreSQL store's event log (:class:`~sagas.stores.EventLog`): tables ``sagas``,
``events`` and ``definitions``, and the ``events`` counter of ``counters``.

A ``write`` is one transaction on the write connection (a group commit: a shard's whole
mailbox drain) of a few statements whatever its size: each takes its rows as arrays
(``unnest``), one statement for a hundred rows being twice as fast as a hundred statements
(``executemany``) here:

1. the creates: one ``INSERT ... ON CONFLICT (saga_id) DO NOTHING`` of the new sagas (of
   concurrent creates of one id, in any session, the server lets exactly one insert: the
   others wait for it, then do nothing), their definitions, then their events;
2. the appends: one ``UPDATE`` of the sagas' headers, each row conditional on its
   ``last_seq`` being the one the append follows; fewer rows updated than sagas appended to
   is a conflict (an unknown saga or a seq taken), found and raised once the appends are
   undone; then their events. A concurrent append to the same saga waits for this
   transaction's row lock, then finds ``last_seq`` moved on, so it updates nothing and
   conflicts: two writers never both append at one seq. The primary key ``(saga_id, seq)``
   of ``events`` backs that up.

Positions are taken from the ``events`` counter (``UPDATE counters ... RETURNING``) in the
statement that inserts the events: its row lock, held until the transaction ends, makes writers
take positions one transaction at a time, in commit order, with no gaps (a transaction rolled
back gives its positions back). So a reader never sees position ``p + 1`` before ``p``
(:class:`~sagas.stores.LogReader`'s promise). The price: the event writes of all the
processes sharing a store commit one at a time (as SQLite's do), which group commit makes
cheap.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from sagas.errors import StoreUnavailable, UnknownSaga
from sagas.stores._checks import FencePlan, check_limit
from sagas.stores._checks import check_saga_ids as _ids
from sagas.stores._port import (
    TERMINAL,
    Append,
    Fence,
    NewSaga,
    SagaHeader,
    SagaRecord,
    StoredEvent,
)
from sagas.stores._rows import (
    EVENT_COLUMNS,
    HEADER_COLUMNS,
    Create,
    EventRow,
    add_events,
    append_failure,
    record,
    records,
    write_rows,
)
from sagas.stores._rows import header as _header

from ._connection import NOW, NUL, _Connection, run_round
from ._schema import TERMINAL_SQL

# The statements taking rows as arrays send them in binary format (``%b``): in text format
# psycopg quotes every element and escapes the events' JSON through a regular expression, some
# 80 times slower than the binary dump, the largest part of a member's work on this store.
# The casts name each column's type (an array of ints is sent as the smallest type that holds
# them; an empty array, or one of NULLs only, still goes in text format).
# A NUL in a text: psycopg refuses it in text format, the server in binary format
# (CharacterNotInRepertoire); raised as psycopg's own error (NUL), so that the caller sees the
# same.

# The new sagas of a write, in one statement; those whose id exists are not inserted (nor
# returned). Of concurrent inserts of one id, in any session, the server lets exactly one in.
_INSERT_SAGAS = (
    f"INSERT INTO sagas ({HEADER_COLUMNS}) SELECT * FROM unnest(%b::text[], %b::text[], "
    "%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::float8[], "
    "%b::bigint[], %b::text[]) ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id"
)
_INSERT_DEFINITION = (
    "INSERT INTO definitions (sha256, text) VALUES (%s, %s) ON CONFLICT (sha256) DO NOTHING"
)
# The events of a write, in one statement: the counter gives their positions (its row stays
# locked until the transaction ends), the n-th row of the arrays gets the n-th position. The
# writer is the fence's member and the epoch of each event's partition (NULL unfenced: a NULL
# array of epochs is padded with NULLs by unnest).
_INSERT_EVENTS = (
    "WITH taken AS (UPDATE counters SET value = value + %(n)s WHERE name = 'events' "
    "RETURNING value - %(n)s AS before) "
    "INSERT INTO events (saga_id, seq, position, type, step, attempt, at, event_id, "
    "causation_id, data, member, epoch) "
    "SELECT e.saga_id, e.seq, taken.before + e.n, e.type, e.step, e.attempt, e.at, e.event_id, "
    "e.causation_id, e.data, %(member)s::text, e.epoch FROM taken, unnest(%(saga_id)b::text[], "
    "%(seq)b::bigint[], %(type)b::text[], %(step)b::text[], %(attempt)b::bigint[], "
    "%(at)b::float8[], %(event_id)b::text[], %(causation_id)b::text[], %(data)b::text[], "
    "%(epoch)b::bigint[]) WITH ORDINALITY "
    "AS e(saga_id, seq, type, step, attempt, at, event_id, causation_id, data, epoch, n)"
)
_EVENT_ARRAYS = ("saga_id", "seq", "type", "step", "attempt", "at", "event_id", "causation_id",
                 "data")
# The leases a fenced write checks, locked until it ends (an acquirer waits for it), each with
# whether it is unexpired by the server's clock.
_SELECT_FENCE = (
    f"SELECT partition, member, epoch, expires_at > {NOW} FROM leases "
    "WHERE partition = ANY(%b::integer[]) ORDER BY partition FOR SHARE"
)
# The headers of the appends, in one statement: each row is updated only if its last_seq is
# the one the append follows (a row another writer moved on is left as it is).
_UPDATE_SAGAS = (
    "UPDATE sagas AS s SET last_seq = u.last_seq, status = u.status, reason = u.reason, "
    "updated_at = u.updated_at FROM unnest(%b::bigint[], %b::text[], %b::text[], "
    "%b::float8[], %b::text[], %b::bigint[]) "
    "AS u(last_seq, status, reason, updated_at, saga_id, expected) "
    "WHERE s.saga_id = u.saga_id AND s.last_seq = u.expected"
)
_SELECT_HEADER = f"SELECT {HEADER_COLUMNS} FROM sagas WHERE saga_id = %s"
_SELECT_HEADERS_IN = f"SELECT {HEADER_COLUMNS} FROM sagas WHERE saga_id = ANY(%s)"
_SELECT_EVENTS = f"SELECT {EVENT_COLUMNS} FROM events WHERE saga_id = %s ORDER BY seq"
_SELECT_EVENTS_IN = (
    f"SELECT saga_id, {EVENT_COLUMNS} FROM events WHERE saga_id = ANY(%s) ORDER BY saga_id, seq"
)
_SELECT_DEFINITION = "SELECT text FROM definitions WHERE sha256 = %s"
_SELECT_DEFINITIONS_IN = "SELECT sha256, text FROM definitions WHERE sha256 = ANY(%s)"
_SELECT_LAST_SEQS = "SELECT saga_id, last_seq FROM sagas WHERE saga_id = ANY(%s)"
_SELECT_TAKEN = "SELECT 1 FROM events WHERE saga_id = %s AND seq BETWEEN %s AND %s LIMIT 1"
_TERMINAL = sorted(TERMINAL)
# by the index of the sagas in flight (its predicate, word for word)
_SELECT_IN_FLIGHT = (
    f"SELECT saga_id FROM sagas WHERE status NOT IN {TERMINAL_SQL} ORDER BY started_at, saga_id"
)
_IDS_PER_READ = 1000
"""Sagas ``load_many`` reads per statement, so that at most that many sagas' rows are held
undecoded at once."""

Statement = tuple[str, Any]
"""A query and its parameters, for :func:`run_round`."""


def _events_statement(rows: builtins.list[EventRow], member: str | None) -> Statement:
    """Insert ``rows`` (not empty) at the next positions, in order, written by ``member``
    (each row's member is that one: the statement takes it once), in the open transaction
    (the counter's row stays locked until it ends); its rowcount is how many were
    inserted."""
    params: dict[str, Any] = {"n": len(rows), "member": member}
    for index, name in enumerate(_EVENT_ARRAYS):
        params[name] = [row[index] for row in rows]
    params["epoch"] = None if member is None else [row[10] for row in rows]
    return _INSERT_EVENTS, params


def _fence_statement(plan: FencePlan) -> Statement:
    """Read and lock the leases of ``plan`` (see :func:`_check_fence`)."""
    return _SELECT_FENCE, (builtins.list(plan.partitions),)


def _check_fence_rows(plan: FencePlan, rows: Iterable[Any]) -> None:
    """``LeaseLost`` for the first partition of ``plan`` whose lease its member does not hold,
    unexpired, at its epoch, by the rows of :func:`_fence_statement`."""
    held = {row[0]: row[1:] for row in rows}
    member = plan.member
    for partition, (epoch, _) in plan.partitions.items():
        holder, held_epoch, live = held.get(partition, (None, 0, False))
        if holder != member or held_epoch != epoch or not live:
            raise plan.lost(partition)


def _check_fence(db: psycopg.Connection[Any], plan: FencePlan) -> None:
    """``LeaseLost`` for the first partition of ``plan`` whose lease its member does not hold,
    unexpired, at its epoch; the leases stay locked until the transaction ends."""
    _check_fence_rows(plan, db.execute(*_fence_statement(plan)))


class _Round:
    """The outcome of statements run in one round trip (:func:`run_round`), read in order as
    if each had just been run on its own."""

    __slots__ = ("_cursors", "_error", "_next")

    def __init__(self, db: psycopg.Connection[Any], statements: Sequence[Statement]) -> None:
        self._cursors, self._error = run_round(db, statements)
        self._next = 0

    def next(self) -> psycopg.Cursor[Any]:
        """The cursor of the next statement; the error it raised, if it failed."""
        index = self._next
        self._next += 1
        if index < len(self._cursors):
            return self._cursors[index]
        assert self._error is not None and index == len(self._cursors)
        raise self._error


class _EventLog(_Connection):
    """Writes in one transaction on the write connection; reads on a read connection (those
    of several statements in one read-only snapshot)."""

    def write(
        self, creates: Sequence[NewSaga], appends: Sequence[Append], *,
        fence: Fence | None = None,
    ) -> builtins.list[tuple[bool, SagaHeader]]:
        """One transaction (see the module docstring); all of it is checked before anything
        is sent to the server. A fence's leases are read first, each locked (``FOR SHARE``)
        until the write ends: an acquirer waits for it, then finds the lease as the write
        left it.

        Its statements go in two round trips (pipeline mode): ``BEGIN``, the fence, the new
        sagas, their definitions and events, the appends; then the ``COMMIT``. What a
        statement gives is checked in the order they run, as if each had been sent on its
        own; those sent beyond a check that fails (a lost lease, a header moved on) are undone
        with it, unread. The new sagas' events and definitions are sent as if every new saga
        were inserted; if one was not (its id exists), all of it is undone and written again
        knowing which were (:meth:`_write_new`)."""
        plan, new, rows, updates = write_rows(creates, appends, fence, self._partition_count)
        if not new and not updates:
            with self._lock:
                self._connection()  # StoreUnavailable once closed
            return []
        member = None if plan is None else plan.member

        def work(db: psycopg.Connection[Any]) -> builtins.list[tuple[bool, SagaHeader]]:
            # the leases' row locks first, in partition order, then the sagas', the counter's
            # last (by the events' inserts): a writer holding the counter waits for no other,
            # so writers cannot deadlock
            try:
                if new:
                    written = self._write_new(db, plan, new, appends, rows, updates, member,
                                              guess=True)
                    if written is None:  # some of the new sagas exist: again, knowing which
                        db.execute("ROLLBACK")
                        written = self._write_new(db, plan, new, appends, rows, updates,
                                                  member, guess=False)
                    assert written is not None
                    return written
                first: builtins.list[Statement] = [("BEGIN", None)]
                if plan is not None:
                    first.append(_fence_statement(plan))
                sent = _Round(db, first + self._append_statements(updates, rows, [], member))
                sent.next()  # BEGIN
                if plan is not None:
                    _check_fence_rows(plan, sent.next())
                failure = self._appended(db, sent, appends, updates, rows, [], member)
                if failure is not None:
                    raise failure
                return []
            except pg_errors.CharacterNotInRepertoire as err:
                raise psycopg.DataError(NUL) from err  # a NUL in a text of the arrays

        return self._transaction(work, begun=True)

    def _write_new(
        self,
        db: psycopg.Connection[Any],
        plan: FencePlan | None,
        new: builtins.list[Create],
        appends: Sequence[Append],
        rows: builtins.list[EventRow],
        updates: dict[str, builtins.list[Any]],
        member: str | None,
        *,
        guess: bool,
    ) -> builtins.list[tuple[bool, SagaHeader]] | None:
        """A write with new sagas, from its ``BEGIN``: its results. ``guess``: in one round
        trip, as if every new saga were inserted; ``None`` if one was not (the caller rolls
        back and calls again without ``guess``). Else in two: ``BEGIN``, the fence, the new
        sagas; then what the sagas inserted need (their definitions and events) and the
        appends."""
        statements: builtins.list[Statement] = [("BEGIN", None)]
        if plan is not None:
            statements.append(_fence_statement(plan))
        statements.append(self._sagas_statement(new))
        ids = {create[0].saga_id for create in new}
        if guess:
            results, created, definitions = self._inserted(db, ids, new)
            statements += self._then(definitions, created, updates, rows, member)
        sent = _Round(db, statements)
        sent.next()  # BEGIN
        if plan is not None:
            _check_fence_rows(plan, sent.next())
        inserted = {saga_id for (saga_id,) in sent.next()}
        if guess and inserted != ids:
            return None
        if not guess:
            results, created, definitions = self._inserted(db, inserted, new)
            then = self._then(definitions, created, updates, rows, member)
            if not then:
                return results
            sent = _Round(db, then)
        for _ in definitions:
            sent.next()
        if updates:
            failure = self._appended(db, sent, appends, updates, rows, created, member)
            if failure is not None:
                raise failure
        elif created:
            self._new_events_inserted(sent, created)
        return results

    def _then(
        self, definitions: dict[str, str], created: builtins.list[EventRow],
        updates: dict[str, builtins.list[Any]], rows: builtins.list[EventRow],
        member: str | None,
    ) -> builtins.list[Statement]:
        """What follows the insert of new sagas: the definitions of those inserted, then the
        appends (:meth:`_append_statements`) or else the events of those inserted
        (``created``)."""
        then: builtins.list[Statement] = [(_INSERT_DEFINITION, item)
                                          for item in definitions.items()]
        if updates:
            then += self._append_statements(updates, rows, created, member)
        elif created:
            then.append(_events_statement(created, member))
        return then

    def create(self, saga: NewSaga, *, fence: Fence | None = None) -> tuple[bool, SagaHeader]:
        if fence is None:
            return self.write((saga,), ())[0]
        return self.write((saga,), (), fence=fence)[0]

    def append(self, batch: Sequence[Append], *, fence: Fence | None = None) -> None:
        if fence is None:
            self.write((), batch)
        else:
            self.write((), batch, fence=fence)

    @staticmethod
    def _sagas_statement(creates: builtins.list[Create]) -> Statement:
        """Insert the sagas of ``creates`` whose ids are free (the first create of each id),
        returning their ids."""
        first: dict[str, Create] = {}
        for create in creates:
            first.setdefault(create[0].saga_id, create)
        # in id order, so that two writers creating the same ids wait for each other in one order
        ordered = [first[saga_id][1] for saga_id in sorted(first)]
        return _INSERT_SAGAS, [[params[i] for params in ordered] for i in range(11)]

    def _inserted(
        self, db: psycopg.Connection[Any], inserted: builtins.set[str],
        creates: builtins.list[Create],
    ) -> tuple[builtins.list[tuple[bool, SagaHeader]], builtins.list[EventRow], dict[str, str]]:
        """What the insert of :meth:`_sagas_statement` did, the sagas of ids ``inserted``
        inserted (the others read, in the open transaction): one result per create, in
        order; the rows of the events of the sagas inserted, in order, to insert; the
        definitions of the sagas inserted, to insert (by sha256)."""
        first: dict[str, Create] = {}
        for create in creates:
            first.setdefault(create[0].saga_id, create)
        existing = [saga_id for saga_id in first if saga_id not in inserted]
        found = {}
        if existing:
            rows = db.execute(_SELECT_HEADERS_IN, (existing,)).fetchall()
            found = {row[0]: row for row in rows}
        definitions: dict[str, str] = {}
        for saga_id in first:
            if saga_id in inserted:
                saga = first[saga_id][0]
                definitions.setdefault(saga.definition, saga.definition_text)
        events = [row for saga_id in first if saga_id in inserted for row in first[saga_id][2]]
        results: builtins.list[tuple[bool, SagaHeader]] = []
        seen: builtins.set[str] = set()
        for saga, _, _ in creates:
            saga_id = saga.saga_id
            if saga_id in inserted and saga_id not in seen:
                created, params, _ = first[saga_id]  # its header has the create's own input
                results.append((True, SagaHeader(*params[:4], created.input, *params[5:])))
            elif saga_id in inserted:  # a later create of an id this call created: a copy
                results.append((False, _header(first[saga_id][1])))
            elif saga_id in found:
                results.append((False, _header(found[saga_id])))
            else:  # pragma: no cover - a row that conflicted and was then deleted
                raise StoreUnavailable(f"saga store {self.url}: saga {saga_id!r} vanished")
            seen.add(saga_id)
        return results, events, definitions

    def _new_events_inserted(self, sent: _Round, rows: builtins.list[EventRow]) -> None:
        """Check the insert of the events of the sagas just created (``rows``), the next
        statement of ``sent``: ``StoreUnavailable`` if they exist (events without a header:
        the store is inconsistent)."""
        try:
            inserted = sent.next().rowcount
        except pg_errors.UniqueViolation as err:
            detail = (err.diag.message_detail or "").strip()
            raise StoreUnavailable(
                f"saga store {self.url} is inconsistent: a new saga's events exist already, "
                f"without its header ({detail})"
            ) from err
        self._check_inserted(inserted, rows)

    def _check_inserted(self, inserted: int, rows: builtins.list[EventRow]) -> None:
        if inserted != len(rows):  # the counter's row is gone: no positions were given out
            raise StoreUnavailable(f"saga store {self.url} is damaged: its events counter is "
                                   "missing")

    @staticmethod
    def _append_statements(
        updates: dict[str, builtins.list[Any]], rows: builtins.list[EventRow],
        created: builtins.list[EventRow], member: str | None,
    ) -> builtins.list[Statement]:
        """The statements of the appends (see :meth:`_appended`): a savepoint if the call
        created sagas (the rows of their events: ``created``), the headers' update, the
        created sagas' events, the appends' events."""
        # in saga id order, so that two writers lock the rows they share in one order
        ordered = sorted(updates.values(), key=lambda u: u[4])
        statements: builtins.list[Statement] = []
        if created:
            statements.append(("SAVEPOINT appends", None))
        statements.append((_UPDATE_SAGAS, [[update[i] for update in ordered] for i in range(6)]))
        if created:
            statements.append(_events_statement(created, member))
        statements.append(_events_statement(rows, member))
        return statements

    def _appended(
        self,
        db: psycopg.Connection[Any],
        sent: _Round,
        appends: Sequence[Append],
        updates: dict[str, builtins.list[Any]],
        rows: builtins.list[EventRow],
        created: builtins.list[EventRow],
        member: str | None,
    ) -> Exception | None:
        """Check the appends' statements (:meth:`_append_statements`, the next of ``sent``);
        ``None`` if they all fit, else the error to raise, found once their writes are undone.
        If the call created sagas, the appends are undone back to the savepoint, so that the
        error is found in what they saw (the store plus this call's creates); else the whole
        transaction is rolled back and the error found in the store as it is now. (The
        savepoint is not released: the COMMIT ends it.)"""
        if created:
            sent.next()  # SAVEPOINT
        refused: psycopg.Error | None = None
        try:
            updated = sent.next().rowcount
            if updated == len(updates):
                if created:
                    self._new_events_inserted(sent, created)
                self._check_inserted(sent.next().rowcount, rows)
                return None
        except (pg_errors.IntegrityError, pg_errors.NotNullViolation) as err:
            refused = err
        db.execute("ROLLBACK TO SAVEPOINT appends" if created else "ROLLBACK")
        return self._append_failure(db, appends, refused)

    def _append_failure(
        self, db: psycopg.Connection[Any], batch: Sequence[Append], refused: psycopg.Error | None
    ) -> Exception:
        """Why the appends of ``batch`` failed, in the store as it is now (or as the open
        transaction, rolled back to before the appends, sees it): see
        :func:`~sagas.stores._rows.append_failure`."""
        wanted = _ids([append.saga_id for append in batch])
        last_seqs: dict[str, int] = dict(db.execute(_SELECT_LAST_SEQS, (wanted,)).fetchall())

        def taken(saga_id: str, first: int, last: int) -> bool:
            return db.execute(_SELECT_TAKEN, (saga_id, first, last)).fetchone() is not None

        return append_failure(self.url, batch, last_seqs.get, taken,
                              None if refused is None else self._reason(refused))

    def load(self, saga_id: str) -> SagaRecord:
        """Read in one snapshot, so that the header, text and events agree."""

        def read(db: psycopg.Connection[Any]) -> tuple[Any, Any, builtins.list[Any]]:
            row = db.execute(_SELECT_HEADER, (saga_id,)).fetchone()
            if row is None:
                raise UnknownSaga(saga_id)
            text = db.execute(_SELECT_DEFINITION, (row[3],)).fetchone()
            return row, text, db.execute(_SELECT_EVENTS, (saga_id,)).fetchall()

        row, text, events = self._read(read)
        return record(self.url, row, None if text is None else text[0], events)

    def load_many(self, saga_ids: Sequence[str]) -> builtins.list[SagaRecord]:
        """Read in one snapshot: a few statements per 1,000 ids (the headers, then all their
        events at once), then each definition once; not one per saga."""
        wanted = _ids(saga_ids)
        logs: dict[str, builtins.list[StoredEvent]] = {}

        def read(db: psycopg.Connection[Any]) -> tuple[builtins.list[Any], dict[str, str]]:
            headers: builtins.list[Any] = []
            for start in range(0, len(wanted), _IDS_PER_READ):
                chunk = wanted[start:start + _IDS_PER_READ]
                headers += db.execute(_SELECT_HEADERS_IN, (chunk,)).fetchall()
                rows = db.execute(_SELECT_EVENTS_IN, (chunk,)).fetchall()
                # decoded chunk by chunk, so that at most one chunk's rows are held at once
                add_events(logs, rows)
            shas = builtins.list({row[3] for row in headers})
            texts = dict(db.execute(_SELECT_DEFINITIONS_IN, (shas,)).fetchall()) if shas else {}
            return headers, texts

        if not wanted:
            self._check_readable()
            return []
        headers, texts = self._read(read)
        return records(self.url, wanted, headers, texts, logs)

    def header(self, saga_id: str) -> SagaHeader:
        rows = self._fetch(_SELECT_HEADER, (saga_id,))
        if not rows:
            raise UnknownSaga(saga_id)
        return _header(rows[0])

    def list(
        self, *, status: str | None = None, flow: str | None = None, limit: int | None = None
    ) -> builtins.list[SagaHeader]:
        if limit is not None:
            check_limit(limit)
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if status is not None:
            where.append("status = %s")
            params.append(status)
        if flow is not None:
            where.append("flow = %s")
            params.append(flow)
        query = f"SELECT {HEADER_COLUMNS} FROM sagas"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY started_at DESC, saga_id DESC"
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        return [_header(row) for row in self._fetch(query, params)]

    def in_flight(self) -> builtins.list[str]:
        return [saga_id for (saga_id,) in self._fetch(_SELECT_IN_FLIGHT, ())]

    def definition(self, sha256: str) -> str:
        rows = self._fetch(_SELECT_DEFINITION, (sha256,))
        if not rows:
            raise KeyError(sha256)
        return rows[0][0]
