"""The SQLite store's event log (:class:`~sagas.stores.EventLog`): tables ``sagas``,
``events`` and ``definitions``."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from typing import Any

from sagas.errors import StoreUnavailable, UnknownSaga
from sagas.stores._checks import check_limit
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

from ._connection import _chunks, _Connection, _placeholders, _rollback
from ._fence import _check_fence

_INSERT_SAGA = (
    f"INSERT INTO sagas ({HEADER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (saga_id) DO NOTHING"
)
_INSERT_DEFINITION = "INSERT OR IGNORE INTO definitions (sha256, text) VALUES (?, ?)"
_INSERT_EVENT = (
    "INSERT INTO events (saga_id, seq, type, step, attempt, at, event_id, causation_id, data, "
    "member, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_SAGA = (
    "UPDATE sagas SET last_seq = ?, status = ?, reason = ?, updated_at = ? "
    "WHERE saga_id = ? AND last_seq = ?"
)
_SELECT_HEADER = f"SELECT {HEADER_COLUMNS} FROM sagas WHERE saga_id = ?"
_SELECT_EVENTS = f"SELECT {EVENT_COLUMNS} FROM events WHERE saga_id = ? ORDER BY seq"
_SELECT_DEFINITION = "SELECT text FROM definitions WHERE sha256 = ?"
# load_many, per chunk of ids (the {} is the chunk's placeholders)
_SELECT_HEADERS_IN = f"SELECT {HEADER_COLUMNS} FROM sagas WHERE saga_id IN ({{}})"
_SELECT_EVENTS_IN = (
    f"SELECT saga_id, {EVENT_COLUMNS} FROM events WHERE saga_id IN ({{}}) ORDER BY saga_id, seq"
)
_SELECT_DEFINITIONS_IN = "SELECT sha256, text FROM definitions WHERE sha256 IN ({})"
_SELECT_IN_FLIGHT = (
    "SELECT saga_id FROM sagas WHERE status NOT IN ({}) ORDER BY started_at, saga_id".format(
        ", ".join("?" * len(TERMINAL))
    )
)
_TERMINAL = tuple(sorted(TERMINAL))
"""The terminal statuses, as the parameters of a statement."""


class _EventLog(_Connection):
    """Writes in one ``BEGIN IMMEDIATE`` transaction on the write connection; reads on the
    calling thread's read connection (those of several statements in one read transaction)."""

    def write(
        self, creates: Sequence[NewSaga], appends: Sequence[Append], *,
        fence: Fence | None = None,
    ) -> builtins.list[tuple[bool, SagaHeader]]:
        """One ``BEGIN IMMEDIATE`` transaction. The insert of the saga row decides, under SQLite's
        write lock, so of concurrent creates of one id (from any connection or process) exactly
        one wins; the ``UNIQUE(saga_id, seq)`` constraint backs the check of the seqs up. A
        fence's leases are read first, under that lock: no acquirer can change them before
        the write commits."""
        plan, new, rows, updates = write_rows(creates, appends, fence, self._partition_count)
        with self._lock:
            db = self._connection()
            if not new and not updates:
                return []
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    if plan is not None:
                        _check_fence(db, plan)
                    results = self._insert_sagas(db, new)
                    if updates:
                        failure = self._extend_sagas(db, appends, rows, updates, bool(new))
                        if failure is not None:
                            raise failure
                    db.execute("COMMIT")
                finally:
                    _rollback(db)
            except sqlite3.Error as err:
                raise self._translate(err) from err
        return results

    def create(self, saga: NewSaga, *, fence: Fence | None = None) -> tuple[bool, SagaHeader]:
        if fence is None:
            return self.write((saga,), ())[0]
        return self.write((saga,), (), fence=fence)[0]

    def append(self, batch: Sequence[Append], *, fence: Fence | None = None) -> None:
        if fence is None:
            self.write((), batch)
        else:
            self.write((), batch, fence=fence)

    def _insert_sagas(
        self, db: sqlite3.Connection, creates: builtins.list[Create]
    ) -> builtins.list[tuple[bool, SagaHeader]]:
        """Insert the sagas whose ids are free, in the open transaction; one result each."""
        results: builtins.list[tuple[bool, SagaHeader]] = []
        defined: builtins.set[str] = set()
        for saga, params, rows in creates:
            try:
                if db.execute(_INSERT_SAGA, params).rowcount == 0:
                    existing = db.execute(_SELECT_HEADER, (saga.saga_id,)).fetchone()
                    results.append((False, _header(existing)))
                    continue
                if saga.definition not in defined:
                    db.execute(_INSERT_DEFINITION, (saga.definition, saga.definition_text))
                    defined.add(saga.definition)
                db.executemany(_INSERT_EVENT, rows)
            except sqlite3.IntegrityError as err:
                if "UNIQUE" in str(err):
                    raise StoreUnavailable(
                        f"saga store {self.path} is inconsistent: saga {saga.saga_id!r} has "
                        "events but no header"
                    ) from err
                raise ValueError(f"saga {saga.saga_id!r} refused by the store: {err}") from err
            results.append((True, SagaHeader(*params[:4], saga.input, *params[5:])))
        return results

    def _extend_sagas(
        self,
        db: sqlite3.Connection,
        appends: Sequence[Append],
        rows: builtins.list[EventRow],
        updates: dict[str, builtins.list[Any]],
        created: bool,
    ) -> Exception | None:
        """Apply the appends in the open transaction; ``None`` if they all fit, else the
        error to raise, found once their writes are undone. If the call ``created`` sagas,
        the appends are undone back to a savepoint, so that the error is found in what they
        saw (the file plus this call's creates); else the whole transaction is rolled back
        (one statement less per append, the common case) and the error found in the file."""
        if created:
            db.execute("SAVEPOINT appends")
        refused: sqlite3.IntegrityError | None = None
        try:
            if db.executemany(_UPDATE_SAGA, updates.values()).rowcount == len(updates):
                db.executemany(_INSERT_EVENT, rows)
                if created:
                    db.execute("RELEASE appends")
                return None
        except sqlite3.IntegrityError as err:
            refused = err
        db.execute("ROLLBACK TO appends" if created else "ROLLBACK")
        return self._append_failure(db, appends, refused)

    def _append_failure(
        self, db: sqlite3.Connection, batch: Sequence[Append], refused: sqlite3.Error | None
    ) -> Exception:
        """Why the appends of ``batch`` failed, in the file as it is now (or as the open
        transaction, rolled back to before the appends, sees it): see
        :func:`~sagas.stores._rows.append_failure`."""

        def last_seq_of(saga_id: str) -> int | None:
            row = db.execute("SELECT last_seq FROM sagas WHERE saga_id = ?", (saga_id,))
            found = row.fetchone()
            return None if found is None else found[0]

        def taken(saga_id: str, first: int, last: int) -> bool:
            return db.execute(
                "SELECT 1 FROM events WHERE saga_id = ? AND seq BETWEEN ? AND ? LIMIT 1",
                (saga_id, first, last),
            ).fetchone() is not None

        return append_failure(self.path, batch, last_seq_of, taken,
                              None if refused is None else str(refused))

    def load(self, saga_id: str) -> SagaRecord:
        """Read in one read transaction, so that the header, text and events agree."""

        def read(db: sqlite3.Connection) -> tuple[Any, Any, builtins.list[Any]]:
            row = db.execute(_SELECT_HEADER, (saga_id,)).fetchone()
            if row is None:
                raise UnknownSaga(saga_id)
            text = db.execute(_SELECT_DEFINITION, (row[3],)).fetchone()
            return row, text, db.execute(_SELECT_EVENTS, (saga_id,)).fetchall()

        row, text, events = self._read(read)
        return record(self.path, row, None if text is None else text[0], events)

    def load_many(self, saga_ids: Sequence[str]) -> builtins.list[SagaRecord]:
        """Read in one read transaction: a few queries per 500 ids (the headers, then all their
        events at once, then each definition once), not one per saga."""
        wanted = _ids(saga_ids)
        logs: dict[str, builtins.list[StoredEvent]] = {}

        def read(db: sqlite3.Connection) -> tuple[builtins.list[Any], dict[str, str]]:
            headers: builtins.list[Any] = []
            for chunk in _chunks(wanted):
                headers += db.execute(_placeholders(_SELECT_HEADERS_IN, chunk), chunk).fetchall()
                rows = db.execute(_placeholders(_SELECT_EVENTS_IN, chunk), chunk).fetchall()
                # decoded chunk by chunk, so that at most one chunk's rows are held at once
                add_events(logs, rows)
            texts: dict[str, str] = {}
            for chunk in _chunks(builtins.list({row[3] for row in headers})):
                sql = _placeholders(_SELECT_DEFINITIONS_IN, chunk)
                texts.update(db.execute(sql, chunk).fetchall())
            return headers, texts

        headers, texts = self._read(read)
        return records(self.path, wanted, headers, texts, logs)

    def header(self, saga_id: str) -> SagaHeader:
        row = self._fetch(_SELECT_HEADER, (saga_id,))
        if not row:
            raise UnknownSaga(saga_id)
        return _header(row[0])

    def list(
        self, *, status: str | None = None, flow: str | None = None, limit: int | None = None
    ) -> builtins.list[SagaHeader]:
        if limit is not None:
            check_limit(limit)
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if flow is not None:
            where.append("flow = ?")
            params.append(flow)
        sql = f"SELECT {HEADER_COLUMNS} FROM sagas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, saga_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_header(row) for row in self._fetch(sql, params)]

    def in_flight(self) -> builtins.list[str]:
        return [saga_id for (saga_id,) in self._fetch(_SELECT_IN_FLIGHT, _TERMINAL)]

    def definition(self, sha256: str) -> str:
        row = self._fetch(_SELECT_DEFINITION, (sha256,))
        if not row:
            raise KeyError(sha256)
        return row[0][0]
